"""The figures and tables of docs/results-carracing.md from a ``reproduce carracing`` run,
read from the run's own records (stages.json, metrics.jsonl, results.json), not typed in.

Writes into ``--out``: V's reconstructions of held-out frames, M's open-loop dream of one
held-out episode beside the real one (every 10th step), and C's learning curves (best /
mean / worst candidate per generation and the mean's periodic evaluation, [z, h] and z
alone when both exist). Prints the markdown tables.

    python benchmarks/experiments/carracing_report.py runs/carracing-cpu-s0 \
        --out docs/images/carracing
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from world_models.core.media import grid, plot_curves, save_png, save_reconstruction_grid
from world_models.data.store import list_episodes, read_episode, split_episodes
from world_models.evaluation.open_loop import open_loop
from world_models.models.world_model import load_world_model
from world_models.training.runs import read_rows


def read_json(path: Path) -> dict | None:
    """A run's JSON record, or None where the stage has not written it."""
    return json.loads(path.read_text()) if path.is_file() else None


def checkpoint(run: Path) -> Path:
    """A training run's best checkpoint, or its last where no best was kept."""
    best = run / "checkpoints" / "best"
    return best if best.exists() else run / "checkpoints" / "last"


def held_out_episode(root: Path, holdout_fraction: float) -> Path:
    """The first episode V and M held out (neither trained on it)."""
    eps = list_episodes(root / "data")
    return (split_episodes(eps, "holdout", holdout_fraction) or eps)[0]


@torch.no_grad()
def pictures(root: Path, out: Path, steps: int, every: int, tau: float, seed: int) -> dict:
    v_cfg = read_json(root / "vae" / "config.json") or {}
    episode_path = held_out_episode(root, float(v_cfg.get("holdout_fraction", 0.05)))
    ep = read_episode(episode_path)
    wm = load_world_model(checkpoint(root / "vae"), checkpoint(root / "mdrnn"))
    vae, mdrnn = wm.vae.eval(), wm.mdrnn.eval()
    # 8 frames spread over the episode (after the opening zoom of ~50 frames)
    idx = np.linspace(60, len(ep) - 1, 8).astype(int)
    real = torch.from_numpy(ep.obs[idx]).permute(0, 3, 1, 2).float().div(255)  # (8, 3, 64, 64)
    recon = vae.decode(vae.get_latent_representation(real))
    save_reconstruction_grid(real, recon, out / "reconstructions.png", scale=2)
    # M's open-loop dream from the frame after the zoom, driven by the recorded actions
    start = 60
    n = min(steps, len(ep) - start)
    dream = open_loop(vae, mdrnn, ep.obs[start], ep.action[start : start + n], tau, seed)
    shown = np.arange(0, n, every)
    both = np.concatenate([ep.obs[start + shown], dream[shown]]).transpose(
        0, 3, 1, 2
    )  # (2S, 3, 64, 64)
    save_png(grid(both, nrow=len(shown), scale=2), out / "open_loop_dream.png")
    err = ((dream.astype(np.float32) - ep.obs[start : start + n]) / 255.0) ** 2
    return {
        "episode": episode_path.name,
        "start": start,
        "steps": n,
        "every": every,
        "tau": tau,
        "pixel_mse_at": {int(k): float(err[k].mean()) for k in shown},
    }


def curves(root: Path, out: Path) -> dict[str, dict]:
    summary: dict[str, dict] = {}
    for suffix, name in (("", "z_h"), ("-z", "z_only")):
        rows = read_rows(root / f"controller{suffix}" / "metrics.jsonl")
        if not rows:
            continue
        gen = [r["step"] for r in rows]
        ev = [(r["step"], r["eval_mean"]) for r in rows if "eval_mean" in r]
        series = {
            "best candidate": (gen, [r["fitness_max"] for r in rows]),
            "mean candidate": (gen, [r["fitness_mean"] for r in rows]),
            "worst candidate": (gen, [r["fitness_min"] for r in rows]),
            "the mean (periodic evaluation)": ([g for g, _ in ev], [m for _, m in ev]),
        }
        title = f"CMA-ES in the real CarRacing-v3, C on {'[z, h]' if not suffix else 'z'}"
        plot_curves(
            series, out / f"learning_curve_{name}.png", title, "generation", "return", False
        )
        summary[name] = {
            "generations": len(rows),
            "seconds": round(sum(r.get("seconds", 0.0) for r in rows), 1),
            "episodes": int(sum(r.get("episodes", 0) for r in rows)),
            "evaluations": [(g, round(m, 1)) for g, m in ev],
            "best_candidate_max": round(max(r["fitness_max"] for r in rows), 1),
        }
    return summary


def tables(root: Path) -> str:
    lines = ["| stage | wall s |", "|---|---|"]
    stages = read_json(root / "stages.json") or {}
    lines += [f"| {k} | {v:,.0f} |" for k, v in stages.items()]
    lines += [f"| total | {sum(stages.values()):,.0f} ({sum(stages.values()) / 60:.0f} min) |"]
    lines += ["", "| policy (100 Gymnasium CarRacing-v3 tracks) | return | min | max |"]
    lines += ["|---|---|---|---|"]
    for folder, what in (
        ("evaluation", "C on [z, h] (full World Model)"),
        ("evaluation-z", "C on z (V only)"),
        ("eval-random", "random (Brownian data policy)"),
    ):
        r = read_json(root / folder / "results.json")
        if r is not None:
            lines.append(
                f"| {what} | {r['mean']:.1f} +- {r['std']:.1f} | {r['min']:.1f} | {r['max']:.1f} |"
            )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path)
    p.add_argument("--out", type=Path, default=Path("docs/images/carracing"))
    p.add_argument("--steps", type=int, default=100, help="open-loop dream length")
    p.add_argument("--every", type=int, default=10, help="show every n-th dream frame")
    p.add_argument("--tau", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    report = {
        "open_loop": pictures(a.root, a.out, a.steps, a.every, a.tau, a.seed),
        "controllers": curves(a.root, a.out),
    }
    print(tables(a.root))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
