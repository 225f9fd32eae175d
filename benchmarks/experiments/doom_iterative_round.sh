#!/bin/bash
# Session 3: one round of the paper's iterative training: collect with the dream-evolved C of session 2 (controller-mix-t22) (explore 0.1),
# M retrained on all data, C re-evolved. Each step skips if its output exists (resumable).
set -euo pipefail
E=${1:?"usage: doom_iterative_round.sh DIR (holding vae/, data/, series/, series-mix/, mdrnn-mix/, controller-mix-t22/ of docs/results-doom.md)"}
V=$E/vae/checkpoints/best
stamp() { echo "$(date +%s) $*"; }
round() {  # round NAME SERIES_FOR_M
  local name=$1 series=$2
  local M=$E/mdrnn-$name C=$E/controller-$name
  stamp "start $name"
  [ -f $M/DONE ] || { world-models train-mdrnn --preset doom --series-dir $series --run-dir $M --batch-size 16 --seq-len 200 --epochs 200 --lr-decay 1.0 --dropout 0.1 --time-budget-s 720 --no-progress --no-tensorboard && touch $M/DONE; }
  stamp "mdrnn $name"
  [ -f $E/fidelity-cal-$name/fidelity.json ] || world-models fidelity --vae $V --mdrnn $M/checkpoints/best --series-dir $E/series --data-dir $E/data --done-mode sample --tau 2.2 --dream-dropout --calibrate --trials 100 --no-real --out-dir $E/fidelity-cal-$name --no-progress
  off=$(python -c "import json;print(json.load(open('$E/fidelity-cal-$name/fidelity.json'))['done_offset'])")
  stamp "calibrated $name offset $off"
  [ -f $C/DONE ] || { world-models train-controller --preset doom --in dream --vae $V --mdrnn $M/checkpoints/best --series-dir $E/series --run-dir $C --popsize 32 --rollouts 8 --eval-every 10 --eval-rollouts 128 --generations 1000 --tau 2.2 --done-mode sample --done-offset $off --dream-dropout --time-budget-s 900 --no-progress --no-tensorboard && touch $C/DONE; }
  stamp "controller $name"
  [ -f $C/eval-real/results.json ] || world-models evaluate --vae $V --mdrnn $M/checkpoints/best --controller $C/checkpoints/best --env doom --trials 100 --no-progress --out-dir $C/eval-real --video none
  python -c "import json;r=json.load(open('$C/eval-real/results.json'));print('REAL $name', r['mean'], r['std'])"
  stamp "evaluated $name"
}
# iterative round 1: data where C goes
D=$E/data-iter1
world-models collect --env doom --out-dir $D --episodes 600 --max-steps 2100 --seed 2 --controller $E/controller-mix-t22/checkpoints/best --vae $V --mdrnn $E/mdrnn-mix/checkpoints/best --explore 0.1 --no-progress
stamp "collected iter1"
[ -f $E/series-iter1/series.json ] || world-models encode --preset doom --data-dir $D --vae $V --out-dir $E/series-iter1 --no-progress
mkdir -p $E/series-mix3
for f in $E/series-mix/*.npz; do ln -sf $(readlink -f $f) $E/series-mix3/$(basename $f); done
for f in $E/series-iter1/ep_*.npz; do b=$(basename $f .npz); ln -sf $f $E/series-mix3/c${b#ep_}.npz; done
cp $E/series/series.json $E/series-mix3/series.json
stamp "encoded iter1"
round iter1 $E/series-mix3
