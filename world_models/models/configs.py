"""Configs of the three networks (V, M, C) and the paper's presets; torch-free, so the
CLI can show them without importing torch. Each model module re-exports its own.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from world_models.core.config import Hidden, alias, check_finite, registered
from world_models.core.errors import ConfigError
from world_models.models.actions import ACTION_MODES, get_action_mode

_C = TypeVar("_C")


def _checked_sizes(config: _C, lowest: dict[str, int], where: str, complete: bool) -> _C:
    """``config`` with its size fields (``lowest``: name -> smallest allowed) as ints, or a
    :class:`ConfigError` naming the first that is not a whole number that large; None
    passes unless ``complete`` (a trainer's config leaves the data's sizes unset)."""
    sizes: dict[str, Any] = {}
    for name, lo in lowest.items():
        value = getattr(config, name)
        if value is None and not complete:
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (number and math.isfinite(value)) or int(value) != value or value < lo:
            prefix = f"{where}: " if where else ""
            raise ConfigError(f"{prefix}{name} must be an integer >= {lo}, got {value!r}")
        sizes[name] = int(value)
    return dataclasses.replace(config, **sizes)  # type: ignore[type-var]


@dataclass(frozen=True)
class VAEConfig:
    """Constructor arguments of :class:`ConvVAE`; saved as the checkpoint's config.json."""

    latent_size: int = 32
    """Dimension of the latent code z (32 for CarRacing, 64 for Doom in the paper)."""
    input_channels: int = 3
    """Channels of the 64x64 input frames (3 for RGB)."""
    kl_tolerance: float = 0.0
    """Free bits: floor each sample's total KL at kl_tolerance * latent_size nats (the
    original used 0.5); 0 disables it, as in the seed."""
    uint8_input: Annotated[bool, Hidden] = False
    """Accept uint8 frames in [0, 255] and scale them to [0, 1] on the model's device (not
    a flag: train-vae always feeds uint8)."""

    def validate(self, where: str = "", complete: bool = True) -> VAEConfig:
        """This config, checked (the one place ConvVAE's hyper-parameters are), sizes as
        ints; a :class:`ConfigError` (a ``ValueError``) starting with ``where`` otherwise."""
        config = _checked_sizes(self, {"latent_size": 1, "input_channels": 1}, where, complete)
        check_finite("kl_tolerance", self.kl_tolerance, 0, where=where)
        return dataclasses.replace(config, kl_tolerance=float(self.kl_tolerance))


@dataclass(frozen=True)
class MDNRNNConfig:
    """Constructor arguments of :class:`MDNRNN`; saved as the checkpoint's config.json."""

    latent_size: int | None = 32
    """Dimension of z (32 for CarRacing, 64 for Doom in the paper); None: the trainer takes
    it from the series (a model needs a number)."""
    action_size: int | None = 3
    """Dimension of the action vector: 3 for CarRacing (steer, gas, brake) and 3 for Doom,
    whose Discrete(3) action our collector stores one-hot (the original fed one number);
    None: the trainer takes it from the series."""
    hidden_size: int = 256
    """Units of the single-layer LSTM (256 for CarRacing, 512 for Doom)."""
    num_gaussians: int = 5
    """Mixture components K per latent dimension (5 in the paper)."""
    reward_head: bool = False
    """Also predict the reward after each action (trained with MSE)."""
    done_head: bool = False
    """Also predict termination after each action as a logit (BCE; the Doom dream ends
    when it is > 0)."""
    done_pos_weight: float = 1.0
    """Weight of positive (terminal) steps in the done BCE; the original used 10 for Doom
    because deaths are rare."""
    reward_weight: float = 1.0
    """Weight of the reward MSE in the total loss."""
    done_weight: float = 1.0
    """Weight of the done BCE in the total loss."""
    dropout: float = 0.0
    """Dropout on the LSTM's output h before the heads, in training. A dream can keep it on
    with one mask per rollout (Wellmer & Kwok's "Dropout's Dream Land", 2021), so each
    rollout meets a slightly different M."""
    shared_mixture: bool = False
    """One set of K mixture weights for all of z's dimensions (ctallec's port): each step
    picks one component for the whole z, so a sampled future is one coherent scene; off:
    K weights per dimension, as the original."""

    def validate(self, where: str = "", complete: bool = True) -> MDNRNNConfig:
        """This config, checked (the one place MDNRNN's hyper-parameters are), sizes as
        ints; a :class:`ConfigError` (a ``ValueError``) starting with ``where`` otherwise.
        Without ``complete``, unset (None) sizes pass."""
        lowest = {"latent_size": 1, "action_size": 1, "hidden_size": 1, "num_gaussians": 1}
        config = _checked_sizes(self, lowest, where, complete)
        check_finite("done_pos_weight", self.done_pos_weight, 0, lo_open=True, where=where)
        check_finite("reward_weight", self.reward_weight, 0, where=where)
        check_finite("done_weight", self.done_weight, 0, where=where)
        check_finite("dropout", self.dropout, 0, 1, hi_open=True, where=where)
        return config


