"""The checkpoint format shared by every model: a folder, never a pickle.

::

    path/
      config.json        {"class": "ConvVAE", "config": {...}}   rebuilds the model
      model.safetensors  the weights (and buffers) by state-dict name
      meta.json          library and torch version, UTC time, training step, extras
      optimizer.pt       optional; tensors and numbers only, read with weights_only=True

Loading never executes code: safetensors holds raw tensors, JSON holds the rest, and the
optional optimizer state is read by ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from world_models import __version__
from world_models.core.atomic import atomic_dir, recover_dir
from world_models.core.config import from_dict, to_dict
from world_models.core.errors import CheckpointError, ConfigError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"
OPTIMIZER_FILE = "optimizer.pt"

M = TypeVar("M", bound="PretrainedMixin")


@dataclass
class Checkpoint:
    """What :func:`read_checkpoint` returns."""

    path: Path
    kind: str
    config: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]


def save_checkpoint(
    path: str | os.PathLike,
    *,
    kind: str,
    config: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    step: int = 0,
    meta: dict[str, Any] | None = None,
    optimizer_state: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint folder atomically (the old folder survives until the new is whole)."""

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    full_meta = {
        "class": kind,
        "library_version": __version__,
        "torch_version": torch.__version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "step": int(step),
        **(meta or {}),
    }
    with atomic_dir(path) as tmp:
        (tmp / CONFIG_FILE).write_text(
            json.dumps({"class": kind, "config": config}, indent=2, sort_keys=True) + "\n"
        )
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"class": kind})
        (tmp / META_FILE).write_text(json.dumps(full_meta, indent=2, sort_keys=True) + "\n")
        if optimizer_state is not None:
            torch.save(optimizer_state, tmp / OPTIMIZER_FILE)
    return Path(path)


def read_checkpoint(
    path: str | os.PathLike, expected_kind: str | None = None, device: str | torch.device = "cpu"
) -> Checkpoint:
    """Read a checkpoint folder; every problem is a one-line :class:`CheckpointError`."""

    path = recover_dir(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path}: no such folder")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise CheckpointError(f"checkpoint {path}: missing {name}")
    try:
        head = json.loads((path / CONFIG_FILE).read_text())
        kind, config = head["class"], head["config"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint {path}: unreadable {CONFIG_FILE} ({exc})") from None
    if expected_kind is not None and kind != expected_kind:
        raise CheckpointError(f"checkpoint {path} holds a {kind}, not a {expected_kind}")
    try:
        tensors = load_file(str(path / WEIGHTS_FILE), device=str(device))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path}: corrupt {WEIGHTS_FILE} ({exc})") from None
    meta: dict[str, Any] = {}
    if (path / META_FILE).is_file():
        try:
            meta = json.loads((path / META_FILE).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"checkpoint {path}: unreadable {META_FILE} ({exc})") from None
    return Checkpoint(path=path, kind=kind, config=config, tensors=tensors, meta=meta)


def read_optimizer_state(path: str | os.PathLike) -> dict[str, Any] | None:
    """The optimizer state saved beside the weights, or ``None``; never unpickles code."""
    file = recover_dir(path) / OPTIMIZER_FILE
    if not file.is_file():
        return None
    try:
        with warnings.catch_warnings():  # torch's multi-line notes about pickle protocols
            warnings.simplefilter("ignore")
            return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        text = str(exc).strip()
        if isinstance(exc, pickle.UnpicklingError) and "weights only" in text.lower():
            # torch's own message advises weights_only=False: running what the file holds
            reason = (
                f"{file} holds pickled objects other than tensors and numbers; refused, as "
                f"loading them could run code"
            )
        else:
            reason = text.splitlines()[0] if text else type(exc).__name__
        raise CheckpointError(f"checkpoint {path}: corrupt {OPTIMIZER_FILE} ({reason})") from None


def load_state_strict(model: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line error naming config and weights."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [
        f"{k}: config expects {tuple(expected[k].shape)}, weights have {tuple(tensors[k].shape)}"
        for k in expected
        if k in tensors and expected[k].shape != tensors[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(
                "shape mismatch " + "; ".join(wrong[:3]) + (" ..." if len(wrong) > 3 else "")
            )
        if missing:
            parts.append(f"missing in weights {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected in weights {unexpected[:3]}")
        raise CheckpointError(
            f"{source}: config.json and model.safetensors do not match ({', '.join(parts)})"
        )
    model.load_state_dict(tensors, strict=True)


class PretrainedMixin:
    """``save_pretrained`` / ``from_pretrained`` for an ``nn.Module`` built from ``self.config``.

    A subclass sets ``config_class`` (a dataclass) and keeps its config in ``self.config``;
    ``cls.from_config(config)`` must rebuild the module.
    """

    config_class: ClassVar[type]
    config: Any

    @classmethod
    def from_config(cls: type[M], config: Any) -> M:
        return cls(**dataclasses.asdict(config))  # type: ignore[call-arg]

    def save_pretrained(
        self,
        path: str | os.PathLike,
        *,
        step: int = 0,
        meta: dict[str, Any] | None = None,
        optimizer_state: dict[str, Any] | None = None,
    ) -> Path:
        """Save to folder ``path`` (config.json + model.safetensors + meta.json), atomically."""
        return save_checkpoint(
            path,
            kind=type(self).__name__,
            config=to_dict(self.config),
            state_dict=self.state_dict(),  # type: ignore[attr-defined]
            step=step,
            meta=meta,
            optimizer_state=optimizer_state,
        )

    @classmethod
    def from_pretrained(
        cls: type[M], path: str | os.PathLike, map_location: str | torch.device = "cpu"
    ) -> M:
        """Rebuild the model from ``path/config.json`` and load its weights; executes no code."""
        ckpt = read_checkpoint(path, expected_kind=cls.__name__)
        try:
            config = from_dict(cls.config_class, ckpt.config, source=f"{ckpt.path}/{CONFIG_FILE}")
        except ConfigError as exc:  # names the file and the field already
            raise CheckpointError(str(exc)) from None
        except (TypeError, ValueError, AttributeError) as exc:  # not a JSON object
            raise CheckpointError(f"checkpoint {ckpt.path}: bad {CONFIG_FILE} ({exc})") from None
        try:
            model = cls.from_config(config)
        except (ConfigError, TypeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {ckpt.path}: bad {CONFIG_FILE} ({exc})") from None
        load_state_strict(model, ckpt.tensors, f"checkpoint {ckpt.path}")  # type: ignore[arg-type]
        model.checkpoint_meta = ckpt.meta  # type: ignore[attr-defined]
        return model.to(map_location)  # type: ignore[attr-defined]


def weights_digest(checkpoint: str | os.PathLike) -> str:
    """SHA-256 of a checkpoint's weights file: which VAE made a series folder, which
    controller collected a dataset."""
    h = hashlib.sha256()
    with open(Path(checkpoint) / WEIGHTS_FILE, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
