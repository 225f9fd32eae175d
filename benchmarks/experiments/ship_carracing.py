"""Ship a ``reproduce carracing --budget cpu`` run's C (evolved in the real env on [z, h])
with its V and M as a pretrained world model (``world_models/assets/<name>``), its card
written from the run's own records (stages.json, metrics, the evaluations), not typed in.

    python benchmarks/experiments/ship_carracing.py runs/carracing-cpu-s0 --name carracing
"""

from __future__ import annotations

import argparse
from pathlib import Path

from carracing_report import checkpoint, read_json  # this folder: run as a script

from world_models.shipped import ASSETS, export_pretrained
from world_models.training.runs import read_rows


def _score(r: dict | None) -> str:
    return "not run" if r is None else f"{r['mean']:.1f} +- {r['std']:.1f}"


def _stage_rows(stages: dict[str, float]) -> str:
    rows = [f"| {name} | {wall:,.0f} |" for name, wall in stages.items()]
    return "\n".join([*rows, f"| total | {sum(stages.values()):,.0f} |"])


def card(root: Path, seed: int) -> str:
    stages = read_json(root / "stages.json") or {}
    real = read_json(root / "evaluation/results.json")
    rand = read_json(root / "eval-random/results.json")
    z_only = read_json(root / "evaluation-z/results.json")
    c_cfg = read_json(root / "controller/config.json") or {}
    v_meta = read_json(checkpoint(root / "vae") / "meta.json") or {}
    m_meta = read_json(checkpoint(root / "mdrnn") / "meta.json") or {}
    data = read_json(root / "data/manifest.json") or {}
    rows = read_rows(root / "controller/metrics.jsonl")
    evals = [(r["step"], r["eval_mean"]) for r in rows if "eval_mean" in r]
    curve = ", ".join(f"{g}: {m:.0f}" for g, m in evals)
    minutes = sum(stages.values()) / 60
    trials = real["trials"] if real else 100
    return f"""# CarRacing-v3 world model, C evolved in the real env (CPU, seed {seed})

V, M and C from `world-models reproduce carracing --budget cpu --seed {seed} --workers 2`
({minutes:.0f} min on 2 CPU cores, every stage's wall time below). C reads [z, h] (V's
latent and M's hidden state) and was evolved by CMA-ES in the real CarRacing-v3 (envpool's
implementation while evolving); the scores below are Gymnasium's CarRacing-v3, {trials}
random tracks (seeds {real["seeds"][0] if real else "?"}+).

| policy ({trials} Gymnasium CarRacing-v3 tracks) | return |
|---|---|
| this C, on [z, h] (the full World Model) | {_score(real)} |
| C on z alone, same recipe (the paper's V-only row) | {_score(z_only)} |
| random (the Brownian data policy), same seeds | {_score(rand)} |

The paper: full World Model 906 +- 21, V only 632 +- 251 (solved: 900).

## How it was made
- Data: {data.get("episodes", "?"):,} Brownian random-policy tracks, {data.get("frames", 0):,}
  frames at 64x64.
- V: the seed's ConvVAE, z = 32; {v_meta.get("step")} steps (batch 64, Adam).
- M: MDN-RNN, LSTM 256, 5 Gaussians per dimension, no reward or done head;
  {m_meta.get("step")} steps; best held-out NLL {m_meta.get("best", float("nan")):.4f}.
- C: a = tanh(W [z, h] + b) as steer, gas (a + 1) / 2 and brake clipped to [0, 1];
  867 weights. CMA-ES: popsize {c_cfg.get("popsize")} x {c_cfg.get("rollouts")} tracks
  (the same tracks for a generation's candidates), a training episode cut after
  {c_cfg.get("stall_steps")} steps without a new tile; {len(rows)} generations.
- The mean was scored every {c_cfg.get("eval_every")} generations on
  {c_cfg.get("eval_rollouts")} fixed tracks; this C is the mean with the best such
  evaluation. Generation: mean return on those tracks:
  {curve}.

## Stage wall times
| stage | wall s |
|---|---|
{_stage_rows(stages)}

## Use
`world-models evaluate --pretrained carracing`, `watch --pretrained carracing`,
`play --pretrained carracing --in dream`; `world_models.pretrained("carracing")`.
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path)
    p.add_argument("--name", default="carracing")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="default: the package's assets")
    a = p.parse_args()
    root = a.root
    # play --in dream: M has no done head, so a dream ends at max_steps (CarRacing's 1,000)
    settings = {
        "env": "carracing",
        "tau": 1.0,
        "done_mode": "threshold",
        "dream_dropout": False,
        "max_steps": 1000,
        "done_offset": 0.0,
    }
    out = export_pretrained(
        checkpoint(root / "vae"),
        checkpoint(root / "mdrnn"),
        root / "controller/checkpoints/best",
        root / "series",
        a.out or ASSETS / a.name,
        settings,
        card(root, a.seed),
    )
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"shipped {out} ({size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
