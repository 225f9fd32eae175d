"""Score a controller in the real env: ``evaluate(config) -> output folder``.

N trials (default 100, as the paper's tables) with seeds ``seed .. seed + N - 1``, run in
parallel by :class:`~world_models.evaluation.rollout.EnvPool` (V, M and C batched in this
process). Writes ``results.json`` (mean, std, every return), ``returns.csv``,
``histogram.png``, and an animation of the best and of the worst episode made of the raw
env frames (e.g. 96x96 CarRacing, 240x320 Doom). Episodes are functions of their seeds, so
the two are replayed with recording on rather than storing every frame of every trial;
``results.json`` says whether the replays scored the same.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from world_models.atomic import atomic_open, atomic_write_json
from world_models.errors import ConfigError


@dataclass(frozen=True)
class EvaluateConfig:
    """Options of ``world-models evaluate``."""

    controller_path: Path | None = Path("runs/controller/checkpoints/best")
    """Controller checkpoint folder (C); None with policy random."""
    vae_path: Path | None = Path("runs/vae/checkpoints/best")
    """ConvVAE checkpoint folder (V)."""
    mdrnn_path: Path | None = Path("runs/mdrnn/checkpoints/best")
    """MDNRNN checkpoint folder (M)."""
    env: Literal["carracing", "doom", "fake", "fake-discrete"] = "carracing"
    """Env preset."""
    policy: Literal["controller", "random"] = "controller"
    """controller (V+M+C) or the env's random data policy (a baseline)."""
    trials: int = 100
    """Episodes to play (the paper: 100)."""
    seed: int = 0
    """Trial i resets the env with seed + i."""
    max_steps: int | None = None
    """Truncate episodes here (None: the env's own limit)."""
    z_mode: Literal["sample", "mu"] = "sample"
    """Feed C and M sampled z (as the original) or V's mean."""
    workers: int = 0
    """Env worker processes (0: all cores)."""
    envs_per_worker: int = 0
    """Envs per worker (0: all trials in one wave, up to 32 per worker)."""
    device: str | None = None
    """cpu, cuda, ...; None picks CUDA when present."""
    out_dir: Path = Path("runs/evaluation")
    """Output folder (results.json, returns.csv, histogram.png, best/worst animation)."""
    video: Literal["gif", "mp4", "none"] = "gif"
    """Animation format of the best and worst episode (mp4 needs imageio[ffmpeg])."""
    fps: int = 30
    """Frames per second of the animations."""
    progress: bool = True
    """Show a progress bar."""


PRESETS: dict[str, EvaluateConfig] = {
    "carracing": EvaluateConfig(),
    "doom": EvaluateConfig(
        controller_path=Path("runs/controller-doom/checkpoints/best"),
        vae_path=Path("runs/vae-doom/checkpoints/best"),
        mdrnn_path=Path("runs/mdrnn-doom/checkpoints/best"),
        env="doom",
        out_dir=Path("runs/evaluation-doom"),
    ),
}


def build_policy(config: EvaluateConfig):
    """The policy the config asks for (V+M+C loaded from checkpoints, or random)."""
    from world_models.envs.presets import get_preset

    preset = get_preset(config.env)
    if config.policy == "random":
        from world_models.envs.make import make_env
        from world_models.policies import make_random_policy

        env = make_env(preset, env_kwargs=None)
        try:
            return make_random_policy(preset.default_policy, env.action_space)
        finally:
            env.close()
    import torch  # noqa: F401 - heavy, only for the controller

    from world_models.models.controller import Controller, ControllerPolicy, mode_for_env
    from world_models.models.mdrnn import MDNRNN
    from world_models.models.vae import ConvVAE
    from world_models.training.runs import pick_device

    if config.controller_path is None or config.vae_path is None or config.mdrnn_path is None:
        raise ConfigError("policy controller needs --controller-path, --vae-path, --mdrnn-path")
    device = pick_device(config.device)
    vae = ConvVAE.from_pretrained(config.vae_path, map_location=device)
    mdrnn = MDNRNN.from_pretrained(config.mdrnn_path, map_location=device)
    controller = Controller.from_pretrained(config.controller_path, map_location=device)
    _, mode = mode_for_env(preset.action_kind, preset.action_dim)
    if controller.action_mode != mode:
        raise ConfigError(
            f"controller {config.controller_path} maps actions as "
            f"{controller.action_mode!r}; the {config.env} env needs {mode!r}"
        )
    return ControllerPolicy(vae, mdrnn, controller, device, config.z_mode)


