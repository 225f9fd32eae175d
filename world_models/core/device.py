"""Device choice: one rule for every command."""

from __future__ import annotations

import torch

from world_models.core.errors import ConfigError


def pick_device(requested: str | None) -> torch.device:
    """``requested``, or CUDA when present, else CPU; a missing CUDA is a clear error."""
    if requested in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ConfigError(f"device {requested!r} is not a device (cpu, cuda, cuda:1 ...)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {requested!r} requested but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {requested!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return device
