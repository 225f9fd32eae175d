#!/usr/bin/env bash
# session 5-6, seed 1: the whole session recipe in one command (resumes on a re-run)
set -euo pipefail
cd /work/main; . .venv/bin/activate
export PYTHONPATH=/tmp/wm-snap  # a fixed snapshot of the code: the tree is edited meanwhile
/usr/bin/time -f "reproduce wall %e s user %U s" \
  world-models reproduce doom --budget session --seed 1 --workers 2 \
  --root runs/doom-session-s1 --no-progress
echo RUN DONE
