"""A run that is refused before it starts writes nothing: the corrected command, with the
same run folder, is not refused as "started with another config" (issue 20, point 2)."""

from __future__ import annotations

import dataclasses
import json

import pytest
from helpers import dream_controller_config, fake_dataset, write_series

from world_models.cli import main
from world_models.core.config import override
from world_models.core.errors import CheckpointError, DataError, WorldModelsError
from world_models.models.mdrnn import MDNRNN

pytestmark = pytest.mark.usefixtures("one_thread")
Z, H = 4, 8


def test_train_vae_refused_for_a_missing_data_dir_leaves_no_run_folder(tmp_path, capsys):
    data = fake_dataset(tmp_path / "data")
    run = tmp_path / "runs" / "r7"
    argv = ["train-vae", "--preset", "debug", "--run-dir", str(run), "--max-steps", "1"]
    assert main([*argv, "--data-dir", str(tmp_path / "nonexistent")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # not even the folders made for the lock
    assert main([*argv, "--data-dir", str(data), "--holdout-fraction", "0.3"]) == 0
    assert json.loads((run / "config.json").read_text())["data_dir"] == str(data)


def test_train_vae_refused_in_an_existing_folder_writes_nothing_there(tmp_path):
    from world_models.training.configs import TRAIN_VAE_PRESETS
    from world_models.training.vae import train_vae

    run = tmp_path / "r7"
    run.mkdir()
    config = dataclasses.replace(
        TRAIN_VAE_PRESETS["debug"], data_dir=tmp_path / "nonexistent", run_dir=run
    )
    with pytest.raises(DataError, match="no such folder"):
        train_vae(config)
    assert [p.name for p in run.iterdir()] == [".lock"]  # the user's folder, kept


def test_train_mdrnn_and_train_controller_refused_write_no_config(tmp_path):
    from world_models.training.configs import TRAIN_MDNRNN_PRESETS
    from world_models.training.controller import train_controller
    from world_models.training.mdrnn import train_mdrnn

    series = write_series(tmp_path / "series")
    m_config = override(
        TRAIN_MDNRNN_PRESETS["debug"],
        series_dir=series,
        run_dir=tmp_path / "m-run",
        hidden_size=H,
        epochs=1,
        progress=False,
        tensorboard=False,
    )
    with pytest.raises(WorldModelsError):
        train_mdrnn(dataclasses.replace(m_config, series_dir=tmp_path / "nonexistent"))
    assert not (tmp_path / "m-run").exists()
    train_mdrnn(m_config)

    MDNRNN(latent_size=Z, action_size=1, hidden_size=H, num_gaussians=2).save_pretrained(
        tmp_path / "m"
    )
    c_config = dream_controller_config(tmp_path / "m", series, tmp_path / "c-run")
    # refused while loading what it scores with, after the folder was locked and checked
    with pytest.raises(DataError):
        train_controller(dataclasses.replace(c_config, series_dir=tmp_path / "nonexistent"))
    assert not (tmp_path / "c-run").exists()
    with pytest.raises(CheckpointError):
        train_controller(dataclasses.replace(c_config, mdrnn=tmp_path / "no-m"))
    assert not (tmp_path / "c-run").exists()
    run = train_controller(c_config)
    assert json.loads((run / "config.json").read_text())["series_dir"] == str(series)
