#!/usr/bin/env bash
# session 4, seed 0: collect + V (the session recipe's first stages, run by hand)
set -euo pipefail
cd /work/main; . .venv/bin/activate
R=runs/doom-s0
/usr/bin/time -f "collect wall %e s user %U s" world-models collect --preset doom --out-dir $R/data --episodes 4000 --seed 0 --workers 2 --no-progress
/usr/bin/time -f "vae wall %e s user %U s" world-models train-vae --preset doom --data-dir $R/data --run-dir $R/vae --batch-size 64 --lr 6e-4 --lr-scaling none --epochs 20 --max-frames 800000 --time-budget-s 1800 --seed 0 --no-progress
echo STAGE1 DONE
