"""A resumed run says so; train-controller refuses, before writing, a VAE M did not learn."""

from __future__ import annotations

import dataclasses
import json

import helpers
import pytest
import torch
from helpers import dream_controller_config, fake_dataset

from world_models.core.config import override
from world_models.core.errors import ConfigError
from world_models.models.configs import VAEConfig
from world_models.models.mdrnn import MDNRNN
from world_models.models.vae import ConvVAE

pytestmark = pytest.mark.usefixtures("one_thread")
Z, H = 4, 8


def test_train_vae_says_it_resumed_and_from_where(tmp_path, capsys):
    from world_models.training.vae import TrainVAEConfig, train_vae

    data = fake_dataset(tmp_path / "data")
    quiet = {"progress": False, "tensorboard": False}
    config = TrainVAEConfig(
        data_dir=data,
        run_dir=tmp_path / "run",
        model=VAEConfig(latent_size=4, kl_tolerance=0.5),
        **{"epochs": 2, "batch_size": 8, "log_every": 1, "max_steps": 2},
        holdout_fraction=0.3,
        **quiet,
    )
    train_vae(config)
    assert "resumed" not in capsys.readouterr().out  # a fresh run is not a resumed one
    train_vae(dataclasses.replace(config, max_steps=3))
    assert "resumed from step 2 (epoch 1 of 2)" in capsys.readouterr().out


def write_series(folder, vae_sha256: str | None = None):
    helpers.write_series(folder)
    if vae_sha256:
        (folder / "series.json").write_text(json.dumps({"vae_sha256": vae_sha256}))
    return folder


def test_train_mdrnn_says_it_resumed_and_from_where(tmp_path, capsys):
    from world_models.training.mdrnn import TRAIN_MDNRNN_PRESETS, train_mdrnn

    config = override(
        TRAIN_MDNRNN_PRESETS["debug"],
        series_dir=write_series(tmp_path / "series"),
        run_dir=tmp_path / "run",
        latent_size=Z,
        action_size=1,
        hidden_size=H,
        epochs=1,
        progress=False,
        tensorboard=False,
    )
    train_mdrnn(config)
    assert "resumed" not in capsys.readouterr().out
    train_mdrnn(dataclasses.replace(config, epochs=2))
    assert "resumed from step 1 (epoch 2 of 2)" in capsys.readouterr().out
    train_mdrnn(dataclasses.replace(config, epochs=2))
    assert "already finished (epoch 2, step 2)" in capsys.readouterr().out


def _controller_config(tmp_path, **kw):
    return dream_controller_config(tmp_path / "m", tmp_path / "series", tmp_path / "run", **kw)


def test_train_controller_says_it_resumed_at_which_generation(tmp_path, capsys):
    from world_models.training.controller import train_controller

    write_series(tmp_path / "series")
    MDNRNN(latent_size=Z, action_size=1, hidden_size=H, num_gaussians=2).save_pretrained(
        tmp_path / "m"
    )
    config = _controller_config(tmp_path)
    train_controller(config)
    assert "resumed" not in capsys.readouterr().out
    train_controller(dataclasses.replace(config, generations=2))
    assert "resumed from step 1 (generation 2 of 2)" in capsys.readouterr().out


def test_dream_training_refuses_a_vae_m_did_not_learn_before_writing_the_run(tmp_path):
    from world_models.core.checkpoint import weights_digest
    from world_models.training.controller import train_controller

    torch.manual_seed(0)
    ConvVAE(Z).save_pretrained(tmp_path / "vae_a")
    ConvVAE(Z).save_pretrained(tmp_path / "vae_b")  # same sizes, other weights
    write_series(tmp_path / "series")
    MDNRNN(latent_size=Z, action_size=1, hidden_size=H, num_gaussians=2).save_pretrained(
        tmp_path / "m", meta={"vae_sha256": weights_digest(tmp_path / "vae_a")}
    )
    with pytest.raises(ConfigError, match="latents of another VAE"):
        train_controller(_controller_config(tmp_path, vae=tmp_path / "vae_b"))
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="no VAE checkpoint there"):
        train_controller(_controller_config(tmp_path, vae=tmp_path / "nothing"))
    assert not (tmp_path / "run").exists()
    run = train_controller(_controller_config(tmp_path, vae=tmp_path / "vae_a"))
    assert json.loads((run / "config.json").read_text())["vae"] == str(tmp_path / "vae_a")
