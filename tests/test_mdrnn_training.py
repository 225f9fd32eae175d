"""Training M: the series loader, train_mdrnn (learning, resume, checks) and the CLI."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from world_models.cli import main
from world_models.core.config import override
from world_models.core.errors import ConfigError, DataError
from world_models.data.series import SeriesSet, is_held_out, load_series, split_files
from world_models.models.mdrnn import MDNRNN
from world_models.training.configs import TRAIN_MDNRNN_PRESETS
from world_models.training.mdrnn import evaluate, train_mdrnn

Z, A = 4, 1


# Tiny models: one thread avoids spin-waits on a busy 2-core machine.
pytestmark = pytest.mark.usefixtures("one_thread")


def write_series(
    folder: Path,
    episodes: int = 16,
    length: int = 60,
    seed: int = 0,
    lengths: list[int] | None = None,
) -> Path:
    """Episodes where z_{t+1} rotates z_t's two planes by an angle set by the action."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for e in range(episodes):
        t_len = lengths[e] if lengths else length
        z = np.zeros((t_len, Z))
        z[0] = rng.normal(size=Z)
        action = rng.uniform(-1, 1, size=(t_len, A)).astype(np.float32)
        for t in range(t_len - 1):
            th = 0.4 + 0.6 * action[t, 0]
            c, s = np.cos(th), np.sin(th)
            for i in (0, 2):
                z[t + 1, i] = c * z[t, i] - s * z[t, i + 1]
                z[t + 1, i + 1] = s * z[t, i] + c * z[t, i + 1]
            z[t + 1] += 0.03 * rng.normal(size=Z)
        terminated = np.zeros(t_len, bool)
        terminated[-1] = True
        np.savez(
            folder / f"episode_{e:05d}.npz",
            mu=z.astype(np.float16),
            logvar=np.full((t_len, Z), np.log(1e-4), np.float16),
            action=action,
            reward=z[:, 0].astype(np.float32),
            terminated=terminated,
            truncated=np.zeros(t_len, bool),
        )
    return folder


def debug_config(tmp_path: Path, **overrides):
    base = override(
        TRAIN_MDNRNN_PRESETS["debug"],
        series_dir=tmp_path / "series",
        run_dir=tmp_path / "run",
        latent_size=Z,
        action_size=A,
        holdout_fraction=0.25,
        progress=False,
        tensorboard=False,
    )
    return override(base, **overrides)


# ---------------------------------------------------------------------- the loader
def test_holdout_split_is_stable_by_file_name(tmp_path):
    names = [f"ep_{i}.npz" for i in range(2000)]
    held = [n for n in names if is_held_out(n, 0.1)]
    assert 150 < len(held) < 250  # ~10%
    assert held == [n for n in names if is_held_out(n, 0.1)]  # deterministic
    folder = write_series(tmp_path / "series", episodes=12, length=5)
    train, held_files = split_files(folder, 0.25)
    write_series(tmp_path / "series", episodes=30, length=5, seed=1)  # the set grows
    train2, held2 = split_files(folder, 0.25)
    assert set(held_files) <= set(held2) and set(train) <= set(train2)
    assert not set(train2) & set(held2)


def test_windows_stay_inside_episodes_and_mask_the_end(tmp_path):
    folder = write_series(tmp_path / "series", episodes=3, lengths=[10, 4, 7])
    data = SeriesSet.load(sorted(folder.glob("*.npz")))
    assert data.num_steps == 21 and data.latent_size == Z and data.action_size == A
    # Window of 6 starting 3 steps before episode 0's end.
    batch = data.gather(torch.tensor([7]), torch.tensor([10]), 6)
    assert batch.mu.shape == (1, 7, Z) and batch.action.shape == (1, 6, A)
    assert batch.mask.tolist() == [[True] * 3 + [False] * 3]
    assert batch.next_mask.tolist() == [[True, True, False, False, False, False]]
    assert batch.done[0, :3].tolist() == [0.0, 0.0, 1.0]  # the last step's done still trains
    assert torch.equal(batch.mu[0, 3:], data.mu[9].expand(4, Z))  # padding: finite, own episode
    # Random windows never cross into the next episode.
    g = torch.Generator().manual_seed(0)
    ep_of = torch.repeat_interleave(torch.arange(3), data.lengths)
    for _ in range(20):
        b = data.sample(4, 5, g)
        assert b.mask.sum() > 0
        for row in range(4):
            hits = (data.mu[None] == b.mu[row, :, None]).all(-1)  # (L+1, N)
            eps = {int(ep_of[hits[j].nonzero()[0]]) for j in range(6)}
            assert len(eps) == 1


