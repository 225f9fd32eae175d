"""Nothing the project starts outlives it, whatever signal ends it (core/processes.py).

Every process started here carries a marker in its environment (inherited by workers and
by the processes they start, VizDoom's games included), so a leftover is found even after
its parent died and it was re-parented."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from gymnasium.spaces import Discrete

from world_models.envs.make import make_env
from world_models.envs.pool import EnvFactory, EnvPool
from world_models.envs.presets import get_preset
from world_models.policies import make_random_policy

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/environ").exists() or not sys.platform.startswith("linux"),
    reason="needs Linux (/proc, prctl)",
)

CLI = "import sys; from world_models.cli import main; sys.exit(main(sys.argv[1:]))"


def marked(mark: str, *, tracker: bool = True) -> list[tuple[int, str]]:
    """(pid, command line) of the live processes whose environment holds ``mark``; without
    ``tracker``, not multiprocessing's resource tracker (it lives as long as pytest)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if f"WM_TEST_MARK={mark}".encode() not in (proc / "environ").read_bytes():
                continue
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # gone, or not ours
            continue
        if state != "Z" and (tracker or "resource_tracker" not in cmd):
            found.append((int(proc.name), cmd))
    return found


def wait_until(predicate, timeout: float, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def left_behind(mark: str, timeout: float = 5.0, **kw) -> list[tuple[int, str]]:
    """What still runs ``timeout`` s from now (at once when nothing does)."""
    wait_until(lambda: not marked(mark, **kw), timeout)
    return marked(mark, **kw)


def kill_all(mark: str) -> None:
    for pid, _ in marked(mark, tracker=False):  # pytest's own tracker may hold the mark
        try:
            os.kill(pid, signal.SIGKILL)  # a failed test leaves nothing either
        except OSError:
            pass


def children(pid: int) -> list[int]:
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        return [int(c) for t in tasks for c in (t / "children").read_text().split()]
    except OSError:
        return []


def pgid_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])


@pytest.fixture
def mark(monkeypatch):
    value = f"world-models-test-{uuid.uuid4().hex}"
    monkeypatch.setenv("WM_TEST_MARK", value)  # workers spawned here inherit it
    yield value
    kill_all(value)


def start(args: list[str], cwd: Path, mark: str, script: str = CLI) -> subprocess.Popen:
    """The command in a session of its own, as a shell or ``timeout`` starts a job."""
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        cwd=cwd,
        env={**os.environ, "WM_TEST_MARK": mark},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # a job started from a terminal hears SIGHUP; one under nohup (as a CI runner may
        # be) would inherit SIGHUP ignored, which the command rightly keeps ignoring
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL),
    )


def like_timeout(proc: subprocess.Popen, sig: int) -> None:
    """What ``timeout`` does: the signal to the command, then to its whole process group."""
    os.kill(proc.pid, sig)
    os.killpg(proc.pid, sig)


def workers_of(pid: int) -> list[int]:
    return [c for c in children(pid) if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


# ---------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signalled_collect_stops_with_one_line_and_leaves_no_process(tmp_path, mark, sig):
    out = tmp_path / "data"
    args = ["collect", "--env", "fake", "--episodes", "99999999999", "--workers", "2"]
    proc = start([*args, "--no-progress", "--out-dir", str(out)], tmp_path, mark)
    try:
        wait_until(lambda: (out / "ep_000001.npz").exists() or proc.poll() is not None, 60)
        assert proc.poll() is None, proc.communicate()[1]
        assert (out / "ep_000001.npz").exists()
        assert len(workers_of(proc.pid)) == 2
        like_timeout(proc, sig)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"terminated by {sig.name}"), err
    assert "resume" in lines[0]
    assert not left_behind(mark)


