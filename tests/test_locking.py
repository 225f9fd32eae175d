"""One writer per folder: collect, import, encode and every trainer lock theirs."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from world_models.cli import main
from world_models.core.config import override
from world_models.core.errors import ConfigError, FolderBusyError
from world_models.core.locking import LOCK_FILE, lock_folder
from world_models.data import store
from world_models.data.collect import CollectConfig, collect

FAKE = {"min_len": 5, "max_len": 8}


@contextlib.contextmanager
def held_elsewhere(folder: Path, pid: int = 424242):
    """Lock ``folder`` as another process would: its own descriptor, its pid in the file
    (flock locks of two descriptors conflict even inside one process)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(fd, 0)
    os.write(fd, f"{pid} {os.uname().nodename}\n".encode())
    try:
        yield
    finally:
        os.close(fd)


def is_free(folder: Path) -> bool:
    fd = os.open(folder / LOCK_FILE, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def cfg(out: Path, **kw) -> CollectConfig:
    base = dict(out_dir=out, env="fake", episodes=2, workers=1, progress=False, env_kwargs=FAKE)
    return CollectConfig(**{**base, **kw})


def test_a_second_collect_into_a_held_folder_fails_naming_the_holders_pid(tmp_path, capsys):
    out = tmp_path / "data"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from world_models.core.locking import lock_folder
                with lock_folder({str(out)!r}, "dataset folder"):
                    print("held", flush=True)
                    sys.stdin.read()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        argv = ["collect", "--env", "fake", "--episodes", "2", "--seed", "1", "--workers", "1"]
        rc = main([*argv, "--out-dir", str(out), "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1, err
        assert f"dataset folder {out} is in use" in err and f"pid {holder.pid}" in err
        assert not store.list_episodes(out) and store.read_manifest(out) is None
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert is_free(out)  # the holder's exit released it; the file says nobody holds it
    assert (out / LOCK_FILE).read_text() == ""


def test_the_lock_is_released_after_a_run_and_after_an_error(tmp_path):
    out = collect(cfg(tmp_path / "data"))
    assert is_free(out)
    with pytest.raises(ConfigError, match="other settings"):  # raised while it held the lock
        collect(cfg(out, seed=5))
    assert is_free(out)
    collect(cfg(out, episodes=3))  # and the folder is usable again
    assert len(store.list_episodes(out)) == 3


def test_the_lock_file_confuses_no_listing_info_or_resume(tmp_path, capsys):
    out = collect(cfg(tmp_path / "data"))
    assert (out / LOCK_FILE).exists()
    assert [p.name for p in store.list_episodes(out)] == ["ep_000000.npz", "ep_000001.npz"]
    assert main(["data", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "episodes     2\n" in text and "BAD" not in text
    collect(cfg(out))  # a resume finds everything there


def test_the_lock_is_reentrant_within_one_process(tmp_path):
    with lock_folder(tmp_path / "f") as f:
        with lock_folder(f):
            pass
        assert not is_free(f)  # still held by the outer block
    assert is_free(f)


def test_collect_into_a_folder_held_elsewhere_writes_nothing(tmp_path):
    out = tmp_path / "data"
    with held_elsewhere(out), pytest.raises(FolderBusyError, match="pid 424242"):
        collect(cfg(out))
    assert not store.list_episodes(out) and store.read_manifest(out) is None


def test_data_import_locks_its_folder(tmp_path):
    from world_models.data.importers import import_rollouts

    src = tmp_path / "src"
    src.mkdir()
    np.savez(
        src / "a.npz",
        obs=np.zeros((4, 64, 64, 3), np.uint8),
        action=np.zeros((4, 3), np.float32),
        reward=np.zeros(4, np.float32),
        done=np.eye(4, dtype=bool)[-1],
    )
    with held_elsewhere(tmp_path / "out"), pytest.raises(FolderBusyError, match="424242"):
        import_rollouts(src, tmp_path / "out")
    assert import_rollouts(src, tmp_path / "out").imported == 1


def test_encode_locks_its_output_folder(tmp_path):
    from world_models.data.encode import EncodeConfig, encode
    from world_models.models.vae import ConvVAE

    data = collect(cfg(tmp_path / "data"))
    ConvVAE(latent_size=4).save_pretrained(tmp_path / "vae")
    config = EncodeConfig(
        data_dir=data, vae=tmp_path / "vae", out_dir=tmp_path / "series", progress=False
    )
    with held_elsewhere(tmp_path / "series"), pytest.raises(FolderBusyError, match="424242"):
        encode(config)
    assert not list((tmp_path / "series").glob("*.npz"))
    assert not (tmp_path / "series" / "series.json").exists()
    encode(config)
    assert len(list((tmp_path / "series").glob("ep_*.npz"))) == 2


def test_every_trainer_locks_its_run_folder(tmp_path):
    import dataclasses

    from world_models.training.configs import TRAIN_CONTROLLER_PRESETS as C_PRESETS
    from world_models.training.configs import TRAIN_VAE_PRESETS as V_PRESETS
    from world_models.training.controller import train_controller
    from world_models.training.mdrnn import TRAIN_MDNRNN_PRESETS, train_mdrnn
    from world_models.training.vae import train_vae

    series = tmp_path / "series"
    series.mkdir()
    for i in range(3):
        store.save_npz(
            series / store.episode_name(i),
            {
                "mu": np.zeros((20, 4), np.float16),
                "logvar": np.zeros((20, 4), np.float16),
                "action": np.zeros((20, 1), np.float32),
                "reward": np.zeros(20, np.float32),
                "terminated": np.zeros(20, bool),
                "truncated": np.zeros(20, bool),
            },
        )
    run = tmp_path / "run"
    runs = [
        lambda: train_vae(dataclasses.replace(V_PRESETS["debug"], run_dir=run)),
        lambda: train_mdrnn(
            override(
                TRAIN_MDNRNN_PRESETS["debug"],
                series_dir=series,
                run_dir=run,
                latent_size=4,
                action_size=1,
            )
        ),
        lambda: train_controller(dataclasses.replace(C_PRESETS["debug"], run_dir=run)),
    ]
    with held_elsewhere(run):
        for start in runs:
            with pytest.raises(FolderBusyError, match=f"run folder {run} is in use .*pid 424242"):
                start()
    assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]  # nothing else written


def test_a_refused_contender_keeps_the_holders_pid(tmp_path):
    """The reason core/locking.py is not filelock 3.x, which truncates the lock file on
    every attempt: the second contender must still learn who holds the folder."""
    folder = tmp_path / "run"
    with held_elsewhere(folder):
        for _ in range(2):
            with pytest.raises(FolderBusyError, match="pid 424242"):
                with lock_folder(folder, "run folder"):
                    pass
        assert (folder / LOCK_FILE).read_text().split()[0] == "424242"
