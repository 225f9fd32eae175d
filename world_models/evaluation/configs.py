"""Configs of evaluation, the dream-fidelity check and dream videos; torch-free (the CLI
reads them for ``--help``). Each module re-exports its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from world_models.core.config import Flat, Target, check_finite
from world_models.core.errors import ConfigError
from world_models.envs.configs import DreamSettings, RolloutSettings
from world_models.envs.presets import LAYOUTS, EnvName

CARRACING, DOOM, DEBUG = LAYOUTS["carracing"], LAYOUTS["doom"], LAYOUTS["debug"]

MAX_TRIALS = 1_000_000
"""Most trials one ``evaluate`` plays: results.json and returns.csv list every return (a
million is ~20 MB each, and days of real play); more are one line naming the limit."""


@dataclass(frozen=True)
class EvaluateConfig:
    """Options of ``world-models evaluate``."""

    pretrained: str | None = None
    """A world model shipped with the package (doom): sets V, M, C, the dreams' initial
    states, the env and the dream settings C was evolved with (overriding those flags)."""
    controller: Path | None = CARRACING.controller
    """Controller checkpoint folder (C); None with policy random."""
    vae: Path | None = CARRACING.vae
    """ConvVAE checkpoint folder (V)."""
    mdrnn: Path | None = CARRACING.mdrnn
    """MDNRNN checkpoint folder (M)."""
    env: EnvName = "carracing"
    """Env preset."""
    target: Target = "real"
    """Score in the real env, or inside M's dream (the paper's "dream score")."""
    policy: Literal["controller", "random", "stay", "left", "right"] = "controller"
    """controller (V+M+C), the env's random data policy, or (Doom) one constant action:
    the baselines."""
    trials: int = 100
    """Episodes to play (the paper: 100; at most 1,000,000)."""
    seed: int = 0
    """Trial i resets the env with seed + i."""
    max_steps: int | None = None
    """Truncate episodes here (None: the env's own limit)."""
    z_mode: Literal["sample", "mu"] = "sample"
    """Feed C and M sampled z (as the original) or V's mean."""
    device: str | None = None
    """cpu, cuda, ...; None picks CUDA when present."""
    out_dir: Path = CARRACING.evaluation
    """Output folder (results.json, returns.csv, histogram.png, best/worst animation)."""
    video: Literal["gif", "mp4", "none"] = "gif"
    """Animation format of the best and worst episode (mp4 needs imageio[ffmpeg])."""
    fps: int = 30
    """Frames per second of the animations."""
    series_dir: Path | None = None
    """Dream: series folder whose first frames' (mu, logvar) start the dreams."""
    data_dir: Path | None = None
    """Dream: dataset folder whose first frames V encodes (when no series_dir)."""
    dream: Annotated[DreamSettings, Flat] = DreamSettings()
    """How the dream runs (tau, dream_max_steps, done_mode, done_offset, dream_dropout)."""
    rollout: Annotated[RolloutSettings, Flat] = RolloutSettings()
    """Where real episodes run (workers, envs_per_worker, backend, retries)."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise ConfigError(f"trials must be >= 1, got {self.trials}")
        if self.trials > MAX_TRIALS:
            raise ConfigError(
                f"evaluate: trials={self.trials} is over the limit of {MAX_TRIALS:,} "
                f"(results.json and returns.csv list every return); play more as several "
                f"evaluations (trial i plays seed + i: --seed {self.seed + MAX_TRIALS} "
                f"continues after {MAX_TRIALS:,} trials)"
            )
        if self.video != "none" and not self.fps >= 1:
            raise ConfigError(f"fps must be >= 1, got {self.fps}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"evaluate: max_steps must be >= 1, got {self.max_steps}")


EVALUATE_PRESETS: dict[str, EvaluateConfig] = {
    "carracing": EvaluateConfig(),
    "doom": EvaluateConfig(
        controller=DOOM.controller,
        vae=DOOM.vae,
        mdrnn=DOOM.mdrnn,
        env="doom",
        out_dir=DOOM.evaluation,
        series_dir=DOOM.series,
    ),
    # Follows the other commands' debug presets (fake env, runs/*-debug).
    "debug": EvaluateConfig(
        controller=DEBUG.controller,
        vae=DEBUG.vae,
        mdrnn=DEBUG.mdrnn,
        env="fake",
        trials=8,
        max_steps=50,
        out_dir=DEBUG.evaluation,
        progress=False,
    ),
}


@dataclass(frozen=True)
class FidelityConfig:
    """Options of ``world-models fidelity``."""

    vae: Path = DOOM.vae
    """ConvVAE checkpoint folder (V)."""
    mdrnn: Path = DOOM.mdrnn
    """MDNRNN checkpoint folder (M)."""
    controller: Path | None = None
    """Also score this controller checkpoint in both (None: the fixed policies only)."""
    env: EnvName = "doom"
    """Env preset (stay / left / right exist only for left-stay-right envs such as doom)."""
    series_dir: Path | None = DOOM.series
    """Series folder whose first frames' (mu, logvar) start the dreams."""
    data_dir: Path | None = DOOM.data
    """Dataset folder: its first episode makes the picture strip (and starts the dreams
    when no series_dir)."""
    trials: int = 100
    """Episodes per policy, in the dream and in the game each."""
    dream: Annotated[DreamSettings, Flat] = DreamSettings()
    """How the dream runs (tau, dream_max_steps, done_mode, done_offset, dream_dropout);
    dream_max_steps caps the real episodes too."""
    rollout: Annotated[RolloutSettings, Flat] = RolloutSettings()
    """Where real episodes run (workers, envs_per_worker, backend, retries)."""
    calibrate: bool = False
    """First find the done offset at which the random policy survives in the dream as long
    as the series' (random-policy) episodes lasted, then score everything with it."""
    real: bool = True
    """Also play the real game (false: the dream only, e.g. without vizdoom)."""
    diagnostics: bool = True
    """Also measure why a dream fails (evaluation/diagnostics.py): the done head's recall
    and false alarms at the dream's death rule, and the open-loop latent error at 1, 5, 20
    and 50 steps, on M's held-out episodes of series_dir (and of controller_series_dir)."""
    diagnostic_episodes: int = 100
    """Episodes per set for the diagnostics."""
    holdout_fraction: float = 0.1
    """M's held-out split of series_dir (train-mdrnn's --holdout-fraction)."""
    controller_series_dir: Path | None = None
    """Series of episodes played by a controller (`collect --controller`, then `encode`):
    the diagnostics again on the states that C reaches."""
    strip_steps: int = 8
    """Columns of the picture strip."""
    strip_every: int = 10
    """Steps between the strip's columns."""
    seed: int = 0
    """Seed of the dreams and of the real episodes (trial i: seed + i)."""
    device: str | None = None
    """cpu, cuda, ...; None picks CUDA when present."""
    out_dir: Path = DOOM.fidelity
    """Output folder: fidelity.json, fidelity.txt, strip.png."""
    progress: bool = True
    """Show progress bars for the real episodes."""

    def __post_init__(self) -> None:
        for name in ("trials", "strip_steps", "strip_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"fidelity: {name} must be >= 1, got {getattr(self, name)}")
        check_finite(
            "holdout_fraction", self.holdout_fraction, 0, 1, hi_open=True, where="fidelity"
        )


@dataclass(frozen=True)
class SelectConfig:
    """Options of ``world-models select``."""

    run_dir: Path = DOOM.controller_run
    """A train-controller run folder: its kept means (checkpoints/eval-gen*), best and
    best_candidate are the candidates."""
    vae: Path = DOOM.vae
    """ConvVAE checkpoint folder (V)."""
    mdrnn: Path = DOOM.mdrnn
    """MDNRNN checkpoint folder (M)."""
    env: EnvName = "doom"
    """Env preset of the validation games."""
    candidates: int = 8
    """At most this many candidates: best, best_candidate and kept means spread evenly
    over the run (the last always among them)."""
    games: int = 10
    """Real validation games per candidate (the same seeds for every candidate)."""
    seed: int = 500_000
    """Validation game i uses seed + i: apart from evaluate's default seeds (0, 1, ...) and
    the recipes' test seeds (1,000,000 + i), so the chosen C is scored on unseen games."""
    max_steps: int | None = 2100
    """Truncate validation games here (None: the env's own limit)."""
    rollout: Annotated[RolloutSettings, Flat] = RolloutSettings()
    """Where the games run (workers, envs_per_worker, backend, retries)."""
    device: str | None = None
    """cpu, cuda, ...; None picks CUDA when present."""
    progress: bool = True
    """Show a progress bar per candidate."""

    def __post_init__(self) -> None:
        for name in ("candidates", "games"):
            if getattr(self, name) < 1:
                raise ConfigError(f"select: {name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"select: max_steps must be >= 1, got {self.max_steps}")


@dataclass(frozen=True)
class DreamVideoConfig:
    """Options of ``world-models dream``."""

    vae: Path = CARRACING.vae
    """ConvVAE checkpoint folder."""
    mdrnn: Path = CARRACING.mdrnn
    """MDNRNN checkpoint folder."""
    episode: Path = CARRACING.data / "ep_000000.npz"
    """Real episode file whose first frame starts the dream (and whose actions drive it)."""
    out: Path = Path("dream.gif")
    """Output video: .gif, or .mp4 with the `video` extra."""
    tau: float = 1.0
    """Temperature of M's sampling, >= 0 (0: always the most likely component's mean)."""
    actions: Literal["recorded", "random"] = "recorded"
    """Drive the dream with the episode's actions or with random ones of the same kind:
    one-hot (or -1/0/1, or integer) actions get a random class held for 1-10 steps,
    continuous ones uniform values between the episode's per-column min and max."""
    steps: int | None = None
    """Dream this many steps, >= 1 (None: the episode's length from --start)."""
    start: int = 0
    """Index of the real frame the dream starts from (0 to the episode's length - 1)."""
    fps: int = 25
    """Frames per second of the video (>= 1)."""
    scale: int = 3
    """Pixel upscaling of the 64x64 frames (>= 1)."""
    seed: int = 0
    """Seed of M's sampling noise (and of random actions)."""
    device: str | None = None
    """cpu or cuda (None: CUDA when present)."""