def evaluate(config: EvaluateConfig) -> Path:
    """Play ``trials`` episodes and write the results; returns ``out_dir``."""
    from tqdm.auto import tqdm

    from world_models.evaluation.media import save_animation
    from world_models.evaluation.rollout import EnvFactory, EnvPool

    if config.trials < 1:
        raise ConfigError(f"trials must be >= 1, got {config.trials}")
    policy = build_policy(config)
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    workers = max(1, min(config.workers or os.cpu_count() or 1, config.trials))
    per = config.envs_per_worker or min(32, -(-config.trials // workers))
    seeds = np.arange(config.trials) + config.seed
    bar = tqdm(total=config.trials, unit="ep", disable=not config.progress, dynamic_ncols=True)
    with EnvPool(EnvFactory(config.env, config.max_steps), workers, per) as pool:
        res = pool.run(policy, seeds, max_steps=config.max_steps, progress=bar.update)
        bar.close()
        best, worst = int(np.argmax(res.returns)), int(np.argmin(res.returns))
        replay = None
        if config.video != "none":
            replay = pool.run(policy, seeds[[best, worst]], max_steps=config.max_steps, record=True)
    results = {
        "env": config.env,
        "policy": config.policy,
        "trials": config.trials,
        "mean": float(res.returns.mean()),
        "std": float(res.returns.std()),
        "min": float(res.returns.min()),
        "max": float(res.returns.max()),
        "mean_length": float(res.lengths.mean()),
        "best_seed": int(seeds[best]),
        "worst_seed": int(seeds[worst]),
        "returns": [float(r) for r in res.returns],
        "seeds": [int(s) for s in seeds],
        "controller_path": str(config.controller_path),
        "z_mode": config.z_mode,
    }
    if replay is not None:
        for name, frames in zip(("best", "worst"), replay.frames):
            save_animation(list(frames), out / f"{name}.{config.video}", fps=config.fps)
        results["replay_returns"] = [float(r) for r in replay.returns]
        results["replay_matches"] = bool(
            np.allclose(replay.returns, res.returns[[best, worst]], rtol=1e-5, atol=1e-6)
        )
    atomic_write_json(out / "results.json", results)
    with atomic_open(out / "returns.csv", "w") as fh:
        fh.write("seed,return,length\n")
        fh.writelines(f"{s},{r:.6g},{n}\n" for s, r, n in zip(seeds, res.returns, res.lengths))
    save_histogram(
        res.returns,
        out / "histogram.png",
        title=f"{config.env}: {config.trials} trials, "
        f"{results['mean']:.1f} +- {results['std']:.1f}",
    )
    return out


def save_histogram(values: np.ndarray, path: Path, title: str = "") -> Path:
    """A histogram PNG of returns with the mean marked, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    ax.hist(values, bins=min(30, max(5, len(values) // 3)), color="#4c72b0", alpha=0.85)
    ax.axvline(float(np.mean(values)), color="k", linestyle="--", label="mean")
    ax.set_xlabel("return")
    ax.set_ylabel("episodes")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)
    return Path(path)


def summarize(out_dir: Path) -> str:
    import json

    r = json.loads((Path(out_dir) / "results.json").read_text())
    lines = [
        f"{r['env']} ({r['policy']}): {r['mean']:.2f} +- {r['std']:.2f} over "
        f"{r['trials']} trials (min {r['min']:.2f}, max {r['max']:.2f})",
        f"results:   {Path(out_dir) / 'results.json'}",
        f"histogram: {Path(out_dir) / 'histogram.png'}",
    ]
    for f in sorted(Path(out_dir).glob("best.*")) + sorted(Path(out_dir).glob("worst.*")):
        lines.append(f"{f.stem + ':':<10} {f}")
    return "\n".join(lines)
