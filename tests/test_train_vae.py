"""The VAE trainer: run folder, resume, refusals, NaN stop, kill -9, DDP, the demo."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from world_models.cli import main
from world_models.core.checkpoint import read_checkpoint
from world_models.core.config import override
from world_models.core.errors import CheckpointError, ConfigError, DataError, TrainingDivergedError
from world_models.data.collect import CollectConfig, collect
from world_models.models.configs import VAEConfig
from world_models.models.vae import ConvVAE
from world_models.training import vae as vae_module
from world_models.training.configs import TRAIN_VAE_PRESETS as PRESETS
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
        model=VAEConfig(latent_size=8, kl_tolerance=0.5),
        epochs=1,
        batch_size=16,
        lr=1e-3,
        lr_reference_batch=16,
        log_every=2,
        progress=False,
        tensorboard=False,
        holdout_fraction=0.3,
    )
    return override(base, **kw)


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
    # The advice works: a lower lr and a warm-up resume the run rather than being refused.
    monkeypatch.setattr(ConvVAE, "compute_loss", real)
    train_vae(config(dataset, run, max_steps=4, epochs=2, lr=5e-4, warmup_steps=3))
    assert read_checkpoint(run / "checkpoints/last").meta["step"] == 4


def test_nan_on_held_out_data_stops(dataset, tmp_path, monkeypatch):
    nan = {"holdout_loss": math.nan, "holdout_recon": math.nan, "holdout_kl": 0.0}
    monkeypatch.setattr(vae_module.VAETrainer, "evaluate", lambda self: nan)
    with pytest.raises(TrainingDivergedError, match="NaN or Inf on held-out data"):
        train_vae(config(dataset, tmp_path / "run", max_steps=2))


def test_a_moved_run_folder_resumes(dataset, tmp_path, monkeypatch):
    train_vae(config(dataset, tmp_path / "run", max_steps=2, epochs=2))
    (tmp_path / "run").rename(tmp_path / "moved")
    monkeypatch.chdir(tmp_path)  # and named by a relative path now
    train_vae(config(dataset, Path("moved"), max_steps=3, epochs=2, lr_scaling="none"))
    assert read_checkpoint(tmp_path / "moved/checkpoints/last").meta["step"] == 3


def test_optimizer_state_of_another_model_is_refused(dataset, tmp_path):
    train_vae(config(dataset, tmp_path / "z8", max_steps=1))
    train_vae(config(dataset, tmp_path / "z16", max_steps=1, latent_size=16))
    name = "checkpoints/last/optimizer.pt"
    shutil.copy(tmp_path / "z16" / name, tmp_path / "z8" / name)
    with pytest.raises(CheckpointError, match=r"optimizer.pt holds .* another model$"):
        train_vae(config(dataset, tmp_path / "z8", max_steps=2))


def test_a_mid_epoch_resume_gathers_only_the_batches_it_trains_on(dataset, tmp_path):
    trainer = vae_module.VAETrainer(config(dataset, tmp_path / "run"))
    try:
        src = trainer.train_src
        full = list(src.batches(16, shuffle=True, seed=1))  # epoch 1 of seed 0
        gathered = []
        real = src._gather
        src._gather = lambda idx: gathered.append(idx) or real(idx)  # type: ignore[method-assign]
        tail = list(trainer._train_batches(epoch=1, start=2))
    finally:
        trainer.close()
    assert len(tail) == len(gathered) == len(full) - 2 >= 1
    assert all(torch.equal(a, b) for a, b in zip(tail, full[2:]))


def test_rerunning_a_finished_run_says_so(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train-vae", "--data-dir", str(dataset), "--run-dir", str(run), "--latent-size", "8"]
    args += ["--batch-size", "16", "--max-steps", "2", "--holdout-fraction", "0.3"]
    args += ["--no-progress", "--no-tensorboard"]
    assert main(args) == 0
    saved = (run / "checkpoints/last/meta.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "is already finished (epoch 0, step 2)" in out and "best checkpoint:" in out
    assert (run / "checkpoints/last/meta.json").stat().st_mtime_ns == saved  # untouched


def test_invalid_settings_are_named():
    with pytest.raises(ConfigError, match=r"batch_size=0, holdout_fraction=1.5"):
        TrainVAEConfig(batch_size=0, holdout_fraction=1.5)
    for bad in [
        {"max_steps": 0},  # would write a "finished" run that never trained
        {"max_steps": -3},
        {"time_budget_s": -1.0},
        {"time_budget_s": 0.0},
        {"checkpoint_every_s": -5.0},
        {"max_frames": 0},
    ]:
        ((name, value),) = bad.items()
        with pytest.raises(ConfigError, match=f"{name}={value}"):
            TrainVAEConfig(**bad)


def test_lr_rule():
    c = TrainVAEConfig(lr=1e-4, lr_reference_batch=100)
    assert effective_lr(replace(c, batch_size=400)) == pytest.approx(2e-4)
    assert effective_lr(replace(c, batch_size=400, lr_scaling="linear")) == pytest.approx(4e-4)
    assert effective_lr(replace(c, batch_size=100), world_size=4) == pytest.approx(2e-4)
    big = PRESETS["carracing-4096"]
    assert big.batch_size == 4096 and effective_lr(big) == pytest.approx(6.4e-4)


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


def test_cli_bad_device_is_one_line_and_writes_nothing(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train-vae", "--data-dir", str(dataset), "--run-dir", str(run), "--no-progress"]
    assert main([*args, "--device", "foo"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "device 'foo' is not a device" in err
    assert not run.exists()


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


def _torchrun(args: list[str], timeout: float, logs: Path) -> subprocess.CompletedProcess:
    """2 CPU processes (gloo) under torchrun; a hang fails the test instead of the suite.

    Output goes to files, not pipes: torchrun's workers run in their own sessions, and a
    hung one would hold a pipe open. On SIGTERM torchrun stops its workers itself.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    cmd += ["2", "-m", "world_models.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out, err = logs.with_suffix(".out"), logs.with_suffix(".err")
    with open(out, "w") as fo, open(err, "w") as fe:
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, text=True, env=env)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait(timeout=60)
            pytest.fail(f"torchrun hung for {timeout} s: {err.read_text()[-1500:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out.read_text(), err.read_text())


@pytest.mark.slow
def test_two_process_ddp_with_gloo_stops_checkpoints_and_resumes_together(dataset, tmp_path):
    run = tmp_path / "run"
    args = ["train-vae", "--data-dir", str(dataset), "--run-dir", str(run), "--latent-size"]
    args += ["8", "--batch-size", "8", "--epochs", "1000", "--holdout-fraction", "0.3"]
    args += ["--device", "cpu", "--log-every", "2", "--no-progress", "--no-tensorboard"]
    # Each rank's own clock would stop or checkpoint at its own step and hang the other in
    # a collective; rank 0's clock decides for both.
    budget = ["--time-budget-s", "1.5", "--checkpoint-every-s", "0.2"]
    first = _torchrun([*args, *budget], 120, tmp_path / "first")
    assert first.returncode == 0, first.stderr[-2000:]
    stopped = read_checkpoint(run / "checkpoints/last").meta
    assert not stopped["trainer"]["finished"] and stopped["step"] >= 2
    # The same command resumes on both ranks (rank 0's decision), here to a step limit.
    second = _torchrun([*args, "--max-steps", str(stopped["step"] + 4)], 120, tmp_path / "second")
    assert second.returncode == 0, second.stderr[-2000:]
    meta = read_checkpoint(run / "checkpoints/last").meta
    assert meta["trainer"]["finished"] and meta["step"] == stopped["step"] + 4
    # Each step saw 2 x 8 frames: the global batch counts both processes.
    assert meta["trainer"]["images_seen"] == meta["step"] * 16
    assert second.stdout.count("run folder:") == 1  # only rank 0 reports
    assert sum(1 for r in rows(run) if "loss" in r) >= 2


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
    held.write_bytes(held.read_bytes()[: held.stat().st_size // 2])  # fake episodes: ~3-5 kB
    with pytest.raises(DataError, match=held.name):
        train_vae(config(bad, tmp_path / "run"))


def test_no_held_out_episode_is_a_clear_error(dataset, tmp_path):
    with pytest.raises(DataError, match="no held-out episodes at holdout_fraction=0.0"):
        train_vae(config(dataset, tmp_path / "run", holdout_fraction=0.0))


def test_the_time_budget_is_read_every_step(dataset, tmp_path, monkeypatch):
    """Slow steps (10 s each on a fake clock), a 25 s budget, log_every 50: V stops after
    step 3 (train-mdrnn read its clock at log steps only and ran 4x over; V must not)."""
    import types

    clock = [0.0]
    real_step = vae_module.VAETrainer._step

    def slow_step(self, x):
        clock[0] += 10.0
        return real_step(self, x)

    monkeypatch.setattr(vae_module.VAETrainer, "_step", slow_step)
    monkeypatch.setattr(vae_module, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    run = train_vae(
        config(dataset, tmp_path / "run", batch_size=4, log_every=50, time_budget_s=25.0)
    )
    assert read_checkpoint(run / "checkpoints/last").meta["step"] == 3
