"""Action modes: how C's outputs in [-1, 1] become an env's actions, and everything else
that depends on the form of those actions, in one object per mode.

An :class:`ActionMode` answers, for one kind of action:

* ``outputs(action_dim)``: how many outputs C needs, and ``check_outputs``;
* ``to_env(raw)``: C's raw outputs (..., A) -> env actions (float (..., A), or (...) int64
  indices for a discrete mode);
* ``to_model(action, size)``: env actions -> M's input (..., size), in the form ``collect``
  stored them (``model_sizes`` lists the sizes that fit);
* ``space(action_dim)``: the Gymnasium action space (the dream's, the baselines');
* ``keys(held)`` / ``keys_help``: the keyboard's action for ``world-models play``;
* ``fixed``: named constant actions (Doom's stay / left / right baselines).

The modes, as in the original:

* ``carracing`` (3 outputs): steer = a0 in [-1, 1], gas = (a1 + 1) / 2 in [0, 1],
  brake = clip(a2, 0, 1).
* ``thirds`` (Doom, 1 output): a < -1/3 is MOVE_LEFT, a > 1/3 is MOVE_RIGHT, in between
  stay; returned as the Doom preset's ``Discrete(3)`` index (0 stay, 1 left, 2 right).
* ``tanh``: the raw outputs in [-1, 1] (any other Box action space).

Another env's mode is one more subclass given to :func:`register_action_mode`; its name is
what a controller's ``config.json`` stores. Torch and Gymnasium are imported inside the
methods: the configs that name a mode are read by ``--help`` without them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from world_models.core.errors import ConfigError

if TYPE_CHECKING:
    import torch

DOOM_STAY, DOOM_LEFT, DOOM_RIGHT = 0, 1, 2
"""The Doom preset's Discrete(3) indices (envs/presets.py)."""

LEFT, RIGHT, UP, DOWN = "left", "right", "up", "down"
"""The movement keys a keyboard reports (play/keys.py: arrows or W A S D)."""
BRAKE = 0.8
"""Brake while down is held (CarRacing's keyboard demo: 0.8, so the wheels do not lock)."""


def _last_turn(held: Iterable[str]) -> str | None:
    """Left or right, the one pressed last (None: neither held)."""
    turn = [k for k in held if k in (LEFT, RIGHT)]
    return turn[-1] if turn else None


class ActionMode:
    """How C drives one kind of env action; see the module docstring. Subclasses set
    ``name`` and ``discrete`` and override what differs from raw Box actions."""

    name: str = ""
    """The mode's name, as a controller's config.json stores it."""
    discrete: bool = False
    """Env actions are (...) int64 indices (one-hot for M), not float vectors."""
    keys_help: str | None = None
    """The key line ``play`` shows; None: no keyboard mapping."""
    fixed: Mapping[str, Any] = {}
    """Named constant actions (baseline policies), by name."""

    def outputs(self, action_dim: int) -> int:
        """C's output size for an env with ``action_dim`` actions (Box: the vector's
        length; discrete: the number of actions)."""
        return action_dim

    def check_outputs(self, output_size: int) -> None:
        """ValueError if a controller of ``output_size`` outputs cannot use this mode."""

    def to_env(self, raw: torch.Tensor) -> torch.Tensor:
        """C's raw outputs (..., A) in [-1, 1] -> env actions (..., A) float."""
        return raw

    def model_sizes(self, action_dim: int) -> tuple[int, ...]:
        """The action sizes an M trained on this env's data can have."""
        return (action_dim,)

    def to_model(self, action: torch.Tensor, size: int) -> torch.Tensor:
        """Env actions (..., A) -> M's input (..., size) float."""
        if action.shape[-1] != size:
            given = action.shape[-1]
            raise ValueError(f"M takes actions of size {size}, the controller gives {given}")
        return action.float()

    def space(self, action_dim: int):
        """The Gymnasium action space of an env with ``action_dim`` actions."""
        from gymnasium import spaces

        return spaces.Box(-1.0, 1.0, (action_dim,), np.float32)

    def keys(self, held: Iterable[str]) -> np.ndarray:
        """The env action for the movement keys ``held`` (oldest first)."""
        raise ConfigError(f"no keyboard mapping for action mode {self.name!r}")

    def __repr__(self) -> str:
        return f"<action mode {self.name!r}>"


