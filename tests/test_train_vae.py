"""The VAE trainer: run folder, resume, refusals, NaN stop, kill -9, DDP, the demo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from world_models.checkpoint import read_checkpoint
from world_models.cli import main
from world_models.data.collect import CollectConfig, collect
from world_models.errors import CheckpointError, ConfigError, DataError, TrainingDivergedError
from world_models.models.vae import ConvVAE
from world_models.training.vae import TrainVAEConfig, effective_lr, train_vae


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "fake"
    return collect(
        CollectConfig(out_dir=out, env="fake", episodes=10, max_steps=40, workers=1, progress=False)
    )


def config(dataset: Path, run: Path, **kw) -> TrainVAEConfig:
    base = TrainVAEConfig(
        data_dir=dataset,
        run_dir=run,
        latent_size=8,
        epochs=1,
        batch_size=16,
        lr=1e-3,
        lr_reference_batch=16,
        log_every=2,
        progress=False,
        tensorboard=False,
        holdout_fraction=0.3,
    )
    return replace(base, **kw)


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_run_writes_everything_and_lowers_the_loss(dataset, tmp_path):
    run = train_vae(config(dataset, tmp_path / "run", epochs=3))
    for rel in [
        "config.json",
        "checkpoints/last/model.safetensors",
        "checkpoints/best",
        "metrics.csv",
        "loss_curve.png",
        "images/reconstructions_epoch003.png",
        "images/samples_epoch001.png",
        "images/reconstructions_init.png",
    ]:
        assert (run / rel).exists(), rel
    train_losses = [r["loss"] for r in rows(run) if "loss" in r]
    assert train_losses[-1] < train_losses[0]
    held = [r["holdout_loss"] for r in rows(run) if "holdout_loss" in r]
    assert len(held) == 3 and held[-1] < held[0]
    vae = ConvVAE.from_pretrained(run / "checkpoints/best")
    assert vae.latent_size == 8 and vae.kl_tolerance == 0.5
    meta = read_checkpoint(run / "checkpoints/last").meta
    assert meta["trainer"]["epoch"] == 3 and meta["trainer"]["finished"]
    assert (run / "metrics.csv").read_text().splitlines()[0].startswith("step,")


def test_rerunning_resumes_from_the_last_checkpoint(dataset, tmp_path):
    run = tmp_path / "run"
    train_vae(config(dataset, run, max_steps=3, epochs=2))
    first = read_checkpoint(run / "checkpoints/last")
    assert first.meta["step"] == 3
    train_vae(config(dataset, run, max_steps=None, epochs=2))
    second = read_checkpoint(run / "checkpoints/last")
    assert second.meta["trainer"]["epoch"] == 2
    steps = [r["step"] for r in rows(run) if "loss" in r]
    assert steps == sorted(steps) and len(steps) == len(set(steps))  # no step logged twice
    assert not torch.equal(first.tensors["fc_mu.weight"], second.tensors["fc_mu.weight"])


def test_a_rerun_with_another_config_is_refused(dataset, tmp_path):
    run = tmp_path / "run"
    train_vae(config(dataset, run, max_steps=2))
    with pytest.raises(ConfigError, match="latent_size: run has 8, command asks 16"):
        train_vae(config(dataset, run, latent_size=16))
    # Length and speed settings may change on a re-run.
    train_vae(config(dataset, run, max_steps=4, epochs=2))


def test_a_checkpoint_of_another_model_config_is_refused(dataset, tmp_path):
    run = tmp_path / "run"
    train_vae(config(dataset, run, max_steps=2))
    ConvVAE(latent_size=4).save_pretrained(run / "checkpoints/last")
    with pytest.raises(CheckpointError, match="another model config"):
        train_vae(config(dataset, run, max_steps=4))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(dataset, tmp_path, monkeypatch):
    run = tmp_path / "run"
    train_vae(config(dataset, run, max_steps=2))
    good = read_checkpoint(run / "checkpoints/last")
    real = ConvVAE.compute_loss

    def poisoned(self, *a, **kw):
        total, rec, kl = real(self, *a, **kw)
        return total * float("nan"), rec, kl

    monkeypatch.setattr(ConvVAE, "compute_loss", poisoned)
    with pytest.raises(TrainingDivergedError, match=r"NaN or Inf .*Last good checkpoint"):
        train_vae(config(dataset, run, max_steps=6, epochs=2, checkpoint_every_s=0.0))
    kept = read_checkpoint(run / "checkpoints/last")
    assert kept.meta["step"] == good.meta["step"]
    for k in good.tensors:
        assert torch.equal(kept.tensors[k], good.tensors[k])
        assert torch.isfinite(kept.tensors[k].float()).all()


def test_invalid_settings_are_named():
    with pytest.raises(ConfigError, match=r"batch_size=0, holdout_fraction=1.5"):
        TrainVAEConfig(batch_size=0, holdout_fraction=1.5)


def test_lr_rule():
    c = TrainVAEConfig(lr=1e-4, lr_reference_batch=100)
    assert effective_lr(replace(c, batch_size=400)) == pytest.approx(2e-4)
    assert effective_lr(replace(c, batch_size=400, lr_scaling="linear")) == pytest.approx(4e-4)
    assert effective_lr(replace(c, batch_size=100), world_size=4) == pytest.approx(2e-4)


def test_cli_bad_data_dir_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(
        [
            "train-vae",
            "--data-dir",
            str(tmp_path / "empty"),
            "--run-dir",
            str(tmp_path / "run"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no episode files" in err


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "world_models.cli", *args]


@pytest.mark.slow
def test_kill_9_then_the_same_command_resumes(dataset, tmp_path):
    run = tmp_path / "run"
    args = _cli(
        "train-vae",
        "--data-dir",
        str(dataset),
        "--run-dir",
        str(run),
        "--latent-size",
        "8",
        "--batch-size",
        "16",
        "--epochs",
        "4",
        "--holdout-fraction",
        "0.3",
        "--checkpoint-every-s",
        "0",
        "--log-every",
        "1",
        "--no-progress",
        "--no-tensorboard",
    )
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        if (run / "checkpoints/last/model.safetensors").exists() and len(rows(run)) >= 4:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = read_checkpoint(run / "checkpoints/last").meta["step"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    meta = read_checkpoint(run / "checkpoints/last").meta
    assert meta["trainer"]["finished"] and meta["step"] > before
    ConvVAE.from_pretrained(run / "checkpoints/best")
    assert not [p for p in run.rglob("*") if ".tmp-" in p.name]


@pytest.mark.slow
def test_two_process_ddp_with_gloo(dataset, tmp_path):
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "world_models.cli",
        "train-vae",
        "--data-dir",
        str(dataset),
        "--run-dir",
        str(run),
        "--latent-size",
        "8",
        "--batch-size",
        "8",
        "--epochs",
        "1",
        "--holdout-fraction",
        "0.3",
        "--device",
        "cpu",
        "--no-progress",
        "--no-tensorboard",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = read_checkpoint(run / "checkpoints/last").meta
    n_train = sum(1 for r in rows(run) if "loss" in r)
    assert meta["trainer"]["finished"] and n_train >= 1
    # Each step saw 2 x 8 frames: the global batch counts both processes.
    assert meta["trainer"]["images_seen"] == meta["step"] * 16
    assert proc.stdout.count("run folder:") == 1  # only rank 0 reports


def test_demo_debug_preset_hands_over_every_stage(tmp_path, capsys):
    assert main(["demo", "--preset", "debug", "--out-dir", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    for name in ["reconstructions.png", "samples.png", "latent_traversal.png", "loss_curve.png"]:
        assert (tmp_path / "demo" / name).stat().st_size > 1000
        assert name in out


def test_a_corrupt_held_out_episode_is_named(dataset, tmp_path):
    from world_models.data import store

    bad = tmp_path / "data"
    bad.mkdir()
    for p in dataset.glob("ep_*.npz"):
        (bad / p.name).write_bytes(p.read_bytes())
    held = store.split_episodes(store.list_episodes(bad), "holdout", 0.3)[0]
    held.write_bytes(held.read_bytes()[:4000])
    with pytest.raises(DataError, match=held.name):
        train_vae(config(bad, tmp_path / "run"))


def test_no_held_out_episode_is_a_clear_error(dataset, tmp_path):
    with pytest.raises(DataError, match="no held-out episodes at holdout_fraction=0.0"):
        train_vae(config(dataset, tmp_path / "run", holdout_fraction=0.0))
