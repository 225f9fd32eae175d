"""Environment presets: which env, how its frames become 64x64x3 uint8, what its actions are.

The preprocessing follows the original code: CarRacing keeps the top 84 rows of the 96x96
frame (the dashboard is cut off) and resizes 84x96 -> 64x64; Doom resizes the whole screen,
rendered at 160x120 (the 320x240 of VizDoom's config costs twice the time per frame and
resizes to nearly the same 64x64 picture) with its damage flashes on (the original's game
showed them; they are the one sign of a hit on screen, the HUD being off). The original
called ``scipy.misc.imresize``, which is PIL's bilinear resize; modern
PIL's bilinear filter widens its support when downsampling, so it is antialiased. The
resampling filter is configurable and recorded in every dataset's manifest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np
from PIL import Image

from world_models.core.errors import ConfigError, DataError

EnvName = Literal["carracing", "doom", "fake", "fake-discrete"]
"""The env presets by name (:data:`ENV_PRESETS`; the fake ones are tiny envs for tests)."""
Resample = Literal["bilinear", "lanczos", "box", "bicubic", "nearest"]
ActionKind = Literal["box", "discrete"]


@dataclass(frozen=True)
class Preprocess:
    """How a raw RGB frame becomes a (size, size, 3) uint8 frame."""

    crop: tuple[int, int, int, int] | None = None
    """Rows top:bottom and columns left:right of the raw frame to keep; None keeps it all."""
    size: int = 64
    """Side of the square output frame."""
    resample: Resample = "bilinear"
    """PIL resampling filter (antialiased when downsampling, except 'nearest')."""

    def __post_init__(self) -> None:
        if self.crop is not None:
            top, bottom, left, right = self.crop
            if not (0 <= top < bottom and 0 <= left < right):
                # numpy would slice an inverted crop to an empty frame, stored as zeros
                raise ConfigError(
                    f"crop top,bottom,left,right needs 0 <= top < bottom and "
                    f"0 <= left < right, got {list(self.crop)}"
                )
        if self.size < 1:
            raise ConfigError(f"frame size must be >= 1, got {self.size}")

    def check_frame(self, shape: tuple[int, int] | None) -> None:
        """ConfigError now if the crop does not fit raw frames of ``shape`` (None: unknown)."""
        if self.crop is not None and shape is not None:
            if self.crop[1] > shape[0] or self.crop[3] > shape[1]:
                raise ConfigError(
                    f"crop {list(self.crop)} does not fit the env's {shape[0]}x{shape[1]} "
                    f"frames (rows top:bottom, columns left:right)"
                )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["crop"] = list(self.crop) if self.crop is not None else None
        return d

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        return preprocess_frame(frame, self)


@dataclass(frozen=True)
class EnvPreset:
    """A supported environment: Gymnasium id, optional extra, frames and actions."""

    name: str
    env_id: str
    preprocess: Preprocess
    action_kind: ActionKind
    action_dim: int
    """Box: the action vector's length; discrete: the number of actions (stored one-hot)."""
    default_policy: str
    frame_shape: tuple[int, int] | None = None
    """Raw frame (height, width), to check a crop before any env starts (None: unknown)."""
    module: str | None = None
    """Module to import (via ``errors.require``) before the env can be made."""
    extra: str | None = None
    """The pip extra that provides ``module``."""
    env_kwargs: tuple[tuple[str, Any], ...] = ()
    """Settings given to the env's constructor (how the game renders; recorded in every
    dataset's manifest); a caller's own ``env_kwargs`` override them."""

    @property
    def action_mode(self) -> str:
        """How C's outputs in [-1, 1] become this env's actions
        (:func:`world_models.models.controller.map_actions`)."""
        return mode_for_env(self.action_kind, self.action_dim)[1]

    @property
    def controller_outputs(self) -> int:
        """C's output size for this env (1 for Doom's thirds)."""
        return mode_for_env(self.action_kind, self.action_dim)[0]


CARRACING = EnvPreset(
    name="carracing",
    env_id="CarRacing-v3",
    preprocess=Preprocess(crop=(0, 84, 0, 96), size=64, resample="bilinear"),
    action_kind="box",
    action_dim=3,
    default_policy="brownian",
    frame_shape=(96, 96),
    module="Box2D",
    extra="box2d",
)
DOOM = EnvPreset(
    name="doom",
    env_id="VizdoomTakeCover-v1",
    preprocess=Preprocess(crop=None, size=64, resample="bilinear"),
    action_kind="discrete",
    action_dim=3,  # Discrete(3): 0 = stay, 1 = MOVE_LEFT, 2 = MOVE_RIGHT
    default_policy="repeat",
    frame_shape=(120, 160),
    module="vizdoom",
    extra="doom",
    env_kwargs=(("screen_resolution", "RES_160X120"), ("render_screen_flashes", True)),
)


def _fake(real: EnvPreset, name: str, env_id: str) -> EnvPreset:
    """A fake env (envs/fake.py, nothing to install) with ``real``'s preprocessing and
    actions; its frames are 96x96, whatever ``real``'s raw frame shape."""
    return replace(
        real, name=name, env_id=env_id, frame_shape=None, module=None, extra=None, env_kwargs=()
    )


# The fake env emits CarRacing-sized 96x96 frames and uses the same crop.
FAKE = _fake(CARRACING, "fake", "world_models/Fake-v0")
FAKE_DISCRETE = _fake(DOOM, "fake-discrete", "world_models/FakeDiscrete-v0")


def mode_for_env(action_kind: str, action_dim: int) -> tuple[int, str]:
    """``(output_size, action_mode)`` for an env preset's action kind and size."""
    if action_kind == "discrete":
        if action_dim != 3:
            raise ValueError(f"the thirds mapping needs Discrete(3), got Discrete({action_dim})")
        return 1, "thirds"
    return action_dim, "carracing" if action_dim == 3 else "tanh"


ENV_PRESETS: dict[str, EnvPreset] = {p.name: p for p in (CARRACING, DOOM, FAKE, FAKE_DISCRETE)}


def get_preset(name: str) -> EnvPreset:
    try:
        return ENV_PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown env {name!r}; choose one of {sorted(ENV_PRESETS)}") from None


_FILTERS = {"bilinear": 2, "lanczos": 1, "box": 4, "bicubic": 3, "nearest": 0}  # PIL codes


def preprocess_frame(frame: np.ndarray, pre: Preprocess) -> np.ndarray:
    """Crop and resize one raw RGB frame (H, W, 3) uint8 -> (size, size, 3) uint8."""

    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise DataError(f"expected an (H, W, 3) uint8 frame, got {frame.shape} {frame.dtype}")
    if pre.crop is not None:
        top, bottom, left, right = pre.crop
        if bottom > frame.shape[0] or right > frame.shape[1]:
            raise DataError(
                f"frame of shape {frame.shape[:2]} is smaller than the crop {list(pre.crop)}"
            )
        frame = frame[top:bottom, left:right]  # (84, 96, 3) for CarRacing
    if frame.shape[:2] == (pre.size, pre.size):
        return np.ascontiguousarray(frame)
    img = Image.fromarray(np.ascontiguousarray(frame))
    return np.asarray(img.resize((pre.size, pre.size), resample=_FILTERS[pre.resample]))
