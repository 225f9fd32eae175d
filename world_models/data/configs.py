"""Configs of collection and encoding, with their presets; torch-free (the CLI reads them
for ``--help``). ``collect`` and ``encode`` re-export their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from world_models.core.config import Hidden, Positional, check_finite
from world_models.core.errors import ConfigError
from world_models.envs.presets import (
    LAYOUTS,
    EnvName,
    EnvPreset,
    Preprocess,
    Resample,
    get_preset,
)

CARRACING, DOOM, DEBUG = LAYOUTS["carracing"], LAYOUTS["doom"], LAYOUTS["debug"]


@dataclass(frozen=True)
class CollectConfig:
    """Options of ``world-models collect``."""

    out_dir: Path | None = None
    """Folder of the episode store (created; re-running tops it up). None: data/ENV."""
    env: EnvName = "carracing"
    """Environment preset (fake ones are tiny built-in envs for tests)."""
    episodes: int = 100
    """Total number of episodes wanted in out_dir."""
    max_steps: int | None = None
    """Truncate episodes after this many steps (None: the env's own limit)."""
    policy: Literal["brownian", "uniform", "repeat"] | None = None
    """Random data policy (None: the env's default: brownian for CarRacing, repeat for Doom)."""
    seed: int = 0
    """Base seed (>= 0): episode i seeds its env and policy from SeedSequence([seed, i])."""
    workers: int = 0
    """Worker processes (0: all cores; 1: collect in this process)."""
    backend: Literal["gymnasium", "envpool", "auto"] = "gymnasium"
    """Environment backend (envpool: optional, CarRacing only, other tracks for a seed;
    auto: envpool where it is installed and has the env)."""
    crop: tuple[int, ...] | None = None
    """Raw-frame crop top,bottom,left,right (None: the env's, CarRacing 0,84,0,96)."""
    frame_size: int = 64
    """Side of the stored square frames."""
    resample: Resample = "bilinear"
    """PIL resize filter (antialiased): bilinear (as the original), lanczos, box, bicubic."""
    dt: float = 1 / 50
    """Time step of the Brownian policy (the original's 1/50)."""
    max_repeat: int = 10
    """The repeat policy holds each random action for 1..max_repeat frames."""
    controller: Path | None = None
    """Collect with this controller checkpoint instead (the paper's iterative training: new
    data where the evolved C goes); needs --vae and --mdrnn."""
    vae: Path | None = None
    """With --controller: the VAE checkpoint C's world model encodes frames with."""
    mdrnn: Path | None = None
    """With --controller: the MDN-RNN checkpoint whose LSTM state C reads."""
    explore: float = 0.1
    """With --controller: chance per step of the random data policy's action instead."""
    compress_level: int = 1
    """Deflate level of the episode files, 0-9 (1: fast; 6 makes ~10% smaller files and a
    Doom collection ~1.4x slower)."""
    verify: bool = True
    """On a re-run, inflate the episodes already there and check their CRCs (~40 ms per
    1,000 steps, in threads), re-collecting damaged ones; false reads their headers only
    (instant, but damage inside the compressed data goes unseen)."""
    progress: bool = True
    """Show a progress bar (episodes, steps/s)."""
    env_kwargs: Annotated[dict[str, Any], Hidden] = field(default_factory=dict)
    """Extra keyword arguments of the env's constructor (tests: the fake env's knobs)."""

    def __post_init__(self) -> None:
        if self.out_dir is None:
            object.__setattr__(self, "out_dir", Path("data") / self.env)
        if not 0 <= self.compress_level <= 9:
            raise ConfigError(f"compress_level must be in 0..9, got {self.compress_level}")
        check_finite("dt", self.dt, 0, lo_open=True, where="collect")
        check_finite("explore", self.explore, 0, 1, where="collect")

    def env_preset(self) -> EnvPreset:
        return get_preset(self.env)

    def preprocess(self) -> Preprocess:
        crop = self.crop if self.crop is not None else self.env_preset().preprocess.crop
        if crop is not None and len(crop) != 4:
            raise ConfigError(f"crop needs 4 numbers top,bottom,left,right, got {list(crop)}")
        pre = Preprocess(
            crop=tuple(crop) if crop else None, size=self.frame_size, resample=self.resample
        )
        pre.check_frame(self.env_preset().frame_shape)  # now, not in a worker's first frame
        return pre

    def policy_name(self) -> str:
        return self.policy or self.env_preset().default_policy

    def world_model(self) -> dict[str, Path] | None:
        """The V, M and C checkpoints to collect with, or None for the random policy."""
        paths = {"vae": self.vae, "mdrnn": self.mdrnn, "controller": self.controller}
        if self.controller is None:
            return None
        missing = [f"--{k}" for k, v in paths.items() if v is None]
        if missing:
            raise ConfigError(f"collect --controller needs {' and '.join(missing)} as well")
        for k, v in paths.items():
            if not (Path(v) / "model.safetensors").is_file():
                raise ConfigError(f"--{k} {v}: no checkpoint there (model.safetensors missing)")
        if not 0.0 <= self.explore <= 1.0:
            raise ConfigError(f"collect: explore must be in [0, 1], got {self.explore}")
        return paths  # type: ignore[return-value]


COLLECT_PRESETS: dict[str, CollectConfig] = {
    "carracing": CollectConfig(out_dir=CARRACING.data, env="carracing", episodes=10_000),
    # TakeCover has no time limit of its own: use the 2100 steps at which the dream ends
    "doom": CollectConfig(out_dir=DOOM.data, env="doom", episodes=10_000, max_steps=2100),
    "debug": CollectConfig(out_dir=DEBUG.data, env="fake", episodes=8, max_steps=50),
}


@dataclass(frozen=True)
class EncodeConfig:
    """Options of ``world-models encode``."""

    data_dir: Path = CARRACING.data
    """Dataset folder of episodes (ep_*.npz)."""
    vae: Path = CARRACING.vae
    """ConvVAE checkpoint folder."""
    out_dir: Path = CARRACING.series
    """Series folder to write (re-running resumes it)."""
    batch_size: int = 0
    """Frames per forward pass (episodes are packed into chunks of exactly this size);
    0: 4096 on a GPU, 128 on a CPU (where small batches stay in cache and run faster)."""
    device: str | None = None
    """cpu or cuda (None: CUDA when present)."""
    amp: bool | None = None
    """bf16 autocast for the conv layers (None: on for CUDA); fc_mu/fc_logvar run in float32
    and mu/logvar are stored as float16."""
    io_threads: int = 0
    """Threads reading npz files (0: one per core, at least 2); half as many write."""
    skip_bad: bool = False
    """Skip unreadable episodes with a warning instead of stopping."""
    progress: bool = True
    """Show a progress bar (episodes written)."""

    def __post_init__(self) -> None:
        checks = [("batch_size", self.batch_size >= 0), ("io_threads", self.io_threads >= 0)]
        bad = [f"{name}={getattr(self, name)!r}" for name, ok in checks if not ok]
        if bad:
            raise ConfigError(f"invalid encode settings: {', '.join(bad)}")


ENCODE_PRESETS = {
    "carracing": EncodeConfig(),
    "doom": EncodeConfig(data_dir=DOOM.data, vae=DOOM.vae, out_dir=DOOM.series),
    "debug": EncodeConfig(data_dir=DEBUG.data, vae=DEBUG.vae, out_dir=DEBUG.series, batch_size=256),
}


@dataclass(frozen=True)
class DataInfoConfig:
    """Options of ``world-models data info``."""

    data_dir: Annotated[Path, Positional]
    """Folder of ep_*.npz files."""
    verify: bool = True
    """Decode every episode (returns, CRCs); --no-verify checks only the file headers."""


@dataclass(frozen=True)
class DataImportConfig:
    """Options of ``world-models data import``."""

    src: Annotated[Path, Positional]
    """An .npz file, or a folder searched recursively."""
    data_dir: Annotated[Path, Positional]
    """Episode store to write."""
    env: Literal["carracing", "doom"] = "carracing"
    """Preset whose crop and resize apply to frames not already 64x64."""
    skip_bad: bool = False
    """Skip source files that cannot be read or converted, with a warning, instead of failing."""