MDNRNN_PRESETS: dict[str, MDNRNNConfig] = {
    "carracing": MDNRNNConfig(latent_size=32, action_size=3, hidden_size=256),
    "doom": MDNRNNConfig(
        latent_size=64, action_size=3, hidden_size=512, done_head=True, done_pos_weight=10.0
    ),
}
"""The paper's two M networks."""


ActionModeName = registered(ACTION_MODES, get_action_mode)
"""The name of an action mode (:mod:`world_models.models.actions`)."""


ZMode = Literal["sample", "mu"]


@dataclass(frozen=True)
class ControllerConfig:
    """Constructor arguments of :class:`Controller`; saved as the checkpoint's config.json."""

    latent_size: int | None = 32
    """Dimension of z (V's latent size); None: the trainer takes M's."""
    hidden_size: int | None = 256
    """Dimension of h (M's LSTM size); None: the trainer takes M's."""
    output_size: int | None = 3
    """Outputs of the linear layer: 3 for CarRacing, 1 for Doom; None: the env's."""
    action_mode: ActionModeName | None = "carracing"
    """How outputs become env actions (models/actions.py): carracing (steer, gas, brake),
    thirds (Doom left / stay / right), tanh (raw), or a registered mode; None: the env's."""
    cell_input: bool = False
    """Also read M's LSTM cell state: inputs [z, c, h] (the original Doom code) instead of
    [z, h]."""
    bias: bool = True
    """Add a bias (the original Doom controller has none)."""
    hidden_input: bool = True
    """Read M's state (h, and c with cell_input); --no-hidden-input: C on z alone, the
    paper's "V model only" ablation (CarRacing: 99 weights instead of 867)."""

    def validate(self, where: str = "", complete: bool = True) -> ControllerConfig:
        """This config, checked (the one place Controller's hyper-parameters are), sizes as
        ints; a :class:`ConfigError` (a ``ValueError``) starting with ``where`` otherwise.
        Without ``complete``, unset (None) sizes and action mode pass."""
        lowest = {"latent_size": 1, "hidden_size": 0, "output_size": 1}
        config = _checked_sizes(self, lowest, where, complete)
        prefix = f"{where}: " if where else ""
        mode, outputs = self.action_mode, config.output_size
        if mode is None and not complete:
            return config
        try:  # the registry of action modes (models/actions.py) knows each one's outputs
            actions = get_action_mode(mode)  # type: ignore[arg-type]
            if outputs is not None:
                actions.check_outputs(outputs)
        except ValueError as exc:
            raise ConfigError(f"{prefix}{exc}") from None
        return dataclasses.replace(config, action_mode=actions.name)


CONTROLLER_PRESETS: dict[str, ControllerConfig] = {
    "carracing": ControllerConfig(
        latent_size=32, hidden_size=256, output_size=3, action_mode="carracing"
    ),
    "doom": ControllerConfig(
        latent_size=64,
        hidden_size=512,
        output_size=1,
        action_mode="thirds",
        cell_input=True,
        bias=False,
    ),
    # the paper's summary of the Doom controller: tanh(W [z, h] + b), 577 parameters
    "doom-zh": ControllerConfig(
        latent_size=64, hidden_size=512, output_size=1, action_mode="thirds"
    ),
}
"""The paper's controllers: CarRacing 867 parameters, Doom as the original code 1,088."""


@dataclass(frozen=True)
class ValidateConfig:
    """Options of ``world-models validate``."""

    checkpoint: Path | None = None
    """Validate the ConvVAE saved in this checkpoint folder instead of a fresh one."""
    quiet: Annotated[bool, alias("-q")] = False
    """Print only failures."""
