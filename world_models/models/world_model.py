"""``load_world_model``: V, M and C from their checkpoint folders, checked to belong together.

Every command that needs more than one of the three loads them here, so the checks are
the same everywhere: M was trained on this V's latents (M records the digest of the V
weights that ``encode`` used), V and M were trained on data of the env they are used in
(each records it: ``env`` in meta.json), C reads M's latent and hidden sizes, and C maps
its outputs the way the env needs (``action_mode``). A mismatch is a one-line
:class:`ConfigError`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from world_models.core.checkpoint import read_meta, weights_digest
from world_models.core.errors import ConfigError
from world_models.models.controller import Controller
from world_models.models.mdrnn import MDNRNN
from world_models.models.vae import ConvVAE

PathLike = str | os.PathLike


@dataclass
class WorldModel:
    """The loaded models, in eval mode; any of them None when not asked for."""

    vae: ConvVAE | None
    mdrnn: MDNRNN | None
    controller: Controller | None


def check_vae_matches(vae_dir: PathLike, mdrnn, mdrnn_dir: PathLike) -> None:
    """Refuse a V other than the one whose latents M was trained on (when M recorded it):
    M's predictions mean nothing in another VAE's latent space, however equal the sizes."""
    want = getattr(mdrnn, "checkpoint_meta", {}).get("vae_sha256")
    if not want:
        return
    have = weights_digest(Path(vae_dir))
    if have != want:
        raise ConfigError(
            f"M ({mdrnn_dir}) was trained on latents of another VAE (sha256 {want[:12]}) "
            f"than {vae_dir} ({have[:12]}): pass the VAE checkpoint that `encode` used"
        )


ENV_KEY = "env"
"""meta.json's record (V, M) of the env preset whose episodes the model was trained on."""


def check_env_matches(
    env: str | None, meta: dict | None, what: str, where: PathLike, advice: str | None = None
) -> None:
    """Refuse ``env`` where a checkpoint's ``meta`` records training data of another env:
    an M of the fake env knows nothing of Doom's frames or actions, whatever the sizes say.
    A checkpoint without the record (older, or data of unknown origin) passes. ``advice``
    ends the message (default: pass that env's --env, or a model trained on ``env``)."""
    trained = (meta or {}).get(ENV_KEY)
    if env is None or not isinstance(trained, str) or trained == env:
        return
    advice = advice or f"pass --env {trained} (or a {what} trained on {env})"
    raise ConfigError(f"{what} ({where}) was trained on {trained} data, not {env}: {advice}")


def check_trained_env(env: str | None, checkpoint: PathLike | None, what: str) -> None:
    """:func:`check_env_matches` from a checkpoint folder's meta.json alone (before any
    weights are read or anything is written); no folder passes (loading it says why)."""
    if env is not None and checkpoint is not None:
        check_env_matches(env, read_meta(checkpoint), what, checkpoint)


def check_controller_fits(
    controller: Controller, mdrnn: MDNRNN | None, action_mode: str | None, where: PathLike
) -> None:
    """C reads M's z and h sizes and maps actions as the env needs."""
    if mdrnn is not None:
        if controller.latent_size != mdrnn.latent_size:
            raise ConfigError(
                f"controller {where} reads z of size {controller.latent_size}, "
                f"M predicts {mdrnn.latent_size}"
            )
        if controller.hidden_size != mdrnn.hidden_size:
            raise ConfigError(
                f"controller {where} reads h of size {controller.hidden_size}, "
                f"M's LSTM has {mdrnn.hidden_size}"
            )
    if action_mode is not None and controller.action_mode != action_mode:
        raise ConfigError(
            f"controller {where} maps actions as {controller.action_mode!r}; "
            f"the env needs {action_mode!r}"
        )


def load_world_model(
    vae: PathLike | None = None,
    mdrnn: PathLike | None = None,
    controller: PathLike | None = None,
    *,
    action_mode: str | None = None,
    env: str | None = None,
    device: torch.device | str | None = None,
) -> WorldModel:
    """Load the given checkpoints onto ``device`` and check they fit (module docstring).

    ``action_mode`` (the env preset's, e.g. ``"thirds"`` for Doom) is checked against C's;
    ``env`` (a preset name) against the env V's and M's training data came from.
    """
    v = ConvVAE.from_pretrained(vae, map_location=device).eval() if vae is not None else None
    m = MDNRNN.from_pretrained(mdrnn, map_location=device).eval() if mdrnn is not None else None
    for what, model, where in (("M", m, mdrnn), ("V", v, vae)):
        if model is not None:
            check_env_matches(env, getattr(model, "checkpoint_meta", None), what, where)
    if v is not None and m is not None:
        check_vae_matches(vae, m, mdrnn)  # type: ignore[arg-type]
        if v.latent_size != m.latent_size:
            raise ConfigError(
                f"VAE {vae} has z={v.latent_size} but MDNRNN {mdrnn} expects z={m.latent_size}"
            )
    c = None
    if controller is not None:
        c = Controller.from_pretrained(controller, map_location=device).eval()
        check_controller_fits(c, m, action_mode, controller)
    return WorldModel(v, m, c)
