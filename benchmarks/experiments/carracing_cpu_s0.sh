#!/usr/bin/env bash
# CarRacing on 2 cores, seed 0: the full World Model (C on [z, h], evolved in the real env),
# then the paper's V-only row (C on z) from the same data, V and M. Resumes on a re-run.
# PARTS="full" or PARTS="z" runs one of the two (default: both, one after the other).
set -euo pipefail
cd "$(dirname "$0")/../.."; . .venv/bin/activate
root=${ROOT:-runs/carracing-cpu-s0}
parts=${PARTS:-full z}
mkdir -p "$root"
if [[ " $parts " == *" full "* ]]; then
  /usr/bin/time -f "reproduce wall %e s user %U s" \
    world-models reproduce carracing --budget cpu --seed 0 --workers 2 --root "$root" --no-progress
  echo FULL DONE
fi
if [[ " $parts " == *" z "* ]]; then
  /usr/bin/time -f "reproduce z-only wall %e s user %U s" \
    world-models reproduce carracing --budget cpu --seed 0 --workers 2 --root "$root" --z-only \
    --no-progress
  echo Z DONE
fi
echo RUN DONE