def test_a_terminated_evaluate_stops_with_one_line_and_leaves_no_process(tmp_path, mark):
    args = ["evaluate", "--policy", "random", "--env", "fake", "--trials", "100000"]
    args += ["--workers", "2", "--video", "none", "--no-progress"]
    proc = start([*args, "--out-dir", str(tmp_path / "eval")], tmp_path, mark)
    try:
        up = wait_until(lambda: len(workers_of(proc.pid)) == 2 or proc.poll() is not None, 60)
        assert up is True and proc.poll() is None, proc.communicate()[1]
        time.sleep(1.0)  # the envs are made, episodes under way
        like_timeout(proc, signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("terminated by SIGTERM"), err
    assert not left_behind(mark)


def test_collect_of_a_huge_count_writes_its_first_episodes_at_once(tmp_path, mark):
    """The to-do list is lazy: 10^11 episodes do not wait for a list of 10^11 indices."""
    out = tmp_path / "data"
    args = ["collect", "--env", "fake", "--episodes", "99999999999", "--workers", "1"]
    proc = start([*args, "--no-progress", "--out-dir", str(out)], tmp_path, mark)
    t0 = time.monotonic()
    try:
        wait_until(lambda: (out / "ep_000002.npz").exists() or proc.poll() is not None, 60)
        took = time.monotonic() - t0
        assert proc.poll() is None, proc.communicate()[1]
        assert (out / "ep_000002.npz").exists(), "nothing written in 60 s"
    finally:
        proc.kill()
        proc.communicate()
    assert took < 30  # a few seconds, imports included, on a loaded machine
    assert sorted(p.name for p in out.glob("ep_*.npz"))[:3] == [
        "ep_000000.npz",
        "ep_000001.npz",
        "ep_000002.npz",
    ]


# ---------------------------------------------------------------------------- the pools


_GAMES: list = []  # in a worker: keeps its Popen objects alive


class GameLike:
    """A fake env that starts a process of its own ignoring SIGTERM, as VizDoom's does."""

    def __call__(self):
        script = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        script += "time.sleep(300)"
        _GAMES.append(subprocess.Popen([sys.executable, "-c", script]))
        return make_env(get_preset("fake"))


def test_a_sigkilled_pool_worker_takes_the_processes_its_env_started_with_it(mark):
    with EnvPool(GameLike(), workers=1) as pool:
        worker = pool._procs[0].pid

        def game():
            return [c for c in children(worker) if b"time.sleep(300)" in _cmdline(c)]

        games = wait_until(game, 30)
        assert games, "the env's process did not start"
        assert pgid_of(games[0]) == worker  # the worker leads the group its games are in
        os.kill(worker, signal.SIGKILL)
        assert not left_behind(mark, tracker=False)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


SLOW_POOL = """
import time
from world_models.envs.pool import EnvPool

class Slow:  # a worker busy making its env does not notice its pipe closing
    def __call__(self):
        time.sleep(300)

if __name__ == "__main__":
    pool = EnvPool(Slow(), workers=2)
    print(*[p.pid for p in pool._procs], flush=True)
    time.sleep(300)
"""


def test_pool_workers_die_with_a_sigkilled_main_process(tmp_path, mark):
    (tmp_path / "slow_pool.py").write_text(textwrap.dedent(SLOW_POOL))
    proc = subprocess.Popen(
        [sys.executable, "slow_pool.py"],
        cwd=tmp_path,
        env={**os.environ, "WM_TEST_MARK": mark},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert len(workers) == 2
        # started, and past their first lines (each has its watchdog)
        wait_until(lambda: all(children(w) for w in workers), 30)
        proc.kill()
        proc.wait()
        assert not left_behind(mark)
    finally:
        proc.kill()
        proc.stdout.close()


# ---------------------------------------------------------------------------- Doom


def _games(mark: str) -> list[int]:
    return [pid for pid, cmd in marked(mark) if "vizdoom/vizdoom" in cmd]


@pytest.mark.doom
def test_a_sigkilled_doom_worker_takes_its_game_with_it(mark, tmp_path, monkeypatch):
    pytest.importorskip("vizdoom")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the game's folder, which a SIGKILL leaves
    with EnvPool(EnvFactory("doom", max_steps=5), workers=1) as pool:
        worker = pool._procs[0].pid
        pool.run(make_random_policy("uniform", Discrete(3)), [0])  # the game starts at reset
        games = _games(mark)
        assert games, "no game started"
        assert pgid_of(games[0]) == worker  # VizDoom keeps its game in the worker's group
        os.kill(worker, signal.SIGKILL)
        assert wait_until(lambda: not _games(mark), 10), "the game outlived its worker"


@pytest.mark.doom
def test_doom_evaluate_ended_like_timeout_leaves_no_game(tmp_path, mark, monkeypatch):
    """The issue's ``timeout 12 world-models evaluate --pretrained doom --trials 2``."""
    pytest.importorskip("vizdoom")
    args = ["evaluate", "--policy", "random", "--env", "doom", "--trials", "2"]
    args += ["--workers", "2", "--video", "none", "--no-progress"]
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    proc = start([*args, "--out-dir", str(tmp_path / "eval")], tmp_path, mark)
    try:
        up = wait_until(lambda: len(_games(mark)) == 2 or proc.poll() is not None, 90)
        assert up is True and proc.poll() is None, proc.communicate()[1]
        like_timeout(proc, signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert not left_behind(mark)
    assert not list((tmp_path / "tmp").iterdir())  # the games ended cleanly: folders removed


@pytest.mark.doom
@pytest.mark.parametrize("who", ["worker", "main"])
def test_a_sigkilled_doom_collection_leaves_no_game(tmp_path, mark, monkeypatch, who):
    """The issue's collection worker killed with SIGKILL, and the main process killed so:
    the game goes with its worker (one worker: Doom's game is never in the main process)."""
    pytest.importorskip("vizdoom")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the game's folder, which a SIGKILL leaves
    out = tmp_path / "data"
    args = ["collect", "--env", "doom", "--episodes", "99999999999", "--workers", "1"]
    args += ["--max-steps", "20", "--no-progress", "--out-dir", str(out)]
    proc = start(args, tmp_path, mark)
    try:
        wait_until(lambda: (out / "ep_000000.npz").exists() or proc.poll() is not None, 90)
        assert proc.poll() is None, proc.communicate()[1]
        (worker,) = workers_of(proc.pid)
        assert _games(mark) and all(pgid_of(g) == worker for g in _games(mark))
        os.kill(worker if who == "worker" else proc.pid, signal.SIGKILL)
        assert wait_until(lambda: not _games(mark), 10), "the game outlived its worker"
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    if who == "worker":
        assert proc.returncode == 2 and len(err.strip().splitlines()) == 1, err
        assert "worker died" in err
    assert not left_behind(mark)
