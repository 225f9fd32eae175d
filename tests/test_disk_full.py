"""A full disk while writing is one line naming the file and what was kept, and the
previous version survives (issue 20, point 5): checkpoints, optimizer state, episode and
series npz files, JSON, metrics, pictures and animations.

No real full disk is needed: ``full_disk(part)`` makes every write to a file whose name
contains ``part`` fail with ENOSPC (as the kernel does), through ``open`` itself, so every
writer (torch.save, zipfile, PIL, json, ...) meets it as it would on a full disk.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os

import numpy as np
import pytest
import torch
from helpers import fake_dataset

from world_models.cli import main
from world_models.core import atomic
from world_models.core.atomic import atomic_write_json, is_disk_full
from world_models.core.errors import DiskFullError
from world_models.data import store
from world_models.models.vae import ConvVAE

pytestmark = pytest.mark.usefixtures("one_thread")


class _FullFile:
    """A file whose writes fail with ENOSPC, as on a full disk."""

    def __init__(self, fh):
        self._fh = fh

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()

    def __iter__(self):
        return iter(self._fh)


@pytest.fixture
def full_disk(monkeypatch):
    parts: list[str] = []
    real_open = io.open

    def fake_open(file, mode="r", *args, **kwargs):
        fh = real_open(file, mode, *args, **kwargs)
        name = os.path.basename(os.fspath(file)) if isinstance(file, (str, os.PathLike)) else ""
        if any(c in mode for c in "wax+") and any(p in name for p in parts):
            return _FullFile(fh)
        return fh

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)
    return parts.append


def episode(t: int = 5, fill: int = 0) -> store.Episode:
    return store.Episode(
        obs=np.full((t, 64, 64, 3), fill, np.uint8),
        action=np.zeros((t, 3), np.float32),
        reward=np.zeros(t, np.float32),
        terminated=np.arange(t) == t - 1,
        truncated=np.zeros(t, bool),
    )


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and "no space left on device writing" in text, text
    return text


@pytest.mark.parametrize("member", ["model.safetensors", "optimizer.pt", "meta.json"])
def test_a_checkpoint_write_names_the_file_and_keeps_the_last_good_one(tmp_path, full_disk, member):
    path = tmp_path / "last"
    vae = ConvVAE(latent_size=4)
    opt = torch.optim.Adam(vae.parameters())
    vae.save_pretrained(path, step=1, optimizer_state=opt.state_dict())
    full_disk(member)
    with pytest.raises(DiskFullError) as exc:
        vae.save_pretrained(path, step=2, optimizer_state=opt.state_dict())
    text = one_line(exc)
    assert f"{path / member}" in text
    assert "the last good checkpoint there (step 1) is kept" in text
    assert ConvVAE.from_pretrained(path).checkpoint_meta["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last"]  # no temp folder left


def test_torch_s_own_writer_s_short_write_counts_when_the_disk_is_full(monkeypatch):
    error = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    monkeypatch.setattr(atomic, "_free_bytes", lambda path: 4096)
    assert is_disk_full(error)
    monkeypatch.setattr(atomic, "_free_bytes", lambda path: 10 * 2**30)
    assert not is_disk_full(error)  # a short write with space left is something else


def test_an_episode_or_series_npz_keeps_the_previous_file(tmp_path, full_disk):
    path = tmp_path / store.episode_name(0)
    store.write_episode(path, episode(fill=1))
    full_disk(path.name)
    with pytest.raises(DiskFullError) as exc:
        store.write_episode(path, episode(fill=2))
    assert f"writing {path}" in one_line(exc) and "the previous ep_000000.npz is kept" in str(
        exc.value
    )
    assert store.read_episode(path).obs.max() == 1
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    new = tmp_path / "ep_000001.npz"
    full_disk(new.name)
    with pytest.raises(DiskFullError, match="nothing was written"):
        store.save_npz(new, {"mu": np.zeros((3, 2), np.float16)})
    assert not new.exists()


# imageio's writer, dropped by the failed GIF, retries its flush when collected
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_json_metrics_and_pictures(tmp_path, full_disk):
    from world_models.core.media import plot_curves, save_animation, save_grid
    from world_models.training.runs import MetricsLogger, RunDir

    atomic_write_json(tmp_path / "manifest.json", {"a": 1})
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    metrics = MetricsLogger(run, tensorboard=False)
    metrics.log(1, loss=1.0)
    for part in ("manifest.json", "metrics", ".png", ".gif"):
        full_disk(part)
    with pytest.raises(DiskFullError, match="the previous manifest.json is kept"):
        atomic_write_json(tmp_path / "manifest.json", {"a": 2})
    assert json.loads((tmp_path / "manifest.json").read_text()) == {"a": 1}
    with pytest.raises(DiskFullError, match="metrics.jsonl .*the rows logged before it are kept"):
        metrics.log(2, loss=0.5)
    with pytest.raises(DiskFullError, match=r"grid\.png .*nothing was written"):
        save_grid(torch.rand(2, 3, 8, 8), tmp_path / "grid.png")
    with pytest.raises(DiskFullError, match="curve.png"):
        plot_curves({"loss": ([1, 2], [1.0, 0.5])}, tmp_path / "curve.png")
    with pytest.raises(DiskFullError, match="anim.gif"):
        save_animation([np.zeros((8, 8, 3), np.uint8)] * 2, tmp_path / "anim.gif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "run"]


def test_collect_stops_with_one_line_and_keeps_the_episodes_written(tmp_path, full_disk, capsys):
    out = tmp_path / "data"
    argv = ["collect", "--env", "fake", "--episodes", "3", "--workers", "1", "--no-progress"]
    full_disk("ep_000001.npz")
    assert main([*argv, "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no space left on device writing" in err, err
    assert f"{out / 'ep_000001.npz'}" in err
    assert [p.name for p in store.list_episodes(out)] == ["ep_000000.npz"]


def test_train_vae_names_the_checkpoint_and_the_step_kept(tmp_path, full_disk, capsys):
    data = fake_dataset(tmp_path / "data")
    run = tmp_path / "run"
    argv = ["train-vae", "--preset", "debug", "--data-dir", str(data), "--run-dir", str(run)]
    argv += ["--holdout-fraction", "0.3", "--latent-size", "4", "--epochs", "3"]
    assert main([*argv, "--max-steps", "2"]) == 0
    capsys.readouterr()
    full_disk("optimizer.pt")  # torch.save: the one whose own message names nothing
    assert main([*argv, "--max-steps", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"writing {run / 'checkpoints'}" in err and "optimizer.pt" in err
    assert "the last good checkpoint there (step 2) is kept" in err
    assert ConvVAE.from_pretrained(run / "checkpoints" / "last").checkpoint_meta["step"] == 2


def test_encode_stops_with_one_line_and_keeps_the_series_written(tmp_path, full_disk, capsys):
    data = fake_dataset(tmp_path / "data", episodes=3, max_steps=20, lengths=None)
    ConvVAE(latent_size=4).save_pretrained(tmp_path / "vae")
    series = tmp_path / "series"
    full_disk("ep_000002.npz")  # what the writer threads write, in the series folder
    argv = ["encode", "--data-dir", str(data), "--vae", str(tmp_path / "vae")]
    assert main([*argv, "--out-dir", str(series), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"writing {series / 'ep_000002.npz'}" in err, err
    assert sorted(p.name for p in series.glob("ep_*.npz")) == ["ep_000000.npz", "ep_000001.npz"]
