#!/usr/bin/env bash
# session 4, seed 0, after M: calibrate + fidelity, C in the dream, select, evaluate
# (budgets cut from stage2.sh: the session lost 30 minutes to an outage)
set -euo pipefail
cd /work/main; . .venv/bin/activate
export PYTHONPATH=/tmp/wm-snap
R=runs/doom-s0
V=$R/vae/checkpoints/best; M=$R/mdrnn/checkpoints/best
T() { local name=$1; shift; /usr/bin/time -f "$name wall %e s user %U s" "$@"; }
while pgrep -f "world-models train-mdrnn" >/dev/null; do sleep 10; done
T fidelity world-models fidelity --vae $V --mdrnn $M --series-dir $R/series --data-dir $R/data --done-mode sample --tau 1.15 --dream-dropout --calibrate --trials 100 --workers 2 --out-dir $R/fidelity --no-progress
OFF=$(python -c "import json;print(json.load(open('$R/fidelity/fidelity.json'))['done_offset'])")
echo "done offset $OFF"
T controller world-models train-controller --preset doom --in dream --vae $V --mdrnn $M --series-dir $R/series --run-dir $R/controller --popsize 64 --rollouts 8 --generations 1000 --eval-every 5 --eval-rollouts 128 --dream-max-steps 1000 --tau 1.15 --done-mode sample --done-offset $OFF --dream-dropout --time-budget-s 1200 --seed 0 --no-progress
T select world-models select --run-dir $R/controller --vae $V --mdrnn $M --env doom --games 8 --candidates 8 --workers 2 --no-progress
T eval-random world-models evaluate --env doom --policy random --controller None --trials 100 --seed 1000000 --vae $V --mdrnn $M --workers 2 --video none --out-dir $R/eval-random --no-progress
T eval-selected world-models evaluate --env doom --trials 100 --seed 1000000 --controller $R/controller/checkpoints/selected --vae $V --mdrnn $M --workers 2 --video none --out-dir $R/eval-selected --no-progress
echo STAGE3 DONE
