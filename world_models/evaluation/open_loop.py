"""Open-loop prediction: M dreams forward from one real frame; V draws the dream.

From the first frame's latent, M is rolled forward under the recorded actions (or random
ones), each next z sampled at temperature ``tau``; V decodes every z. Side by side with the
real episode, this shows how long M's imagination stays faithful.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from world_models.errors import ConfigError


@dataclass(frozen=True)
class DreamVideoConfig:
    """Options of ``world-models dream``."""

    vae: Path = Path("runs/vae/checkpoints/best")
    """ConvVAE checkpoint folder."""
    mdrnn: Path = Path("runs/mdrnn/checkpoints/best")
    """MDNRNN checkpoint folder."""
    episode: Path = Path("data/carracing/ep_000000.npz")
    """Real episode file whose first frame starts the dream (and whose actions drive it)."""
    out: Path = Path("dream.gif")
    """Output video: .gif, or .mp4 with the `video` extra."""
    tau: float = 1.0
    """Temperature of M's sampling (0: always the most likely component's mean)."""
    actions: Literal["recorded", "random"] = "recorded"
    """Drive the dream with the episode's actions or with uniform random ones."""
    steps: int | None = None
    """Dream this many steps (None: the episode's length)."""
    start: int = 0
    """Index of the real frame the dream starts from."""
    fps: int = 25
    """Frames per second of the video."""
    scale: int = 3
    """Pixel upscaling of the 64x64 frames."""
    seed: int = 0
    """Seed of M's sampling noise (and of random actions)."""
    device: str | None = None
    """cpu or cuda (None: CUDA when present)."""


@torch.no_grad()
def open_loop(
    vae, mdrnn, first_frame: np.ndarray, actions: np.ndarray, tau: float, seed: int = 0
) -> np.ndarray:
    """Dream ``len(actions)`` frames from ``first_frame``.

    Args:
        first_frame: (64, 64, 3) uint8.
        actions: (T, A) float32 actions, a_t applied to the t-th dreamed frame.
    Returns:
        (T, 64, 64, 3) uint8: frame 0 is V's reconstruction of ``first_frame``, frame t+1
        the decoding of z_{t+1} ~ M(z_t, a_t).
    """
    device = vae.fc_mu.weight.device
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.from_numpy(np.ascontiguousarray(first_frame)).to(device)
    x = x.permute(2, 0, 1).unsqueeze(0).float().div(255)  # (1, 3, 64, 64)
    z = vae.get_latent_representation(x)  # (1, Z)
    acts = torch.from_numpy(actions).float().to(device)  # (T, A)
    zs = [z]
    state = None
    for t in range(len(actions) - 1):
        out = mdrnn.step(z, acts[t : t + 1], state)
        z = mdrnn.sample(out, tau, generator=gen)  # (1, Z)
        state = out.state
        zs.append(z)
    frames = vae.decode(torch.cat(zs))  # (T, 3, 64, 64)
    return (frames.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def side_by_side(real: np.ndarray, dream: np.ndarray, scale: int = 3) -> list[np.ndarray]:
    """(T, H, W, 3) real and dream -> T frames [real | gap | dream], upscaled."""
    t = min(len(real), len(dream))
    gap = np.full((real.shape[1], 4, 3), 255, np.uint8)
    frames = []
    for i in range(t):
        f = np.concatenate([real[i], gap, dream[i]], axis=1)
        frames.append(f.repeat(scale, axis=0).repeat(scale, axis=1))
    return frames


def dream_video(config: DreamVideoConfig) -> Path:
    """Write the real episode beside M's open-loop dream of it; return the video path."""
    from world_models.data import store
    from world_models.evaluation.media import save_animation
    from world_models.models.mdrnn import MDNRNN
    from world_models.models.vae import ConvVAE
    from world_models.training.runs import pick_device

    device = pick_device(config.device)
    vae = ConvVAE.from_pretrained(config.vae, map_location=device).eval()
    mdrnn = MDNRNN.from_pretrained(config.mdrnn, map_location=device).eval()
    if vae.latent_size != mdrnn.latent_size:
        raise ConfigError(
            f"VAE {config.vae} has z={vae.latent_size} but MDNRNN {config.mdrnn} expects "
            f"z={mdrnn.latent_size}"
        )
    arrays = store.load_npz(config.episode, ("obs", "action"))
    obs, actions = arrays["obs"][config.start :], arrays["action"][config.start :]
    if len(obs) == 0:
        raise ConfigError(
            f"--start {config.start} is past the episode's {len(arrays['obs'])} frames"
        )
    if actions.shape[1] != mdrnn.config.action_size:
        raise ConfigError(
            f"{config.episode} has {actions.shape[1]}-dim actions; the MDNRNN "
            f"expects {mdrnn.config.action_size}"
        )
    steps = (
        min(config.steps or len(obs), len(obs))
        if config.actions == "recorded"
        else (config.steps or len(obs))
    )
    if config.actions == "random":
        rng = np.random.default_rng(config.seed)
        low, high = actions.min(0), actions.max(0)
        actions = rng.uniform(low, high, size=(steps, actions.shape[1])).astype(np.float32)
    dream = open_loop(vae, mdrnn, obs[0], actions[:steps], config.tau, config.seed)
    real = obs[:steps] if config.actions == "recorded" else np.repeat(obs[:1], steps, axis=0)
    return save_animation(side_by_side(real, dream, config.scale), config.out, fps=config.fps)
