"""The frame cache of a dataset that cannot be written goes elsewhere, and says where
(issue 20, point 6): train-vae on a ``chattr +i`` (or read-only) dataset no longer dies of
a raw PermissionError."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import pytest
from helpers import fake_dataset

from world_models.cli import main
from world_models.data import sources
from world_models.data.sources import CACHE_DIR, FrameSource

pytestmark = pytest.mark.usefixtures("one_thread")


def dataset(folder: Path) -> Path:
    return fake_dataset(folder)


@contextlib.contextmanager
def read_only(folder: Path, how: str, monkeypatch):
    """``folder`` made unwritable: for real with chattr +i where the file system and our
    rights allow it, else by refusing every new file in it as such a folder does."""
    if how == "chattr":
        if shutil.which("chattr") is None:
            pytest.skip("no chattr")
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
            pytest.skip("chattr +i is not allowed here (needs root and ext4-like)")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        return
    real_mkstemp, real_mkdir = tempfile.mkstemp, Path.mkdir

    def refuse_mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).is_relative_to(folder):
            raise PermissionError(1, "Operation not permitted", str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    def refuse_mkdir(self, *args, **kwargs):
        if self.is_relative_to(folder) and not self.exists():
            raise PermissionError(1, "Operation not permitted", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(sources.tempfile, "mkstemp", refuse_mkstemp)
    monkeypatch.setattr(Path, "mkdir", refuse_mkdir)
    yield


@pytest.mark.parametrize("how", ["chattr", "simulated"])
def test_train_vae_on_a_read_only_dataset_caches_elsewhere_and_says_so(
    tmp_path, monkeypatch, capsys, how
):
    data = dataset(tmp_path / "data")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(sources, "_said", set())
    argv = ["train-vae", "--preset", "debug", "--data-dir", str(data), "--max-steps", "1"]
    argv += ["--holdout-fraction", "0.3", "--latent-size", "4", "--run-dir", str(tmp_path / "r")]
    with read_only(data, how, monkeypatch):
        assert main(argv) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if "frame cache" in line]
    assert len(said) == 1 and f"{data} cannot be written" in said[0], said  # once, not per split
    assert not (data / CACHE_DIR).exists()
    caches = list((tmp_path / "xdg" / "world_models" / "frames").glob("data-*/frames-*.npy"))
    assert len(caches) == 2  # train and held-out, in this dataset's own folder


def test_cache_dir_puts_the_cache_there_and_a_cache_in_the_dataset_is_used_in_place(
    tmp_path, monkeypatch
):
    data = dataset(tmp_path / "data")
    chosen = tmp_path / "chosen"
    src = FrameSource(data, "all", cache_dir=chosen)
    assert not (data / CACHE_DIR).exists()
    assert [p.parent.parent for p in chosen.glob("*/frames-all-*.npy")] == [chosen]
    FrameSource(data, "all")  # the default place: in the dataset, while it is writable
    assert len(list((data / CACHE_DIR).glob("frames-all-*.npy"))) == 1
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with read_only(data, "simulated", monkeypatch), warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback, no warning: the cache is there
        again = FrameSource(data, "all")
    assert again.num_frames == src.num_frames and not (tmp_path / "xdg").exists()
