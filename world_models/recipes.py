"""Whole-pipeline recipes: ``reproduce(config) -> root folder``.

``doom`` follows the paper's DoomTakeCover experiment: collect random-policy episodes
(a uniform random action held 1-10 frames) -> train V (z = 64) -> encode the series ->
train M (LSTM 512, done head with positives x10, seq len 500, truncated BPTT, lr decay)
-> evolve C only inside the dream (tau 1.15, 2100-step limit, popsize 64 x 16 rollouts,
the mean scored every 25 generations) -> score C in the dream and in the real game,
100 trials each.
``debug`` is the same pipeline on the tiny fake env with tiny sizes (tests, smoke runs).

One knob, ``scale``, shrinks the amounts (episodes, generations, evaluation rollouts and,
below 0.1, trials and training epochs) and never the architecture or the per-generation
settings. Every stage writes under ``root`` and resumes on a re-run (finished stages return
quickly), so the same command continues a killed recipe.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from world_models.errors import ConfigError


@dataclass(frozen=True)
class ReproduceConfig:
    """Options of ``world-models reproduce``."""

    game: Literal["doom", "debug"] = field(default="doom", metadata={"cli": False})
    """Which recipe (the command's positional argument)."""
    root: Path | None = None
    """Folder for every stage's output (None: runs/reproduce-<game>)."""
    scale: float = 1.0
    """Multiplies the amounts: episodes (10,000), generations (2,000), evaluation rollouts
    (1,024); trials (100) and V's and M's epochs shrink only below 0.1. 1.0 = the
    original's amounts."""
    device: str | None = None
    """cpu, cuda, ...; None picks CUDA when present."""
    workers: int = 0
    """Worker processes for collection and real-env evaluation (0: all cores)."""
    seed: int = 0
    """Base seed of every stage."""
    progress: bool = True
    """Show progress bars."""


def _amounts(
    scale: float, episodes: int, generations: int, eval_rollouts: int, trials: int
) -> dict[str, int]:
    if not scale > 0:
        raise ConfigError(f"scale must be > 0, got {scale}")
    return {
        "episodes": max(4, round(episodes * scale)),
        "generations": max(1, round(generations * scale)),
        "eval_rollouts": max(8, round(eval_rollouts * scale)),
        "trials": trials if scale >= 0.1 else max(4, round(trials * scale * 10)),
    }


def _epochs(scale: float, epochs: int) -> int:
    """Training epochs: as the preset says from scale 0.1 up; fewer (at least 2) below."""
    return epochs if scale >= 0.1 else max(2, round(epochs * scale * 10))


def stage_configs(config: ReproduceConfig) -> dict[str, Any]:
    """The config of every stage, in order: collect, vae, encode, mdrnn, controller,
    evaluate (real env), evaluate_dream."""
    from world_models.data.collect import PRESETS as COLLECT
    from world_models.data.encode import PRESETS as ENCODE
    from world_models.evaluation.evaluate import EvaluateConfig
    from world_models.training.controller import PRESETS as CONTROLLER
    from world_models.training.mdrnn import TRAIN_MDNRNN_PRESETS as MDRNN
    from world_models.training.vae import PRESETS as VAE

    root = config.root or Path(f"runs/reproduce-{config.game}")
    if config.game == "doom":
        n = _amounts(config.scale, 10_000, 2_000, 1_024, 100)
        env = "doom"
        collect = dataclasses.replace(COLLECT["doom"], episodes=n["episodes"])
        vae = VAE["doom"]
        mdrnn = MDRNN["doom"]
        controller = CONTROLLER["doom"]
        max_steps = None
    elif config.game == "debug":
        n = _amounts(config.scale, 8, 3, 8, 4)
        env = "fake-discrete"
        collect = dataclasses.replace(
            COLLECT["debug"], env=env, episodes=n["episodes"], max_steps=30
        )
        vae = dataclasses.replace(VAE["debug"], latent_size=8, holdout_fraction=0.25)
        mdrnn = dataclasses.replace(
            MDRNN["debug"], hidden_size=16, done_head=True, holdout_fraction=0.25, tensorboard=False
        )
        controller = dataclasses.replace(CONTROLLER["debug"], dream_max_steps=30)
        max_steps = 30
    else:
        raise ConfigError(f"unknown recipe {config.game!r}; choose doom or debug")
    common = {"progress": config.progress}
    stages: dict[str, Any] = {}
    stages["collect"] = dataclasses.replace(
        collect, out_dir=root / "data", seed=config.seed, workers=config.workers, **common
    )
    stages["vae"] = dataclasses.replace(
        vae,
        epochs=_epochs(config.scale, vae.epochs),
        data_dir=root / "data",
        run_dir=root / "vae",
        device=config.device,
        seed=config.seed,
        **common,
    )
    vae_ckpt = root / "vae" / "checkpoints" / "best"
    stages["encode"] = dataclasses.replace(
        ENCODE["doom"],
        data_dir=root / "data",
        vae=vae_ckpt,
        out_dir=root / "series",
        device=config.device,
        **common,
    )
    stages["mdrnn"] = dataclasses.replace(
        mdrnn,
        epochs=_epochs(config.scale, mdrnn.epochs),
        series_dir=root / "series",
        run_dir=root / "mdrnn",
        device=config.device or "auto",
        seed=config.seed,
        **common,
    )
    stages["controller"] = dataclasses.replace(
        controller,
        target="dream",
        env=env,
        mdrnn_path=root / "mdrnn" / "checkpoints" / "best",
        vae_path=vae_ckpt,
        series_dir=root / "series",
        data_dir=None,
        run_dir=root / "controller",
        generations=n["generations"],
        eval_rollouts=n["eval_rollouts"],
        eval_every=min(controller.eval_every, n["generations"]),
        device=config.device,
        seed=config.seed,
        **common,
    )
    stages["evaluate"] = EvaluateConfig(
        controller_path=root / "controller" / "checkpoints" / "best",
        vae_path=vae_ckpt,
        mdrnn_path=root / "mdrnn" / "checkpoints" / "best",
        env=env,
        trials=n["trials"],
        seed=10**6 + config.seed,
        max_steps=max_steps,
        workers=config.workers,
        device=config.device,
        out_dir=root / "evaluation",
        **common,
    )
    # the paper reports both: the score in the dream C was trained in, and the real one
    stages["evaluate_dream"] = dataclasses.replace(
        stages["evaluate"],
        target="dream",
        series_dir=root / "series",
        tau=stages["controller"].tau,
        dream_max_steps=stages["controller"].dream_max_steps,
        out_dir=root / "evaluation-dream",
    )
    return stages


def _best_or_last(run: Path) -> Path:
    best = run / "checkpoints" / "best"
    return best if best.exists() else run / "checkpoints" / "last"


def reproduce(config: ReproduceConfig, log: Callable[[str], None] = print) -> Path:
    """Run every stage in order (each resumes); return the root folder."""
    from world_models.data.collect import collect
    from world_models.data.encode import encode
    from world_models.evaluation.evaluate import evaluate, summarize
    from world_models.training.controller import train_controller
    from world_models.training.mdrnn import train_mdrnn
    from world_models.training.vae import train_vae

    stages = stage_configs(config)
    log(f"[1/6] collect {stages['collect'].episodes} episodes -> {stages['collect'].out_dir}")
    collect(stages["collect"])
    log(f"[2/6] train V -> {stages['vae'].run_dir}")
    vae_run = train_vae(stages["vae"])
    vae_ckpt = _best_or_last(vae_run)
    log(f"[3/6] encode -> {stages['encode'].out_dir}")
    encode(dataclasses.replace(stages["encode"], vae=vae_ckpt))
    log(f"[4/6] train M -> {stages['mdrnn'].run_dir}")
    m_ckpt = _best_or_last(train_mdrnn(stages["mdrnn"]))
    ctrl = dataclasses.replace(stages["controller"], mdrnn_path=m_ckpt, vae_path=vae_ckpt)
    log(f"[5/6] evolve C in the dream for {ctrl.generations} generations -> {ctrl.run_dir}")
    c_ckpt = _best_or_last(train_controller(ctrl))
    ev = dataclasses.replace(
        stages["evaluate"], controller_path=c_ckpt, vae_path=vae_ckpt, mdrnn_path=m_ckpt
    )
    log(f"[6/6] evaluate in the dream and the real env, {ev.trials} trials each")
    dream_ev = dataclasses.replace(
        stages["evaluate_dream"], controller_path=c_ckpt, vae_path=vae_ckpt, mdrnn_path=m_ckpt
    )
    log(summarize(evaluate(dream_ev)))
    log(summarize(evaluate(ev)))
    return ctrl.run_dir.parent
