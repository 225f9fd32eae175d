"""Configs of the three trainers (V, M, C) and their named presets; torch-free (the CLI
reads them for ``--help``). Each trainer module re-exports its own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Literal

from world_models.core.config import Flat, Target, check_finite, resumable
from world_models.core.errors import ConfigError
from world_models.envs.configs import DreamSettings, RolloutSettings
from world_models.envs.presets import LAYOUTS, EnvName
from world_models.models.configs import MDNRNN_PRESETS, ControllerConfig, MDNRNNConfig, VAEConfig

CARRACING, DOOM, DEBUG = LAYOUTS["carracing"], LAYOUTS["doom"], LAYOUTS["debug"]


@dataclass(frozen=True)
class TrainVAEConfig:
    """Training of the ConvVAE on a collected dataset.

    A re-run may change the fields marked ``resumable``: length, hardware and speed knobs,
    and the learning rate (the advice after a NaN is to lower it and resume); not the batch
    size or seed (they fix where a mid-epoch resume picks up) nor anything of the model or
    data.
    """

    data_dir: Path = CARRACING.data
    """Dataset folder made by `world-models collect` (or `data import`)."""
    run_dir: Path = CARRACING.vae_run
    """Run folder: checkpoints, metrics and pictures; re-running resumes it."""
    model: Annotated[VAEConfig, Flat] = VAEConfig(kl_tolerance=0.5)
    """The ConvVAE to train (the original's free bits 0.5; the trainer feeds it uint8)."""
    beta: float = 1.0
    """Weight of the KL term."""
    epochs: int = resumable(10)
    """Passes over the training frames."""
    batch_size: int = 100
    """Frames per optimizer step (per process under torchrun)."""
    lr: float = resumable(1e-4)
    """Adam learning rate at lr_reference_batch; scaled for other batch sizes by lr_scaling."""
    lr_reference_batch: int = resumable(100)
    """Batch size at which lr applies unscaled (the original: 1e-4 at batch 100)."""
    lr_scaling: Literal["sqrt", "linear", "none"] = resumable("sqrt")
    """How lr follows the global batch: sqrt (safe for Adam), linear, or none."""
    warmup_steps: int = resumable(0)
    """Linear learning-rate warm-up steps (helps large batches)."""
    holdout_fraction: float = 0.1
    """Fraction of episodes held out (chosen by a hash of the file name, stable as data grow)."""
    max_frames: int | None = None
    """Use at most this many training frames (None: all)."""
    cache_dir: Path | None = resumable(None)
    """Folder for the frames' uint8 cache (None: DATA_DIR/.cache, or, when the dataset
    cannot be written, $XDG_CACHE_HOME/world_models/frames, which a warning names)."""
    device: str | None = resumable(None)
    """cpu, cuda, cuda:1 ...; None picks CUDA when present."""
    amp: bool | None = resumable(None)
    """bf16 autocast; None: on for CUDA, and on the CPU when it has native bf16."""
    channels_last: bool = resumable(True)
    """channels_last memory format (faster on GPUs and on this project's CPUs alike)."""
    compile: bool = resumable(False)
    """torch.compile the training step (pays a compile time once)."""
    seed: int = 0
    """Seed of the weights, the data order and the sampling noise."""
    log_every: int = resumable(50)
    """Steps between metric rows (and NaN checks)."""
    checkpoint_every_s: float = resumable(120.0)
    """Seconds between mid-epoch checkpoints (an epoch's end always saves; under torchrun
    checked at log steps)."""
    image_every: int = resumable(1)
    """Epochs between reconstruction and sample grids."""
    max_steps: int | None = resumable(None)
    """Stop after this many optimizer steps in total (None: run all epochs)."""
    time_budget_s: float | None = resumable(None)
    """Stop after this many seconds of training in this invocation (None: no limit; under
    torchrun checked at log steps)."""
    progress: bool = resumable(True)
    """Show a progress bar."""
    tensorboard: bool = resumable(True)
    """Write TensorBoard events when tensorboard is installed."""

    def __post_init__(self) -> None:
        self.model.validate("train-vae")
        checks = [
            ("epochs", self.epochs >= 1),
            ("batch_size", self.batch_size >= 1),
            ("lr", self.lr > 0),
            ("lr_reference_batch", self.lr_reference_batch >= 1),
            ("beta", self.beta >= 0),
            ("warmup_steps", self.warmup_steps >= 0),
            ("log_every", self.log_every >= 1),
            ("holdout_fraction", 0 <= self.holdout_fraction < 1),
            ("image_every", self.image_every >= 1),
            ("checkpoint_every_s", self.checkpoint_every_s >= 0),
            ("max_steps", self.max_steps is None or self.max_steps >= 1),
            ("max_frames", self.max_frames is None or self.max_frames >= 1),
            ("time_budget_s", self.time_budget_s is None or self.time_budget_s > 0),
        ]
        bad = [f"{name}={getattr(self, name)!r}" for name, ok in checks if not ok]
        if bad:
            raise ConfigError(f"invalid train-vae settings: {', '.join(bad)}")
        for name, value, lo, lo_open in [  # nan fails the checks above; inf does not
            ("lr", self.lr, 0, True),
            ("beta", self.beta, 0, False),
            ("checkpoint_every_s", self.checkpoint_every_s, 0, False),
            ("time_budget_s", self.time_budget_s, 0, True),
        ]:
            check_finite(name, value, lo, lo_open=lo_open, where="train-vae")


TRAIN_VAE_PRESETS: dict[str, TrainVAEConfig] = {
    # The original's settings: Adam 1e-4, batch 100, 10 epochs, free bits 0.5.
    "carracing": TrainVAEConfig(),
    "doom": TrainVAEConfig(
        data_dir=DOOM.data,
        run_dir=DOOM.vae_run,
        model=VAEConfig(latent_size=64, kl_tolerance=0.5),
    ),
    # A GPU recipe: large batches with sqrt-scaled lr and a short warm-up.
    "carracing-fast": TrainVAEConfig(batch_size=1024, warmup_steps=100, compile=True),
    # The H100 target: batch 4096, lr 1e-4 * sqrt(4096 / 100) = 6.4e-4, a longer warm-up.
    "carracing-4096": TrainVAEConfig(
        batch_size=4096, lr_scaling="sqrt", warmup_steps=200, compile=True
    ),
    "debug": TrainVAEConfig(
        data_dir=DEBUG.data,
        run_dir=DEBUG.vae_run,
        epochs=1,
        batch_size=16,
        lr=1e-3,
        log_every=5,
        tensorboard=False,
        progress=False,
    ),
}


@dataclass(frozen=True)
class TrainMDNRNNConfig:
    """Everything ``train-mdrnn`` needs; saved as the run folder's config.json. A re-run
    may change the fields marked ``resumable`` (length, hardware, logging)."""

    series_dir: Path = resumable(CARRACING.series)
    """Folder of per-episode .npz series (mu, logvar, action, reward, terminated, truncated)."""
    run_dir: Path = CARRACING.mdrnn_run
    """Output folder; re-running with the same folder resumes from its last checkpoint."""
    model: Annotated[MDNRNNConfig, Flat] = MDNRNNConfig(latent_size=None, action_size=None)
    """The MDN-RNN to train, with its loss weights (sizes None: the series')."""
    seq_len: int = 999
    """Transitions per training window (999 CarRacing, 500 Doom)."""
    batch_size: int = 100
    """Windows per batch (100 in the original)."""
    epochs: int = resumable(40)
    """Passes over the training split's transitions (see the module docstring)."""
    lr: float = 1e-3
    """Adam learning rate."""
    lr_decay: float = 1.0
    """Multiply the learning rate by this after every step (Doom: 0.99999); 1 = constant."""
    min_lr: float = 1e-5
    """Floor of the decayed learning rate."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 = off)."""
    sample_z: bool = True
    """Re-sample z from (mu, logvar) every batch; false trains on mu (see module docstring)."""
    carry_state: bool = False
    """Truncated BPTT: walk episodes in consecutive windows and carry the LSTM state."""
    holdout_fraction: float = 0.1
    """Fraction of episodes held out, chosen by a hash of the file name."""
    seed: int = 0
    """Seed of the weights, the windows and the z noise."""
    device: str | None = resumable(None)
    """cpu, cuda, cuda:1 ...; None picks CUDA when present."""
    bf16: bool = resumable(True)
    """bf16 autocast for the head on CUDA (the LSTM and the losses stay float32: CUDA
    autocast would run cuDNN's LSTM in float16); ignored on CPU."""
    save_every: int = resumable(0)
    """Also save checkpoints/last every this many steps (0 = at epoch ends only)."""
    time_budget_s: float | None = resumable(None)
    """Stop after this many seconds of training in this invocation, checked every step
    (checkpoints/last is saved there; a re-run continues). None: no limit."""
    log_every: int = resumable(50)
    """Steps between progress-bar updates and NaN checks (each costs a device sync)."""
    progress: bool = resumable(True)
    """Show a tqdm progress bar."""
    tensorboard: bool = resumable(True)
    """Write TensorBoard events when the tensorboard package is installed."""

    def __post_init__(self) -> None:
        # one-line errors for settings no run can use, before anything is written
        self.model.validate("train-mdrnn", complete=False)  # sizes: the series'
        rules = [
            (self.seq_len >= 1, "seq_len must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.epochs >= 0, "epochs must be >= 0"),
            (self.lr > 0, "lr must be > 0"),
            (0 < self.lr_decay <= 1, "lr_decay must be in (0, 1]"),
            (self.min_lr >= 0, "min_lr must be >= 0"),
            (self.grad_clip >= 0, "grad_clip must be >= 0 (0: no clipping)"),
            (self.log_every >= 1, "log_every must be >= 1"),
            (self.save_every >= 0, "save_every must be >= 0 (0: at epoch ends only)"),
            (
                self.time_budget_s is None or self.time_budget_s > 0,
                "time_budget_s must be > 0 (or none)",
            ),
            (0 <= self.holdout_fraction < 1, "holdout_fraction must be in [0, 1)"),
        ]
        for ok, message in rules:
            if not ok:
                raise ConfigError(f"train-mdrnn: {message}")
        # nan fails the rules above; inf does not
        for name in ("lr", "min_lr", "grad_clip", "time_budget_s"):
            check_finite(name, getattr(self, name), 0, where="train-mdrnn")


TRAIN_MDNRNN_PRESETS: dict[str, TrainMDNRNNConfig] = {
    "carracing": TrainMDNRNNConfig(),
    "doom": TrainMDNRNNConfig(
        series_dir=DOOM.series,
        run_dir=DOOM.mdrnn_run,
        model=replace(MDNRNN_PRESETS["doom"], latent_size=None, action_size=None),
        seq_len=500,
        epochs=100,
        lr_decay=0.99999,
        min_lr=1e-5,
        carry_state=True,
    ),
    "debug": TrainMDNRNNConfig(
        series_dir=DEBUG.series,
        run_dir=DEBUG.mdrnn_run,
        model=MDNRNNConfig(latent_size=None, action_size=None, hidden_size=32, num_gaussians=3),
        seq_len=16,
        batch_size=8,
        epochs=2,
        log_every=5,
    ),
}
"""CarRacing and Doom as in the paper (Doom's epoch count is ours); debug for tests."""


@dataclass(frozen=True)
class TrainControllerConfig:
    """CMA-ES training of the controller C. A re-run may change the fields marked
    ``resumable``: more generations, and how (not what) the episodes run."""

    target: Target = "dream"
    """Where candidates are scored: inside M's dream (BatchedDream) or in the real env."""
    env: EnvName = "doom"
    """Env preset: the real env (target real, evaluation) and the action mapping."""
    mdrnn: Path = DOOM.mdrnn
    """MDNRNN checkpoint folder (M)."""
    vae: Path | None = DOOM.vae
    """ConvVAE checkpoint folder (V): needed in the real env and to encode first frames."""
    series_dir: Path | None = DOOM.series
    """Encoded series folder; its episodes' first (mu, logvar) start the dreams."""
    data_dir: Path | None = None
    """Dataset folder whose first frames are encoded with V to start the dreams (when no
    series_dir)."""
    run_dir: Path = DOOM.controller_run
    """Run folder: checkpoints, cma_state.npz, metrics; re-running resumes it."""
    generations: int = resumable(2000)
    """Total generations (a re-run may raise it to continue); Doom's 2000 is our choice, the
    paper does not state it."""
    popsize: int = 64
    """Candidates per generation (the original: 64)."""
    rollouts: int = 16
    """Episodes per candidate, the same seeds for all candidates (the original: 16)."""
    sigma0: float = 0.1
    """Initial CMA-ES step size (x0 = 0)."""
    eval_every: int = 25
    """Score the mean parameters every this many generations (the original: 25)."""
    eval_rollouts: int = 1024
    """Episodes of that evaluation (the original: 1024)."""
    dream: Annotated[DreamSettings, Flat] = DreamSettings()
    """How the dream runs (tau, dream_max_steps, done_mode, done_offset, dream_dropout)."""
    rollout: Annotated[RolloutSettings, Flat] = resumable(RolloutSettings())
    """Where real episodes run (workers, envs_per_worker, backend, retries)."""
    model: Annotated[ControllerConfig, Flat] = ControllerConfig(
        latent_size=None, hidden_size=None, output_size=None, action_mode=None
    )
    """The controller to evolve: what it reads (--cell-input: [z, c, h] as the original Doom
    code) and --bias; its sizes and action mode come from M and the env (None)."""
    max_steps: int | None = None
    """Real episodes are truncated here (None: the env's own limit)."""
    stall_steps: int | None = None
    """Real env: end an episode after this many steps in a row without a positive reward
    (CarRacing: no new track tile), to spend no env time on a car lost off the track
    (None: never; evaluate always plays whole episodes)."""
    z_mode: Literal["sample", "mu"] = "sample"
    """Real env: feed C and M sampled z (as the original) or V's mean."""
    max_initial_states: int = 10_000
    """Use the first frames of at most this many episodes to start dreams."""
    device: str | None = resumable(None)
    """cpu, cuda, ...; None picks CUDA when present."""
    cuda_graph: bool = resumable(False)
    """Dream on CUDA: replay the dream loop as CUDA graphs of 50 steps (ignored elsewhere;
    same returns as the eager loop; falls back to it with a warning if capture fails)."""
    seed: int = 0
    """Seed of CMA-ES sampling and of the episodes."""
    time_budget_s: float | None = resumable(None)
    """Stop after this many seconds in this invocation (None: no limit)."""
    progress: bool = resumable(True)
    """Show a progress bar."""
    tensorboard: bool = resumable(True)
    """Write TensorBoard events when tensorboard is installed."""

    def __post_init__(self) -> None:
        self.model.validate("train-controller", complete=False)  # sizes: M's and the env's
        for name in ("popsize", "rollouts", "eval_every", "eval_rollouts", "generations"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.popsize < 2:
            raise ConfigError("CMA-ES needs popsize >= 2")
        check_finite("sigma0", self.sigma0, 0, lo_open=True, where="train-controller")
        check_finite("time_budget_s", self.time_budget_s, 0, lo_open=True, where="train-controller")
        for name in ("max_steps", "stall_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"train-controller: {name} must be >= 1, got {value}")


TRAIN_CONTROLLER_PRESETS: dict[str, TrainControllerConfig] = {
    # Doom: evolved only in the dream, at tau 1.15, C as the original code: [z, c, h], no bias.
    "doom": TrainControllerConfig(
        model=ControllerConfig(
            latent_size=None,
            hidden_size=None,
            output_size=None,
            action_mode=None,
            cell_input=True,
            bias=False,
        )
    ),
    # CarRacing: evolved in the real env (1800 generations in the paper).
    "carracing": TrainControllerConfig(
        target="real",
        env="carracing",
        mdrnn=CARRACING.mdrnn,
        vae=CARRACING.vae,
        series_dir=None,
        run_dir=CARRACING.controller_run,
        generations=1800,
        dream=DreamSettings(tau=1.0),
        rollout=RolloutSettings(env_backend="auto"),  # envpool's env, ~7x faster, if installed
    ),
    "debug": TrainControllerConfig(
        target="dream",
        env="fake",
        mdrnn=DEBUG.mdrnn,
        vae=None,
        series_dir=DEBUG.series,
        run_dir=DEBUG.controller_run,
        generations=3,
        popsize=8,
        rollouts=2,
        eval_every=2,
        eval_rollouts=8,
        dream=DreamSettings(dream_max_steps=50),
        max_steps=50,
        rollout=RolloutSettings(workers=2),
        progress=False,
        tensorboard=False,
    ),
}
