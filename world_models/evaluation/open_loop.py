"""Open-loop prediction: M dreams forward from one real frame; V draws the dream.

From the first frame's latent, M is rolled forward under the recorded actions (or random
ones), each next z sampled at temperature ``tau``; V decodes every z. Side by side with the
real episode, this shows how long M's imagination stays faithful.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from world_models.core.device import pick_device
from world_models.core.errors import ConfigError
from world_models.core.locking import check_output_dir
from world_models.core.media import check_animation_path, save_animation
from world_models.data import store
from world_models.evaluation.configs import DreamVideoConfig
from world_models.models.world_model import load_world_model


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


def check_dream_config(config: DreamVideoConfig) -> None:
    """Raise a one-line :class:`ConfigError` for settings that cannot work.

    Cheap: loads no model or episode, so a bad flag fails before any real work. (That
    ``start`` lies inside the episode is checked once the episode is read.)
    """

    check_animation_path(config.out)
    for name in ("scale", "fps"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"--{name} must be a whole number >= 1, got {value!r}")
    if config.steps is not None and (
        isinstance(config.steps, bool)
        or not isinstance(config.steps, (int, np.integer))
        or config.steps < 1
    ):
        raise ConfigError(
            f"--steps must be >= 1 (or none for the whole episode), got {config.steps!r}"
        )
    if isinstance(config.start, bool) or not isinstance(config.start, (int, np.integer)):
        raise ConfigError(f"--start must be a whole number, got {config.start!r}")
    if config.start < 0:
        raise ConfigError(f"--start must be >= 0 (a frame index), got {config.start}")
    if not (isinstance(config.tau, (int, float)) and math.isfinite(config.tau) and config.tau >= 0):
        raise ConfigError(f"--tau must be a finite number >= 0, got {config.tau!r}")
    if config.actions not in ("recorded", "random"):
        raise ConfigError(f"--actions must be 'recorded' or 'random', got {config.actions!r}")


def _held_classes(
    n_classes: int, steps: int, rng: np.random.Generator, max_repeat: int = 10
) -> np.ndarray:
    """(steps,) int64: a uniform class held for a uniform 1..max_repeat steps, repeated.

    As :class:`~world_models.policies.RepeatPolicy`, the Doom data policy.
    """
    out = np.empty(steps, np.int64)
    t = 0
    while t < steps:
        hold = int(rng.integers(1, max_repeat + 1))
        out[t : t + hold] = rng.integers(n_classes)
        t += hold
    return out


def random_actions(recorded: np.ndarray, steps: int, rng: np.random.Generator) -> np.ndarray:
    """(steps, A) float32 random actions of the same kind as the (T, A) ``recorded`` ones.

    * one-hot rows (A >= 2, each row a single 1, the rest 0; a discrete env's storage):
      random one-hot rows, a uniform class held for 1-10 steps;
    * one column of values in {-1, 0, 1} (the Doom scalar encoding: stay 0, left -1,
      right +1): those three values, each held for 1-10 steps;
    * one column of other whole numbers (a discrete action's index): the integers from
      the column's min to its max, held likewise;
    * anything else (continuous): uniform between each column's min and max.

    Discrete actions drawn the continuous way would be vectors M never saw in training.
    """
    a = np.asarray(recorded, np.float32).reshape(len(recorded), -1)  # (T, A)
    if len(a) == 0:
        raise ConfigError("the episode has no actions to take the random ones' kind from")
    k = a.shape[1]
    if k >= 2 and np.all((a == 0) | (a == 1)) and np.all(a.sum(1) == 1):
        return np.eye(k, dtype=np.float32)[_held_classes(k, steps, rng)]  # (steps, k)
    if k == 1 and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
        lo, hi = (-1, 1) if np.all(np.isin(a, (-1.0, 0.0, 1.0))) else (int(a.min()), int(a.max()))
        values = np.arange(lo, hi + 1, dtype=np.float32)
        return values[_held_classes(len(values), steps, rng)][:, None]  # (steps, 1)
    low, high = a.min(0), a.max(0)
    return rng.uniform(low, high, size=(steps, k)).astype(np.float32)


def dream_video(config: DreamVideoConfig) -> Path:
    """Write the real episode beside M's open-loop dream of it; return the video path."""

    if Path(config.out).is_dir():
        raise ConfigError(f"--out {config.out}: is a folder; name the video file to write")
    check_output_dir(Path(config.out).parent, "folder of --out", create=False)
    check_dream_config(config)

    arrays = store.load_npz(config.episode, ("obs", "action"))
    n_frames = len(arrays["obs"])
    if config.start >= n_frames:
        raise ConfigError(
            f"--start {config.start} is past the end of {config.episode}: its "
            f"{n_frames} frames are indexed 0 to {n_frames - 1}"
        )
    obs, actions = arrays["obs"][config.start :], arrays["action"][config.start :]
    if actions.ndim == 1:  # a Discrete env's (T,) indices stored without a column
        actions = actions[:, None]

    wm = load_world_model(config.vae, config.mdrnn, device=pick_device(config.device))
    vae, mdrnn = wm.vae, wm.mdrnn
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
        actions = random_actions(actions, steps, np.random.default_rng(config.seed))
    dream = open_loop(vae, mdrnn, obs[0], actions[:steps], config.tau, config.seed)
    real = obs[:steps] if config.actions == "recorded" else np.repeat(obs[:1], steps, axis=0)
    return save_animation(side_by_side(real, dream, config.scale), config.out, fps=config.fps)


def describe(path: Path) -> str:
    return f"video: {path}"