class CarRacingActions(ActionMode):
    """CarRacing's Box([-1, 0, 0], [1, 1, 1]): steer, gas, brake from 3 outputs."""

    name = "carracing"
    keys_help = "arrows: steer, gas, brake  R restart  Esc quit"
    LOW = np.array([-1.0, 0.0, 0.0], np.float32)
    HIGH = np.array([1.0, 1.0, 1.0], np.float32)

    def check_outputs(self, output_size: int) -> None:
        if output_size != 3:
            raise ValueError(f"action_mode carracing needs 3 outputs, got {output_size}")

    def to_env(self, raw: torch.Tensor) -> torch.Tensor:
        import torch

        steer = raw[..., 0]
        gas = (raw[..., 1] + 1.0) / 2.0
        brake = raw[..., 2].clamp(0.0, 1.0)
        return torch.stack([steer, gas, brake], dim=-1)  # (..., 3)

    def space(self, action_dim: int):
        from gymnasium import spaces

        return spaces.Box(self.LOW, self.HIGH, dtype=np.float32)

    def keys(self, held: Iterable[str]) -> np.ndarray:
        held = list(held)
        steer = {LEFT: -1.0, RIGHT: 1.0, None: 0.0}[_last_turn(held)]
        gas = 1.0 if UP in held else 0.0
        brake = BRAKE if DOWN in held else 0.0
        return np.array([steer, gas, brake], np.float32)


class ThirdsActions(ActionMode):
    """Doom TakeCover's Discrete(3) (0 stay, 1 left, 2 right) from one output."""

    name = "thirds"
    discrete = True
    keys_help = "left/right arrows move  R restart  Esc quit"
    fixed = {"stay": DOOM_STAY, "left": DOOM_LEFT, "right": DOOM_RIGHT}

    def outputs(self, action_dim: int) -> int:
        if action_dim != 3:
            raise ConfigError(f"the thirds mapping needs Discrete(3), got Discrete({action_dim})")
        return 1

    def check_outputs(self, output_size: int) -> None:
        if output_size != 1:
            raise ValueError(f"action_mode thirds needs 1 output, got {output_size}")

    def to_env(self, raw: torch.Tensor) -> torch.Tensor:
        a = raw[..., 0]
        # arithmetic on the two masks (DOOM_STAY is 0): fewer kernels than torch.where
        # chains, and the dream runs this every step
        return DOOM_LEFT * (a < -1.0 / 3.0).long() + DOOM_RIGHT * (a > 1.0 / 3.0).long()

    def model_sizes(self, action_dim: int) -> tuple[int, ...]:
        return (1, 3)  # the original's scalar, or collect's one-hot

    def to_model(self, action: torch.Tensor, size: int) -> torch.Tensor:
        import torch

        # Arithmetic, not a lookup table or F.one_hot: no host->device copy or value check,
        # so this also runs inside a CUDA graph capture.
        if size == 1:
            scalar = (action == DOOM_RIGHT).float() - (action == DOOM_LEFT).float()
            return scalar.unsqueeze(-1)  # (..., 1): stay 0, left -1, right +1
        if size == 3:
            classes = torch.arange(3, device=action.device)
            return (action.unsqueeze(-1) == classes).float()  # (..., 3) one-hot
        raise ValueError(f"a Doom M takes actions of size 1 or 3, this one takes {size}")

    def space(self, action_dim: int):
        from gymnasium import spaces

        return spaces.Discrete(3)

    def keys(self, held: Iterable[str]) -> np.ndarray:
        # both held: the one pressed last wins; none: stay
        a = {LEFT: DOOM_LEFT, RIGHT: DOOM_RIGHT, None: DOOM_STAY}[_last_turn(held)]
        return np.array(a, np.int64)


class TanhActions(ActionMode):
    """Any Box [-1, 1]^A: C's raw outputs."""

    name = "tanh"


ACTION_MODES: dict[str, ActionMode] = {}
"""The action modes by name (:func:`register_action_mode` adds one)."""


def register_action_mode(mode: ActionMode) -> ActionMode:
    """Make ``mode`` known by its name (what controllers' config.json files store)."""
    if not mode.name:
        raise ConfigError(f"{type(mode).__name__} has no name")
    known = ACTION_MODES.get(mode.name)
    if known is not None and type(known) is not type(mode):
        raise ConfigError(f"action mode {mode.name!r} is already {type(known).__name__}")
    ACTION_MODES[mode.name] = mode
    return mode


for _mode in (CarRacingActions(), ThirdsActions(), TanhActions()):
    register_action_mode(_mode)


def get_action_mode(mode: str | ActionMode) -> ActionMode:
    """The mode named ``mode`` (a mode is returned as is); ConfigError if unknown."""
    if isinstance(mode, ActionMode):
        return mode
    try:
        return ACTION_MODES[mode]
    except KeyError:
        raise ConfigError(
            f"unknown action_mode {mode!r}; choose one of {sorted(ACTION_MODES)}"
        ) from None
