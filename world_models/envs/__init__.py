"""Environments: presets (ids, frame preprocessing, actions; ``register_preset`` adds one),
``make_env``, a fake env.

``make_env`` is imported lazily so importing the presets does not import Gymnasium.
"""

from __future__ import annotations

import importlib
from typing import Any

from world_models.envs.presets import (
    ENV_PRESETS,
    EnvPreset,
    Preprocess,
    get_preset,
    register_preset,
)

__all__ = [
    "ENV_PRESETS",
    "EnvPreset",
    "Preprocess",
    "get_preset",
    "register_preset",
    "make_env",
    "FakeEnv",
]

_LAZY = {"make_env": "world_models.envs.make", "FakeEnv": "world_models.envs.fake"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'world_models.envs' has no attribute {name!r}")
