"""World Models (Ha & Schmidhuber, 2018) in PyTorch.

V: :class:`ConvVAE` compresses 64x64 frames to z. M: an MDN-RNN predicts the next z.
C: a small controller evolved with CMA-ES, in the real environment or in M's dream.
Public names are imported lazily so ``python -m world_models.models.vae`` stays clean.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "ConvVAE": "world_models.models.vae",
    "VAEConfig": "world_models.models.vae",
    "MDNRNN": "world_models.models.mdrnn",
    "MDNRNNConfig": "world_models.models.mdrnn",
    "FrameSource": "world_models.data.sources",
    "SeriesSet": "world_models.data.series",
    "load_series": "world_models.data.series",
    "Policy": "world_models.policies",
    "make_env": "world_models.envs.make",
    "EnvPreset": "world_models.envs.presets",
    "register_preset": "world_models.envs.presets",
    "ActionMode": "world_models.models.actions",
    "register_action_mode": "world_models.models.actions",
    "collect": "world_models.data.collect",
    "train_vae": "world_models.training.vae",
    "encode": "world_models.data.encode",
    "train_mdrnn": "world_models.training.mdrnn",
    "Controller": "world_models.models.controller",
    "ControllerConfig": "world_models.models.controller",
    "ControllerPolicy": "world_models.policies.controller",
    "LatentPolicy": "world_models.policies.controller",
    "DreamEnv": "world_models.envs.dream",
    "BatchedDream": "world_models.envs.dream",
    "train_controller": "world_models.training.controller",
    "evaluate": "world_models.evaluation.evaluate",
    # the module is not called ``pretrained``: importing it would shadow this function
    "pretrained": "world_models.shipped",
}

__all__ = [*_PUBLIC, "__version__"]


def _register_envs() -> None:
    """Make ``gymnasium.make("WorldModels/Dream-v0", ...)`` work after ``import world_models``.

    The entry point is a string, so nothing heavy is imported until the env is made.
    """
    try:
        import gymnasium  # late: registering the dream env waits for the first use
    except ImportError:  # pragma: no cover - gymnasium is a core dependency
        return
    if "WorldModels/Dream-v0" not in gymnasium.registry:
        gymnasium.register(
            id="WorldModels/Dream-v0", entry_point="world_models.envs.dream:DreamEnv"
        )


_register_envs()


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'world_models' has no attribute {name!r}")
