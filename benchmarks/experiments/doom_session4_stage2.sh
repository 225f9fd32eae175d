#!/usr/bin/env bash
# session 4, seed 0: encode, M (shared mixture), calibrate + fidelity, C in the dream, select,
# evaluate: the session recipe's later stages, run by hand (each resumes on a re-run)
set -euo pipefail
cd /work/main; . .venv/bin/activate
export PYTHONPATH=/tmp/wm-snap  # a fixed snapshot of the code: others edit the tree meanwhile
R=runs/doom-s0
V=$R/vae/checkpoints/best; M=$R/mdrnn/checkpoints/best
T() { local name=$1; shift; /usr/bin/time -f "$name wall %e s user %U s" "$@"; }
while ! grep -q "STAGE1 DONE" $R/stage1.log; do sleep 20; done
# V shared the cores with tests for much of its 30 minutes: 10 more (it resumes)
T vae-topup world-models train-vae --preset doom --data-dir $R/data --run-dir $R/vae --batch-size 64 --lr 6e-4 --lr-scaling none --epochs 20 --max-frames 800000 --time-budget-s 600 --seed 0 --no-progress
T encode world-models encode --preset doom --data-dir $R/data --vae $V --out-dir $R/series --no-progress
T mdrnn world-models train-mdrnn --preset doom --series-dir $R/series --run-dir $R/mdrnn --batch-size 16 --seq-len 200 --epochs 200 --dropout 0.1 --shared-mixture --time-budget-s 2100 --seed 0 --no-progress
T fidelity world-models fidelity --vae $V --mdrnn $M --series-dir $R/series --data-dir $R/data --done-mode sample --tau 1.15 --dream-dropout --calibrate --trials 100 --workers 2 --out-dir $R/fidelity --no-progress
OFF=$(python -c "import json;print(json.load(open('$R/fidelity/fidelity.json'))['done_offset'])")
echo "done offset $OFF"
T controller world-models train-controller --preset doom --in dream --vae $V --mdrnn $M --series-dir $R/series --run-dir $R/controller --popsize 64 --rollouts 8 --generations 1000 --eval-every 10 --eval-rollouts 128 --dream-max-steps 1000 --tau 1.15 --done-mode sample --done-offset $OFF --dream-dropout --time-budget-s 1800 --seed 0 --no-progress
T select world-models select --run-dir $R/controller --vae $V --mdrnn $M --env doom --games 10 --candidates 8 --workers 2 --no-progress
for c in selected best; do
  T eval-$c world-models evaluate --env doom --trials 100 --seed 1000000 --controller $R/controller/checkpoints/$c --vae $V --mdrnn $M --workers 2 --video none --out-dir $R/eval-$c --no-progress
done
T eval-random world-models evaluate --env doom --policy random --controller None --trials 100 --seed 1000000 --vae $V --mdrnn $M --workers 2 --video none --out-dir $R/eval-random --no-progress
echo STAGE2 DONE
