"""The checkpoint format shared by every model: a folder, never a pickle.

::

    path/
      config.json        {"class": "ConvVAE", "config": {...}}   rebuilds the model
      model.safetensors  the weights (and buffers) by state-dict name
      meta.json          library and torch version, UTC time, training step, extras
      optimizer.pt       optional; tensors and numbers only, read with weights_only=True

Loading never executes code: safetensors holds raw tensors, JSON holds the rest, and the
optional optimizer state is read by ``torch.load(weights_only=True)``.

Damage is found on loading, not in what the model then computes: meta.json records the
SHA-256 of model.safetensors (``weights_sha256``), checked when present (4 KiB of 0xFF
inside the file is a clean header and NaN weights), and weights that hold NaN or Inf are
refused either way. A full disk while saving is a one-line
:class:`~world_models.core.errors.DiskFullError` naming the file being written and the
checkpoint kept (the folder is replaced whole or not at all).
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
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from world_models import __version__
from world_models.core.atomic import atomic_dir, disk_full_error, is_disk_full, recover_dir
from world_models.core.config import from_dict, to_dict
from world_models.core.errors import CheckpointError, ConfigError, DiskFullError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"
OPTIMIZER_FILE = "optimizer.pt"
DIGEST_KEY = "weights_sha256"
"""meta.json's record of model.safetensors' SHA-256 (checked on loading when present)."""

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
    weights = save_safetensors(tensors, metadata={"class": kind})  # bytes: written by Python
    full_meta = {
        "class": kind,
        "library_version": __version__,
        "torch_version": torch.__version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "step": int(step),
        **(meta or {}),
        DIGEST_KEY: hashlib.sha256(weights).hexdigest(),  # never a copied one
    }
    kept = _kept(Path(path))  # before the folder is replaced
    member = CONFIG_FILE
    try:
        with atomic_dir(path) as tmp:
            (tmp / CONFIG_FILE).write_text(
                json.dumps({"class": kind, "config": config}, indent=2, sort_keys=True) + "\n"
            )
            member = WEIGHTS_FILE
            with open(tmp / WEIGHTS_FILE, "wb") as fh:
                fh.write(weights)
            member = META_FILE
            (tmp / META_FILE).write_text(json.dumps(full_meta, indent=2, sort_keys=True) + "\n")
            if optimizer_state is not None:
                member = OPTIMIZER_FILE
                # a Python file, not a path: torch's own writer reports a full disk only
                # as "[enforce fail at inline_container.cc:672] . unexpected pos"
                with open(tmp / OPTIMIZER_FILE, "wb") as fh:
                    torch.save(optimizer_state, fh)
            member = "the folder"
    except BaseException as exc:
        if isinstance(exc, DiskFullError) or is_disk_full(exc):
            raise disk_full_error(Path(path) / member, kept) from None
        raise
    return Path(path)


def _kept(path: Path) -> str:
    """What a failed save of checkpoint ``path`` leaves: the checkpoint there (and its step)."""
    old = recover_dir(path)
    if not (old / WEIGHTS_FILE).is_file():
        return "no checkpoint was there before"
    try:
        step = json.loads((old / META_FILE).read_text()).get("step", "?")
    except (OSError, ValueError, AttributeError):
        step = "?"
    return f"the last good checkpoint there (step {step}) is kept"


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
    meta: dict[str, Any] = {}
    if (path / META_FILE).is_file():
        try:
            meta = json.loads((path / META_FILE).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"checkpoint {path}: unreadable {META_FILE} ({exc})") from None
    try:
        weights = (path / WEIGHTS_FILE).read_bytes()
        digest = meta.get(DIGEST_KEY) if isinstance(meta, dict) else None
        if isinstance(digest, str) and hashlib.sha256(weights).hexdigest() != digest:
            raise CheckpointError(
                f"checkpoint {path}: corrupt {WEIGHTS_FILE} (its SHA-256 is not the one "
                f"{META_FILE} recorded when it was saved: the file was damaged since)"
            )
        tensors = load_safetensors(weights)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path}: corrupt {WEIGHTS_FILE} ({exc})") from None
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise CheckpointError(
            f"checkpoint {path}: {WEIGHTS_FILE} holds NaN or Inf weights "
            f"({', '.join(bad[:3])}{more}): the file is damaged or was saved from a diverged "
            f"model; use another checkpoint"
        )
    if torch.device(device).type != "cpu":
        tensors = {k: t.to(device) for k, t in tensors.items()}
    return Checkpoint(path=path, kind=kind, config=config, tensors=tensors, meta=meta)


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint folder's meta.json alone (no weights read): {} where there is none, or
    no folder (a command's own loading says so); unreadable is a :class:`CheckpointError`."""
    file = recover_dir(path) / META_FILE
    if not file.is_file():
        return {}
    try:
        meta = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint {path}: unreadable {META_FILE} ({exc})") from None
    return meta if isinstance(meta, dict) else {}


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

    @classmethod
    def config_with(cls, config: Any, fields: dict[str, Any]) -> Any:
        """``config`` (the config class's defaults when None) with ``fields`` (its fields
        by name) on top, checked by its ``validate``: what a model's constructor builds
        itself from, so a model is one config and its checks are the config's."""
        if config is None:
            config = cls.config_class()
        elif not isinstance(config, cls.config_class):
            raise TypeError(
                f"{cls.__name__} takes a {cls.config_class.__name__} (or its fields by name), "
                f"got {config!r}"
            )
        try:
            return dataclasses.replace(config, **fields).validate()
        except TypeError as exc:  # a name that is no field
            raise TypeError(f"{cls.__name__}: {exc}") from None

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