def test_lanes_cover_every_step_once(tmp_path):
    folder = write_series(tmp_path / "series", episodes=5, lengths=[10, 4, 7, 13, 1])
    data = SeriesSet.load(sorted(folder.glob("*.npz")))
    batches = list(data.lanes(2, 4))
    assert sum(int(b.mask.sum()) for b in batches) == data.num_steps
    assert sum(int(b.next_mask.sum()) for b in batches) == data.num_steps - 5
    assert sum(int(b.done.sum()) for b in batches) == 5
    assert sum(int((b.first & b.mask[:, 0]).sum()) for b in batches) == 5


def test_bad_series_files_raise_data_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_series(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .npz"):
        load_series(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    np.savez(bad / "a.npz", mu=np.zeros((3, 2), np.float16))
    with pytest.raises(DataError, match=r"a.npz: missing key\(s\)"):
        load_series(bad, 0.0)
    nan = np.zeros((3, 2), np.float16)
    nan[1, 1] = np.nan
    np.savez(
        bad / "a.npz",
        mu=nan,
        logvar=np.zeros((3, 2), np.float16),
        action=np.zeros((3, 1)),
        reward=np.zeros(3),
        terminated=np.zeros(3, bool),
        truncated=np.zeros(3, bool),
    )
    with pytest.raises(DataError, match="mu holds non-numeric, NaN or Inf"):
        load_series(bad, 0.0)
    (bad / "a.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="unreadable"):
        load_series(bad, 0.0)


# ---------------------------------------------------------------------- training
def test_training_lowers_held_out_nll_and_writes_the_run(tmp_path):
    write_series(tmp_path / "series", episodes=32, length=100)
    config = debug_config(tmp_path, epochs=20, lr=3e-3, hidden_size=48, reward_head=True)
    train, held = load_series(config.series_dir, config.holdout_fraction)
    assert held is not None and held.num_episodes >= 2
    torch.manual_seed(config.seed)
    untrained = MDNRNN(
        latent_size=Z, action_size=A, hidden_size=48, num_gaussians=3, reward_head=True
    )
    before = evaluate(untrained, held, config, torch.device("cpu"))

    run = train_mdrnn(config)
    with open(run / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 20
    first, last = float(rows[0]["heldout_nll"]), float(rows[-1]["heldout_nll"])
    assert last < first - 1.0 and last < before["nll"] - 1.0, (before, first, last)
    assert float(rows[-1]["heldout_reward"]) < 0.5 * float(rows[0]["heldout_reward"])
    best = MDNRNN.from_pretrained(run / "checkpoints" / "best")
    assert evaluate(best, held, config, torch.device("cpu"))["nll"] == pytest.approx(
        min(float(r["heldout_nll"]) for r in rows), abs=1e-4
    )
    meta = json.loads((run / "checkpoints" / "last" / "meta.json").read_text())
    assert meta["step"] == int(rows[-1]["step"]) and meta["epoch"] == 20
    assert (run / "checkpoints" / "last" / "optimizer.pt").is_file()
    assert json.loads((run / "config.json").read_text())["epochs"] == 20


def test_resume_continues_from_last_step_exactly(tmp_path):
    write_series(tmp_path / "series", episodes=8, length=40)
    once = train_mdrnn(debug_config(tmp_path, run_dir=tmp_path / "once", epochs=3))
    split = debug_config(tmp_path, run_dir=tmp_path / "split", epochs=2)
    train_mdrnn(split)
    steps_after_2 = json.loads((tmp_path / "split/checkpoints/last/meta.json").read_text())["step"]
    train_mdrnn(dataclasses.replace(split, epochs=3))  # same command, more epochs
    a = MDNRNN.from_pretrained(once / "checkpoints" / "last")
    b = MDNRNN.from_pretrained(tmp_path / "split" / "checkpoints" / "last")
    assert b.checkpoint_meta["step"] == a.checkpoint_meta["step"] == steps_after_2 * 3 // 2
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with open(tmp_path / "split" / "metrics.csv") as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == [1, 2, 3]
    train_mdrnn(dataclasses.replace(split, epochs=3))  # finished: a no-op
    assert (
        MDNRNN.from_pretrained(tmp_path / "split/checkpoints/last").checkpoint_meta["step"]
        == a.checkpoint_meta["step"]
    )
    with pytest.raises(ConfigError, match="hidden_size"):
        train_mdrnn(override(split, hidden_size=64))
    with pytest.raises(ConfigError, match="latent_size=5"):
        train_mdrnn(debug_config(tmp_path, run_dir=tmp_path / "z5", latent_size=5, epochs=1))
    train_mdrnn(debug_config(tmp_path, run_dir=tmp_path / "z5", latent_size=Z, epochs=1))


def test_truncated_bptt_with_done_head(tmp_path):
    write_series(tmp_path / "series", episodes=10, lengths=[30, 55, 12, 40, 70, 25, 33, 61, 8, 50])
    config = debug_config(
        tmp_path,
        carry_state=True,
        done_head=True,
        done_pos_weight=10.0,
        seq_len=10,
        batch_size=3,
        epochs=4,
        lr=3e-3,
    )
    run = train_mdrnn(config)
    with open(run / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert float(rows[-1]["heldout_nll"]) < float(rows[0]["heldout_nll"])
    assert float(rows[-1]["train_done"]) < float(rows[0]["train_done"])


def test_learning_rate_decays_per_step_to_its_floor(tmp_path):
    write_series(tmp_path / "series", episodes=8, length=60)
    run = train_mdrnn(debug_config(tmp_path, epochs=3, lr=1e-2, lr_decay=0.7, min_lr=1e-3))
    with open(run / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:  # the lr of the epoch's last step (step - 1: steps count from 0)
        expected = max(1e-2 * 0.7 ** (int(row["step"]) - 1), 1e-3)
        assert float(row["lr"]) == pytest.approx(expected, abs=2e-6)  # CSV keeps 6 decimals
    assert float(rows[-1]["lr"]) == pytest.approx(1e-3)  # floored by the end


def test_cli_train_mdrnn(tmp_path, capsys):
    write_series(tmp_path / "series", episodes=6, length=30)
    argv = [
        "train-mdrnn",
        "--preset",
        "debug",
        "--latent-size",
        str(Z),
        "--action-size",
        str(A),
        "--series-dir",
        str(tmp_path / "series"),
        "--run-dir",
        str(tmp_path / "run"),
        "--epochs",
        "1",
        "--no-progress",
        "--holdout-fraction",
        "0.25",
    ]
    assert main(argv) == 0
    assert (tmp_path / "run" / "checkpoints" / "last" / "model.safetensors").is_file()
    assert "done:" in capsys.readouterr().out
    assert main([*argv, "--hidden-size", "8"]) == 2
    assert "another config" in capsys.readouterr().err


@pytest.mark.parametrize("carry_state", [False, True])
def test_interrupted_run_resumes_mid_epoch_from_save_every(tmp_path, monkeypatch, carry_state):
    import world_models.training.mdrnn as trainer

    write_series(tmp_path / "series", episodes=10, length=200)  # ~13 batches per epoch
    kw = {"carry_state": carry_state, "batch_size": 2} if carry_state else {}  # 36 rounds
    once = train_mdrnn(debug_config(tmp_path, run_dir=tmp_path / "once", epochs=2, **kw))
    config = debug_config(tmp_path, run_dir=tmp_path / "crash", epochs=2, save_every=4, **kw)
    real_step, calls = trainer.train_step, []

    def crashing_step(*args, **kwargs):
        if len(calls) == 10:
            raise KeyboardInterrupt
        calls.append(1)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_step", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        train_mdrnn(config)
    meta = json.loads((tmp_path / "crash/checkpoints/last/meta.json").read_text())
    assert meta["step"] == 8 and meta["epoch"] == 0  # last save_every checkpoint, mid-epoch
    monkeypatch.setattr(trainer, "train_step", real_step)
    train_mdrnn(config)
    a = MDNRNN.from_pretrained(once / "checkpoints" / "last")
    b = MDNRNN.from_pretrained(tmp_path / "crash" / "checkpoints" / "last")
    assert b.checkpoint_meta["step"] == a.checkpoint_meta["step"]
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_non_finite_loss_stops_with_training_diverged(tmp_path, monkeypatch):
    from world_models.core.errors import TrainingDivergedError

    write_series(tmp_path / "series", episodes=6, length=30)
    real_loss = MDNRNN.loss

    def nan_loss(self, *args, **kwargs):
        parts = real_loss(self, *args, **kwargs)
        return {k: v * float("nan") for k, v in parts.items()}

    monkeypatch.setattr(MDNRNN, "loss", nan_loss)
    with pytest.raises(TrainingDivergedError, match="last good"):
        train_mdrnn(debug_config(tmp_path, epochs=1))


def test_training_presets_follow_the_paper():
    car, doom = TRAIN_MDNRNN_PRESETS["carracing"], TRAIN_MDNRNN_PRESETS["doom"]
    assert (car.model.hidden_size, car.seq_len, car.batch_size, car.lr, car.grad_clip) == (
        256,
        999,
        100,
        1e-3,
        1.0,
    )
    assert car.sample_z and not car.carry_state and car.lr_decay == 1.0
    assert (
        doom.model.hidden_size,
        doom.seq_len,
        doom.model.done_head,
        doom.model.done_pos_weight,
    ) == (
        512,
        500,
        True,
        10.0,
    )
    assert doom.carry_state and (doom.lr_decay, doom.min_lr) == (0.99999, 1e-5)


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"num_gaussians": 0}, "num_gaussians|gaussians"),
        ({"hidden_size": 0}, "hidden"),
        ({"lr": -1.0}, "lr must be > 0"),
        ({"log_every": 0}, "log_every"),
        ({"lr_decay": 0.0}, "lr_decay"),
    ],
)
def test_unusable_settings_fail_before_the_run_folder_is_written(tmp_path, bad, match):
    write_series(tmp_path / "series", episodes=6, length=30)
    config = debug_config(tmp_path, epochs=1)
    with pytest.raises(ConfigError, match=match):
        train_mdrnn(override(config, **bad))
    assert not (tmp_path / "run" / "config.json").exists()
    train_mdrnn(config)  # the corrected command is not refused as "another config"


def test_m_records_its_vae_and_refuses_another(tmp_path):
    from world_models.core.checkpoint import weights_digest
    from world_models.models.vae import ConvVAE
    from world_models.models.world_model import check_vae_matches

    write_series(tmp_path / "series", episodes=6, length=30)
    torch.manual_seed(0)
    ConvVAE(Z).save_pretrained(tmp_path / "vae_a")
    ConvVAE(Z).save_pretrained(tmp_path / "vae_b")  # same sizes, other weights
    manifest = tmp_path / "series" / "series.json"
    manifest.write_text(json.dumps({"vae_sha256": weights_digest(tmp_path / "vae_a")}))
    config = debug_config(tmp_path, epochs=1)
    run = train_mdrnn(config)
    m = MDNRNN.from_pretrained(run / "checkpoints" / "last")
    assert m.checkpoint_meta["vae_sha256"] == weights_digest(tmp_path / "vae_a")
    check_vae_matches(tmp_path / "vae_a", m, run)
    with pytest.raises(ConfigError, match="latents of another VAE"):
        check_vae_matches(tmp_path / "vae_b", m, run)
    manifest.write_text(json.dumps({"vae_sha256": weights_digest(tmp_path / "vae_b")}))
    with pytest.raises(ConfigError, match="re-encoded by another VAE"):
        train_mdrnn(dataclasses.replace(config, epochs=2))


def test_the_time_budget_is_checked_every_step_not_every_log_step(tmp_path, monkeypatch, capsys):
    """Slow steps (a busy machine): 10 s each on a fake clock, a 25 s budget, log_every
    50: the run stops after step 3 (at log steps only it ran to step 50, 4x over)."""
    import types

    import world_models.training.mdrnn as trainer

    write_series(tmp_path / "series", episodes=10, length=200)  # ~13 batches per epoch
    clock = [0.0]
    real_step = trainer.train_step

    def slow_step(*args, **kwargs):
        clock[0] += 10.0
        return real_step(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_step", slow_step)
    monkeypatch.setattr(trainer, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    config = debug_config(tmp_path, epochs=2, log_every=50, time_budget_s=25.0)
    train_mdrnn(config)
    assert "time budget reached at step 3 (epoch 1)" in capsys.readouterr().out
    meta = json.loads((tmp_path / "run/checkpoints/last/meta.json").read_text())
    assert (meta["step"], meta["epoch"], meta["batch_in_epoch"]) == (3, 0, 3)  # resumable
