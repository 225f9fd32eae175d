"""Ship a ``reproduce doom --budget session`` run's dream-evolved C with its V and M as a
pretrained world model (``world_models/assets/<name>``), its card written from the run's
own records (stages.json, selection.json, the evaluations), not typed in.

    python benchmarks/experiments/ship_doom_dream.py runs/doom-session-s1 --name doom-dream
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from world_models.shipped import ASSETS, export_pretrained


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def card(root: Path, seed: int) -> str:
    stages, sel = _read(root / "stages.json"), _read(root / "controller/selection.json")
    real, rand = _read(root / "evaluation/results.json"), _read(root / "eval-random/results.json")
    dream = _read(root / "evaluation-dream/results.json")
    cal = _read(root / "calibration.json")
    c_cfg = _read(root / "controller/config.json")
    v_meta = _read(root / "vae/checkpoints/best/meta.json")
    m_meta = _read(root / "mdrnn/checkpoints/best/meta.json")
    data = _read(root / "data/manifest.json")
    chosen = next(c for c in sel["candidates"] if c["candidate"] == sel["chosen"])
    rows = "\n".join(
        f"| {c['candidate']} | {c['mean']:.1f} +- {c['std']:.1f} |" for c in sel["candidates"]
    )
    minutes = sum(stages.values()) / 60
    d = c_cfg["dream"]
    seeds = f"seeds {real['seeds'][0]}..{real['seeds'][-1]}"
    score = {k: f"{r['mean']:.1f} +- {r['std']:.1f}" for k, r in (("c", real), ("r", rand))}
    return f"""# Doom TakeCover world model, C evolved only in the dream (CPU, seed {seed})

V, M and C from `world-models reproduce doom --budget session --seed {seed} --workers 2`
({minutes:.0f} min on 2 CPU cores, every stage's wall time below). C never saw the real
game while it evolved: CMA-ES scored it only inside M's dream. Among the means kept during
evolution, the one played best on {sel["games"]} real validation games (seeds
{sel["seeds"][0]}..{sel["seeds"][-1]}, apart from the test seeds) was chosen; the scores
below are on {real["trials"]} other seeds.

| policy ({real["trials"]} real games, {seeds}) | steps survived |
|---|---|
| this C (dream-evolved, chosen on real validation games) | {score["c"]} |
| random data policy, same command and seeds | {score["r"]} |
| this C in its own dream ({dream["trials"]} dreams) | {dream["mean"]:.1f} +- {dream["std"]:.1f} |

Ratio to random: {real["mean"] / rand["mean"]:.2f}x. The paper: 1,092 +- 556 (solved: 750).

## How it was made
- Data: {data["episodes"]:,} random-policy episodes (a uniform action held 1-10
  frames), {data["frames"]:,} frames; VizdoomTakeCover-v1 at 160x120 with damage flashes, 64x64.
- V: the seed's ConvVAE, z = 64; {v_meta.get("step")} steps (batch 64, Adam 6e-4); best
  held-out loss {v_meta.get("trainer", {}).get("best_holdout", float("nan")):.2f}.
- M: MDN-RNN, LSTM 512, 5 Gaussians with one mixture choice per step for all dimensions
  (shared mixture), done head (positives x10), dropout 0.1; {m_meta.get("step")} steps;
  best held-out NLL {m_meta.get("best", float("nan")):.4f}.
- C: [z, c, h] -> 1 output, no bias (the original doomrnn controller); CMA-ES popsize
  {c_cfg["popsize"]} x {c_cfg["rollouts"]} dreams, dreams capped at {d["dream_max_steps"]}
  steps, tau {d["tau"]}, deaths by {d["done_mode"]}, dropout masks
  {"on" if d["dream_dropout"] else "off"}, done-logit offset {cal["done_offset"]:+.3f}
  (the random policy survives {cal["dream_length"]:.0f} dream steps, {cal["data_length"]:.0f}
  in the data).
- Chosen: `{sel["chosen"]}`, {chosen["mean"]:.1f} +- {chosen["std"]:.1f} on the validation
  games. Every candidate:

| candidate | validation games |
|---|---|
{rows}

## Stage wall times (s)
{json.dumps(stages, indent=1)}

## Use
`world-models evaluate --pretrained doom-dream`, `watch --pretrained doom-dream`,
`play --pretrained doom-dream --in dream`; `world_models.pretrained("doom-dream")`.
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path)
    p.add_argument("--name", default="doom-dream")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="default: the package's assets")
    a = p.parse_args()
    root = a.root
    c_cfg = _read(root / "controller/config.json")
    settings = {
        "env": "doom",
        **{k: c_cfg["dream"][k] for k in ("tau", "done_mode", "dream_dropout")},
        "max_steps": 2100,
        "done_offset": _read(root / "calibration.json")["done_offset"],
    }
    out = export_pretrained(
        root / "vae/checkpoints/best",
        root / "mdrnn/checkpoints/best",
        root / "controller/checkpoints/selected",
        root / "series",
        a.out or ASSETS / a.name,
        settings,
        card(root, a.seed),
    )
    print(f"shipped {out}")


if __name__ == "__main__":
    main()
