#!/usr/bin/env bash
# session 5-6, seed 1: the whole session recipe in one command (resumes on a re-run)
set -euo pipefail
cd /work/main; . .venv/bin/activate
# the run of 2026-12-04 used a fixed snapshot of the code (the tree was edited meanwhile)
if [ -d /tmp/wm-snap ]; then export PYTHONPATH=/tmp/wm-snap; fi
/usr/bin/time -f "reproduce wall %e s user %U s" \
  world-models reproduce doom --budget session --seed 1 --workers 2 \
  --root runs/doom-session-s1 --no-progress
echo RUN DONE
