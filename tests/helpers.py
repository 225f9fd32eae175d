"""Test data many test files share: a tiny fake-env dataset and tiny encoded series.

Imported as ``helpers`` (pytest puts this folder on ``sys.path``, as for conftest.py).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from world_models.data import store
from world_models.data.collect import CollectConfig, collect


def fake_dataset(
    out_dir: Path,
    episodes: int = 6,
    max_steps: int = 12,
    lengths: tuple[int, int] | None = (10, 12),
) -> Path:
    """Collect ``episodes`` fake-env episodes into ``out_dir`` on one worker, quietly;
    ``lengths`` (min, max) fixes how long the fake env's episodes run (None: its own)."""
    kwargs = {} if lengths is None else {"min_len": lengths[0], "max_len": lengths[1]}
    return collect(
        CollectConfig(
            out_dir=out_dir,
            env="fake",
            episodes=episodes,
            max_steps=max_steps,
            workers=1,
            progress=False,
            **({"env_kwargs": kwargs} if kwargs else {}),
        )
    )


def write_series(
    folder: Path,
    episodes: int = 4,
    length: int = 20,
    z: int = 4,
    logvar: float = -2.0,
    random_reward: bool = False,
) -> Path:
    """An encoded series folder: ``episodes`` episodes of ``length`` steps of random mu
    (``z`` dims), one action in [-1, 1], rewards (zero, or random), ending terminated."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(episodes):
        mu = rng.normal(size=(length, z)).astype(np.float16)  # (T, Z)
        action = rng.uniform(-1, 1, (length, 1)).astype(np.float32)  # (T, 1)
        reward = rng.normal(size=length) if random_reward else np.zeros(length)  # (T,)
        store.save_npz(
            folder / store.episode_name(i),
            {
                "mu": mu,
                "logvar": np.full((length, z), logvar, np.float16),
                "action": action,
                "reward": reward.astype(np.float32),
                "terminated": np.arange(length) == length - 1,
                "truncated": np.zeros(length, bool),
            },
        )
    return folder


def save_play_models(root: Path, z: int, h: int, done_head: bool = False) -> Path:
    """Tiny untrained V (``z``), M (``h``, Box 3-dim actions; with ``done_head`` also
    ``mdrnn_done``) and two Cs (``c_box`` carracing, ``c_thirds`` Doom's) under ``root``."""
    import torch

    from world_models.models.configs import ControllerConfig, MDNRNNConfig
    from world_models.models.controller import Controller
    from world_models.models.mdrnn import MDNRNN
    from world_models.models.vae import ConvVAE

    torch.manual_seed(0)
    ConvVAE(latent_size=z).eval().save_pretrained(root / "vae")
    m = MDNRNNConfig(latent_size=z, action_size=3, hidden_size=h)
    MDNRNN.from_config(m).save_pretrained(root / "mdrnn")
    if done_head:
        MDNRNN.from_config(replace(m, done_head=True)).save_pretrained(root / "mdrnn_done")
    for name, outputs, mode in (("c_box", 3, "carracing"), ("c_thirds", 1, "thirds")):
        c = ControllerConfig(latent_size=z, hidden_size=h, output_size=outputs, action_mode=mode)
        Controller.from_config(c).save_pretrained(root / name)
    return root


def dream_controller_config(mdrnn: Path, series_dir: Path, run_dir: Path, **changes: Any):
    """The debug train-controller preset, tiny, in the dream of the M at ``mdrnn`` on the
    Doom-like fake env (one output split into thirds), with ``changes`` on top."""
    from world_models.core.config import override
    from world_models.training.configs import TRAIN_CONTROLLER_PRESETS

    settings = {
        "env": "fake-discrete",
        "mdrnn": mdrnn,
        "series_dir": series_dir,
        "run_dir": run_dir,
        "generations": 1,
        "popsize": 4,
        "rollouts": 1,
        "eval_every": 1,
        "eval_rollouts": 2,
        "dream_max_steps": 10,
    }
    return override(TRAIN_CONTROLLER_PRESETS["debug"], **{**settings, **changes})


def dying_world_model(root: Path):
    """V, an M whose dreams die when the done logit (driven by h) crosses 0, a C and first
    frames (in root/v, m, c and s): dreams of several lengths. Returns M, C and the first
    frames' mu (3 episodes, 4 steps, z = 8)."""
    import torch

    from world_models.data.store import save_npz
    from world_models.models.controller import Controller
    from world_models.models.mdrnn import MDNRNN
    from world_models.models.vae import ConvVAE

    torch.manual_seed(0)
    vae, m = (
        ConvVAE(8),
        MDNRNN(latent_size=8, action_size=1, hidden_size=16, num_gaussians=2, done_head=True),
    )
    with torch.no_grad():
        m.head.weight[-1] *= 10
        m.head.bias[-1] = -1.0
    c = Controller(latent_size=8, hidden_size=16, output_size=1, action_mode="thirds")
    c.set_flat(np.random.default_rng(0).normal(0, 1.0, c.num_params))
    for obj, name in ((vae, "v"), (m, "m"), (c, "c")):
        obj.save_pretrained(root / name)
    mu = np.random.default_rng(1).normal(size=(3, 4, 8)).astype(np.float16)
    for i in range(3):
        save_npz(root / "s" / f"ep_{i:06d}.npz", {"mu": mu[i], "logvar": 0 * mu[i] - 3})
    return m, c, mu


def world_flags(root: Path) -> list[str]:
    """The flags naming V, M and the series of a world saved under ``root`` (v, m, s)."""
    return ["--vae", str(root / "v"), "--mdrnn", str(root / "m"), "--series-dir", str(root / "s")]
