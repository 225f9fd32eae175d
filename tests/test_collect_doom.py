"""Doom collection with worker processes: VizDoom's game processes end with their workers,
and the user's folder stays free of VizDoom's files."""

from __future__ import annotations

import os
import signal
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from world_models.data import store
from world_models.data.collect import CollectConfig, collect


def marked_processes(mark: str) -> list[int]:
    """Workers and VizDoom games whose environment holds ``mark`` (they inherit it), not
    multiprocessing's resource tracker, which lives as long as this process."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if mark.encode() in (proc / "environ").read_bytes():
                    cmd = (proc / "cmdline").read_bytes()
                    if b"vizdoom" in cmd or b"spawn_main" in cmd:
                        pids.append(int(proc.name))
            except OSError:  # gone, or not ours
                pass
    return pids


@pytest.mark.doom
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux's /proc")
def test_doom_workers_leave_no_game_process_nor_files(tmp_path, monkeypatch):
    pytest.importorskip("vizdoom")
    mark = f"world-models-test-{uuid.uuid4().hex}"
    monkeypatch.setenv("WM_TEST_MARK", mark)  # spawned workers and their games inherit it
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))  # the workers' temporary folders
    monkeypatch.setattr(tempfile, "tempdir", None)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    config = CollectConfig(
        out_dir=Path("data"), env="doom", episodes=3, max_steps=30, workers=2, progress=False
    )
    try:
        collect(config)
        deadline = time.monotonic() + 10
        while marked_processes(mark) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = marked_processes(mark)
        assert not left, f"collection left processes behind: {left}"
    finally:
        for pid in marked_processes(mark):
            os.kill(pid, signal.SIGKILL)  # VizDoom's game ignores SIGTERM
    assert len(store.list_episodes(cwd / "data")) == 3  # a relative out_dir still works
    assert sorted(p.name for p in cwd.iterdir()) == ["data"]  # no _vizdoom.ini, _vizdoom/
    assert not list(temp.iterdir())  # the game's temporary folders are removed
