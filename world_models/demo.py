"""``world-models demo``: real frames in, a trained VAE and pictures out, in minutes.

Collects a small CarRacing-v3 dataset with the original's Brownian random policy, trains
the ConvVAE for a time budget (CPU) or a few epochs (GPU), and writes reconstructions,
samples, a latent traversal and the loss curve. Re-running tops up and resumes.

Imports of torch and the pipeline sit inside the functions: this module holds
``DemoConfig``, which ``world-models demo --help`` reads without loading torch.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DemoConfig:
    """Options of ``world-models demo``."""

    out_dir: Path = Path("world-models-demo")
    """Where the dataset, the run and the pictures go."""
    env: str = "carracing"
    """Environment preset to collect from (carracing; fake for a no-Box2D smoke run)."""
    episodes: int = 24
    """Episodes to collect."""
    max_steps: int = 250
    """Steps per episode (CarRacing's first ~50 frames are a zoom-in)."""
    workers: int = 0
    """Collection processes (0: all cores)."""
    train_seconds: float | None = None
    """Training time budget in seconds (None: 300 on CPU, no limit on GPU)."""
    epochs: int = 40
    """Upper bound on training epochs."""
    batch_size: int = 64
    """Frames per step."""
    lr: float = 1e-3
    """Adam learning rate (higher than the original's 1e-4: the demo trains briefly)."""
    device: str | None = None
    """cpu or cuda (None: CUDA when present)."""
    seed: int = 0
    """Seed of collection and training."""
    progress: bool = True
    """Show progress bars."""


PRESETS = {
    "default": DemoConfig(),
    # Seconds-long: for tests and a quick look that the pipeline hands over.
    "debug": DemoConfig(
        env="fake",
        episodes=6,
        max_steps=40,
        train_seconds=5.0,
        epochs=2,
        batch_size=16,
        progress=False,
    ),
}


def run_demo(config: DemoConfig) -> dict[str, Path]:
    """Collect, train, draw; return name -> path of every output."""
    from world_models.core.device import pick_device
    from world_models.data.collect import CollectConfig, collect
    from world_models.data.sources import FrameSource
    from world_models.evaluation.vae_report import write_vae_report
    from world_models.models.world_model import load_world_model
    from world_models.training.vae import TrainVAEConfig, train_vae

    out = Path(config.out_dir)
    device = pick_device(config.device)
    t0 = time.perf_counter()
    data_dir = collect(
        CollectConfig(
            out_dir=out / "data",
            env=config.env,
            episodes=config.episodes,  # type: ignore[arg-type]
            max_steps=config.max_steps,
            seed=config.seed,
            workers=config.workers,
            progress=config.progress,
        )
    )
    t_collect = time.perf_counter() - t0
    budget = config.train_seconds
    if budget is None and device.type == "cpu":
        budget = 300.0
    train_cfg = TrainVAEConfig(
        data_dir=data_dir,
        run_dir=out / "run",
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        lr_reference_batch=config.batch_size,
        holdout_fraction=0.15,
        device=str(device),
        seed=config.seed,
        log_every=20,
        time_budget_s=budget,
        progress=config.progress,
        checkpoint_every_s=60.0,
    )
    t1 = time.perf_counter()
    run_dir = train_vae(train_cfg)
    t_train = time.perf_counter() - t1
    vae = load_world_model(run_dir / "checkpoints" / "best", device=device).vae
    vae.check_inputs = False
    hold = FrameSource(data_dir, "holdout", train_cfg.holdout_fraction, device)
    paths = write_vae_report(vae, hold.sample(12, seed=config.seed), out, seed=config.seed)
    curve = out / "loss_curve.png"
    shutil.copyfile(run_dir / "loss_curve.png", curve)
    paths["loss_curve"] = curve
    paths["checkpoint"] = run_dir / "checkpoints" / "best"
    paths["data"] = data_dir
    paths["run"] = run_dir
    print(f"collected in {t_collect:.0f} s, trained in {t_train:.0f} s on {device}")
    return paths


__all__ = ["PRESETS", "DemoConfig", "run_demo"]


def format_outputs(paths: dict[str, Path]) -> str:
    """The outputs of :func:`run_demo`, one per line."""
    width = max(len(k) for k in paths) + 1
    return "outputs:\n" + "\n".join(f"  {k + ':':<{width}} {p}" for k, p in paths.items())
