"""Choose a dream-evolved controller on a few real games: ``select_controller(config)``.

CMA-ES in the dream keeps its mean at every evaluation (``checkpoints/eval-gen*``) besides
``best`` (the best dream evaluation) and ``best_candidate``. The dream ranks them by what M
rewards, which need not be what the game rewards; a handful of real validation games per
candidate (the same seeds for all, apart from the test seeds) picks the one to keep, as
Sha01in's port did ("best of 7 chosen on 20 real games"). The chosen C must then be scored
on *other* seeds: its validation mean is biased upwards by the choice.

Writes ``run_dir/selection.json`` (every candidate's validation returns) and copies the
chosen checkpoint to ``run_dir/checkpoints/selected``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from world_models.core.atomic import atomic_dir, atomic_write_json
from world_models.core.errors import ConfigError
from world_models.envs.pool import EnvFactory, make_pool
from world_models.evaluation.configs import EvaluateConfig, SelectConfig
from world_models.evaluation.evaluate import build_policy
from world_models.models.world_model import check_trained_env


def candidates(run_dir: Path, n: int) -> list[Path]:
    """Up to ``n`` checkpoint folders of a controller run: best, best_candidate, then the
    kept means spread evenly over the run (the last one always included)."""
    ckpts = Path(run_dir) / "checkpoints"
    fixed = [ckpts / name for name in ("best", "best_candidate") if (ckpts / name).is_dir()]
    means = sorted(p for p in ckpts.glob("eval-gen*") if p.is_dir())
    room = max(0, n - len(fixed))
    if room and means:
        idx = np.unique(np.linspace(len(means) - 1, 0, room).round().astype(int))
        fixed += [means[i] for i in sorted(idx)]
    if not fixed:
        raise ConfigError(f"{run_dir}: no controller checkpoints to choose among")
    return fixed[:n]


def select_controller(config: SelectConfig) -> Path:
    """Score each candidate on ``games`` real games; copy the best to checkpoints/selected."""
    check_trained_env(config.env, config.mdrnn, "M")  # before any game is played
    check_trained_env(config.env, config.vae, "V")
    cands = candidates(config.run_dir, config.candidates)
    seeds = np.arange(config.games) + config.seed
    workers, per = config.rollout.layout(config.games)
    factory = EnvFactory(config.env, config.max_steps, backend=config.rollout.env_backend)
    rows = []
    with make_pool(
        config.rollout.backend, factory, workers, per, retries=config.rollout.retries
    ) as pool:
        for path in cands:
            ev = EvaluateConfig(
                controller=path,
                vae=config.vae,
                mdrnn=config.mdrnn,
                env=config.env,
                device=config.device,
            )
            bar = tqdm(total=config.games, desc=path.name, disable=not config.progress, leave=False)
            res = pool.run(build_policy(ev), seeds, max_steps=config.max_steps, progress=bar.update)
            bar.close()
            rows.append(
                {
                    "candidate": path.name,
                    "mean": float(np.mean(res.returns)),
                    "std": float(np.std(res.returns)),
                    "returns": [float(r) for r in res.returns],
                }
            )
    best = max(range(len(rows)), key=lambda i: rows[i]["mean"])
    chosen = Path(config.run_dir) / "checkpoints" / "selected"
    with atomic_dir(chosen) as tmp:
        for f in cands[best].iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)
    atomic_write_json(
        Path(config.run_dir) / "selection.json",
        {
            "chosen": rows[best]["candidate"],
            "games": config.games,
            "seeds": [int(seeds[0]), int(seeds[-1])],
            "max_steps": config.max_steps,
            "candidates": rows,
        },
    )
    return chosen


def summarize(chosen: Path) -> str:
    """The candidates' validation means and the choice, as text."""
    import json

    sel = json.loads((chosen.parent.parent / "selection.json").read_text())
    lines = [f"{r['candidate']:<16} {r['mean']:8.1f} +- {r['std']:.1f}" for r in sel["candidates"]]
    lines.append(f"chosen: {sel['chosen']} -> {chosen} (score it on other seeds)")
    return "\n".join(lines)
