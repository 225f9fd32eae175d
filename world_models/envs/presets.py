"""Environment presets: which env, how its frames become 64x64x3 uint8, what its actions are.

An :class:`EnvPreset` is everything the pipeline knows about one game: its id and maker,
its frames, its action mode (:mod:`world_models.models.actions`), its window's fps and its
folders (:class:`~world_models.core.layout.Layout`). The commands ask the preset, not the
env's name, so :func:`register_preset` adds a game from outside the package
(docs/architecture.md, "How to add an env").

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

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
from PIL import Image

from world_models.core.config import registered
from world_models.core.errors import ConfigError, DataError
from world_models.core.layout import Layout
from world_models.models.actions import ActionMode, get_action_mode

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


EnvMaker = Callable[["EnvPreset", "int | None", "dict[str, Any]"], Any]
"""``make(preset, max_steps, env_kwargs) -> gymnasium.Env``: an env's raw game (its
observations RGB frames, or dicts holding one under ``"screen"``), episodes truncated at
``max_steps`` (None: the env's own limit)."""


@dataclass(frozen=True)
class EnvPreset:
    """A supported environment: everything the pipeline needs to know about one game (its
    id, frames, actions, folders, how to make it). :func:`register_preset` adds one."""

    name: str
    """The env's name (``--env``)."""
    env_id: str
    """Its Gymnasium id."""
    preprocess: Preprocess
    """How its raw frames become 64x64 frames."""
    actions: ActionMode
    """How C drives it (:mod:`world_models.models.actions`): C's output size, its actions
    for M, the dream's and the keyboard's actions, named constant actions."""
    action_dim: int
    """Box: the action vector's length; discrete: the number of actions (stored one-hot)."""
    default_policy: str
    """The random data policy of ``collect`` (brownian, uniform or repeat)."""
    frame_shape: tuple[int, int] | None = None
    """Raw frame (height, width), to check a crop before any env starts (None: unknown)."""
    module: str | None = None
    """Module to import (via ``errors.require``) before the env can be made."""
    extra: str | None = None
    """The pip extra that provides ``module``."""
    env_kwargs: tuple[tuple[str, Any], ...] = ()
    """Settings given to the env's constructor (how the game renders; recorded in every
    dataset's manifest); a caller's own ``env_kwargs`` override them."""
    make: EnvMaker | None = None
    """Builds the raw env (:data:`EnvMaker`); None: ``gymnasium.make(env_id)``."""
    fps: int = 30
    """Frames per second of ``play`` windows and of videos."""
    time_limit: int | None = None
    """Steps after which an episode ends truncated (the env's TimeLimit, or the original's
    rollout loop), recorded by ``data import``; None: unknown."""
    action_classes: tuple[str, ...] = ()
    """Names of the discrete actions, recorded in every dataset's manifest (Doom: its
    datasets from before the DoomActions wrapper, without them, have left and right
    swapped)."""
    envpool: bool = False
    """envpool has this env (``--env-backend envpool``; only CarRacing)."""
    game_process: bool = False
    """The game runs as a process of its own (VizDoom): ``collect`` runs it in a worker
    even alone, so the game dies with the command."""
    layout: Layout = field(default=None)  # type: ignore[assignment]
    """The folders of its command presets (None: ``data/<name>``, ``runs/vae-<name>``, ...)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "actions", get_action_mode(self.actions))
        if self.layout is None:
            object.__setattr__(self, "layout", Layout.standalone(self.name, f"-{self.name}"))
        self.actions.outputs(self.action_dim)  # a mode that cannot drive it fails here

    @property
    def action_kind(self) -> ActionKind:
        """``discrete`` (int indices, stored one-hot) or ``box`` (float vectors)."""
        return "discrete" if self.actions.discrete else "box"

    @property
    def action_mode(self) -> str:
        """The name of its action mode (what a controller's config.json stores)."""
        return self.actions.name

    @property
    def controller_outputs(self) -> int:
        """C's output size for this env (1 for Doom's thirds)."""
        return self.actions.outputs(self.action_dim)

    def action_space(self):
        """Its Gymnasium action space (the dream's, without making the env)."""
        return self.actions.space(self.action_dim)


def _make_fake(preset: EnvPreset, max_steps: int | None, env_kwargs: dict[str, Any]):
    from world_models.envs.make import make_fake

    return make_fake(preset, max_steps, env_kwargs)


def _make_vizdoom(preset: EnvPreset, max_steps: int | None, env_kwargs: dict[str, Any]):
    from world_models.envs.make import make_vizdoom

    return make_vizdoom(preset, max_steps, env_kwargs)


CARRACING = EnvPreset(
    name="carracing",
    env_id="CarRacing-v3",
    preprocess=Preprocess(crop=(0, 84, 0, 96), size=64, resample="bilinear"),
    actions=get_action_mode("carracing"),
    action_dim=3,
    default_policy="brownian",
    frame_shape=(96, 96),
    module="Box2D",
    extra="box2d",
    fps=50,
    time_limit=1000,
    envpool=True,
    layout=Layout.standalone("carracing"),  # the first game: its runs have no tag
)
DOOM = EnvPreset(
    name="doom",
    env_id="VizdoomTakeCover-v1",
    preprocess=Preprocess(crop=None, size=64, resample="bilinear"),
    actions=get_action_mode("thirds"),
    action_dim=3,  # Discrete(3): 0 = stay, 1 = MOVE_LEFT, 2 = MOVE_RIGHT
    default_policy="repeat",
    frame_shape=(120, 160),
    module="vizdoom",
    extra="doom",
    env_kwargs=(("screen_resolution", "RES_160X120"), ("render_screen_flashes", True)),
    make=_make_vizdoom,
    fps=35,
    time_limit=2100,
    action_classes=("stay", "left", "right"),
    game_process=True,
)
DEBUG_LAYOUT = Layout.standalone("debug", "-debug")
"""The folders of the commands' debug presets (the fake envs)."""


def _fake(real: EnvPreset, name: str, env_id: str) -> EnvPreset:
    """A fake env (envs/fake.py, nothing to install) with ``real``'s preprocessing and
    actions; its frames are 96x96, whatever ``real``'s raw frame shape."""
    return replace(
        real,
        name=name,
        env_id=env_id,
        frame_shape=None,
        module=None,
        extra=None,
        env_kwargs=(),
        make=_make_fake,
        fps=EnvPreset.fps,
        time_limit=None,
        action_classes=(),
        envpool=False,
        game_process=False,
        layout=DEBUG_LAYOUT,
    )


# The fake env emits CarRacing-sized 96x96 frames and uses the same crop.
FAKE = _fake(CARRACING, "fake", "world_models/Fake-v0")
FAKE_DISCRETE = _fake(DOOM, "fake-discrete", "world_models/FakeDiscrete-v0")


ENV_PRESETS: dict[str, EnvPreset] = {p.name: p for p in (CARRACING, DOOM, FAKE, FAKE_DISCRETE)}
"""The env presets by name (the fake ones are tiny envs for tests)."""

LAYOUTS: dict[str, Layout] = {
    "carracing": CARRACING.layout,
    "doom": DOOM.layout,
    "debug": DEBUG_LAYOUT,
}
"""The folders of the commands' presets, by preset name: what ``collect --preset doom``
writes, ``train-vae --preset doom`` reads, and so on down the pipeline."""


def register_preset(preset: EnvPreset, *, overwrite: bool = False) -> EnvPreset:
    """Make ``preset`` known by its name to every command (``--env NAME``) and worker
    process; a name already taken by another preset is a ConfigError unless ``overwrite``."""
    known = ENV_PRESETS.get(preset.name)
    if known is not None and known != preset and not overwrite:
        raise ConfigError(f"env preset {preset.name!r} is already registered")
    ENV_PRESETS[preset.name] = preset
    return preset


def get_preset(name: str) -> EnvPreset:
    try:
        return ENV_PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown env {name!r}; choose one of {sorted(ENV_PRESETS)}") from None


EnvName = registered(ENV_PRESETS, get_preset)
"""The name of an env preset (:data:`ENV_PRESETS`); ``--help`` lists the built-in ones."""


_FILTERS = {"bilinear": 2, "lanczos": 1, "box": 4, "bicubic": 3, "nearest": 0}  # PIL codes


def preprocess_frame(frame: np.ndarray, pre: Preprocess) -> np.ndarray:
    """Crop and resize one raw RGB frame (H, W, 3) uint8 -> (size, size, 3) uint8."""
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise DataError(f"expected an (H, W, 3) uint8 frame, got {frame.shape} {frame.dtype}")
    return preprocess_frames(frame[None], pre)[0]


def preprocess_frames(frames: np.ndarray, pre: Preprocess) -> np.ndarray:
    """:func:`preprocess_frame` for a batch (T, H, W, 3) uint8 -> (T, size, size, 3) uint8,
    the same values; in one call a Doom frame costs a third of its own call's time."""
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
        raise DataError(f"expected (T, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    if pre.crop is not None:
        top, bottom, left, right = pre.crop
        if bottom > frames.shape[1] or right > frames.shape[2]:
            raise DataError(
                f"frame of shape {frames.shape[1:3]} is smaller than the crop {list(pre.crop)}"
            )
        frames = frames[:, top:bottom, left:right]  # (T, 84, 96, 3) for CarRacing
    frames = np.ascontiguousarray(frames)
    if frames.shape[1:3] == (pre.size, pre.size):
        return frames
    if pre.resample == "bilinear":
        return _resize_bilinear(frames, pre.size)
    size, f = (pre.size, pre.size), _FILTERS[pre.resample]
    return np.stack([np.asarray(Image.fromarray(x).resize(size, resample=f)) for x in frames])


def _resize_bilinear(frames: np.ndarray, size: int) -> np.ndarray:
    """PIL's antialiased bilinear resize by torch's uint8 kernel (written to match PIL): a
    third of PIL's CPU time a 160x120 Doom frame (0.08 against 0.25 ms), a tenth in
    batches, where PIL took a quarter of a collection's time; values differ from PIL's by
    at most 1, on ~0.6% of them (tests/test_envs_fake.py)."""
    import torch  # late: a command that never resizes a frame does not load torch for it

    x = torch.from_numpy(frames).permute(0, 3, 1, 2)  # (T, 3, H, W), channels-last strides
    y = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    return np.ascontiguousarray(y.permute(0, 2, 3, 1).numpy())  # (T, S, S, 3) uint8
