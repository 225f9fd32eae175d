"""World models shipped inside the package: ``world_models.pretrained("doom")`` -> V, M, C
and the dreams' initial states, loaded offline from safetensors (no code executed, nothing
downloaded).

A shipped model is a folder ``world_models/assets/<name>/``::

    vae/ mdrnn/ controller/   checkpoint folders (config.json, model.safetensors float16,
                              meta.json), as ``save_pretrained`` writes them
    initial_z.safetensors     mu and logvar (E, Z) of real first frames (the original
                              shipped these as initial_z.json): where dreams start
    settings.json             env preset and the dream settings C was evolved with
    MODEL_CARD.md             data, settings, scores and the command that made it

:func:`export_pretrained` writes such a folder from training outputs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from world_models.core.atomic import atomic_dir, atomic_write_text
from world_models.core.checkpoint import weights_digest
from world_models.core.errors import ConfigError
from world_models.data.series import load_initial_states
from world_models.envs.presets import get_preset
from world_models.models.world_model import load_world_model

ASSETS = Path(__file__).parent / "assets"
PARTS = ("vae", "mdrnn", "controller")


@dataclass(frozen=True)
class PretrainedWorldModel:
    """What :func:`pretrained` returns. ``initial_mu`` / ``initial_logvar``: (E, Z) float32."""

    vae: Any
    mdrnn: Any
    controller: Any
    initial_mu: Any
    initial_logvar: Any
    env: str
    root: Path
    settings: dict = field(default_factory=dict)
    """The dream settings C was evolved with (tau, done_mode, dream_dropout, max_steps)."""


def available() -> list[str]:
    """Names of the world models shipped in this installation."""
    if not ASSETS.is_dir():
        return []
    return sorted(p.name for p in ASSETS.iterdir() if (p / "settings.json").is_file())


def pretrained_dir(name: str) -> Path:
    """The shipped folder of ``name``; a one-line :class:`ConfigError` when there is none."""
    if not isinstance(name, str) or not name:
        have = ", ".join(available()) or "none"
        raise ConfigError(
            f"a pretrained model is named by a string, not {name!r} (shipped: {have})"
        )
    root = ASSETS / name
    if not (root / "settings.json").is_file() or not all((root / p).is_dir() for p in PARTS):
        have = ", ".join(available()) or "none"
        raise ConfigError(f"no pretrained world model named {name!r} (shipped: {have})")
    return root


def settings(name: str) -> dict:
    """``settings.json`` of a shipped model: env, tau, done_mode, dream_dropout, max_steps."""
    return json.loads((pretrained_dir(name) / "settings.json").read_text())


def pretrained(name: str, device: str | None = "cpu") -> PretrainedWorldModel:
    """Load the shipped world model ``name`` (e.g. ``"doom"``) onto ``device``, float32,
    with :func:`~world_models.models.world_model.load_world_model`'s checks (C's action
    mode against the env's)."""

    root, s = pretrained_dir(name), settings(name)
    wm = load_world_model(
        *(root / part for part in PARTS),
        action_mode=get_preset(s["env"]).action_mode,
        device=device,
    )
    init = load_file(str(root / "initial_z.safetensors"), device=str(device or "cpu"))
    return PretrainedWorldModel(
        vae=wm.vae,
        mdrnn=wm.mdrnn,
        controller=wm.controller,
        initial_mu=init["mu"].float(),
        initial_logvar=init["logvar"].float(),
        env=s["env"],
        root=root,
        settings=s,
    )


def export_pretrained(
    vae_path: str | os.PathLike,
    mdrnn_path: str | os.PathLike,
    controller_path: str | os.PathLike,
    series_dir: str | os.PathLike,
    out: str | os.PathLike,
    dream_settings: dict,
    card: str,
    max_initial_states: int = 2000,
) -> Path:
    """Write a shipped-model folder (float16 weights) from training outputs; returns it.

    M's record of its VAE (``vae_sha256``) is rewritten to the float16 copy's digest, so the
    usual V-M compatibility check holds for the shipped pair; the source digest is kept as
    ``source_vae_sha256``.
    """

    wm = load_world_model(vae_path, mdrnn_path, controller_path)
    vae, mdrnn, controller = wm.vae, wm.mdrnn, wm.controller
    mu, logvar = load_initial_states(series_dir, max_episodes=max_initial_states)
    standard = {"class", "library_version", "torch_version", "created_utc", "step"}
    with atomic_dir(out) as tmp:
        for part, model in (("vae", vae), ("mdrnn", mdrnn), ("controller", controller)):
            meta = {
                k: v
                for k, v in (getattr(model, "checkpoint_meta", {}) or {}).items()
                if k not in standard and k != "train_config"
            }
            if part == "vae":
                meta.pop("train_config", None)
            model.half().save_pretrained(Path(tmp) / part, meta=meta)  # float16 on disk
            model.float()
        m_meta_path = Path(tmp) / "mdrnn" / "meta.json"
        m_meta = json.loads(m_meta_path.read_text())
        m_meta["source_vae_sha256"] = m_meta.get("vae_sha256")
        m_meta["vae_sha256"] = weights_digest(Path(tmp) / "vae")
        atomic_write_text(m_meta_path, json.dumps(m_meta, indent=2, sort_keys=True) + "\n")
        save_file(
            {"mu": mu.half().contiguous(), "logvar": logvar.half().contiguous()},
            str(Path(tmp) / "initial_z.safetensors"),
        )
        atomic_write_text(Path(tmp) / "settings.json", json.dumps(dream_settings, indent=2))
        atomic_write_text(Path(tmp) / "MODEL_CARD.md", card)
    return Path(out)
