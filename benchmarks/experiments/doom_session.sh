#!/usr/bin/env bash
# The Doom session recipe for one seed in one command (resumes on a re-run):
#   SEED=2 bash benchmarks/experiments/doom_session.sh
# Run it alone on the machine: its stages stop on wall-time budgets. A helper started from
# another terminal session lands in another scheduler autogroup, where `nice` does not
# reach: `echo 19 > /proc/<pid>/autogroup` does (or sched_autogroup_enabled = 0).
set -euo pipefail
cd "$(dirname "$0")/../.."; . .venv/bin/activate
seed=${SEED:-2}
root=${ROOT:-runs/doom-session-s$seed}
/usr/bin/time -f "reproduce wall %e s user %U s" \
  world-models reproduce doom --budget session --seed "$seed" --workers 2 \
  --root "$root" --no-progress
echo RUN DONE
