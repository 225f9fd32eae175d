"""Collection: determinism across worker counts, resume / top-up, crashes, kills, backends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from world_models.cli import main
from world_models.core.errors import ConfigError, MissingDependencyError
from world_models.data import store
from world_models.data.collect import CollectConfig, WorkerDiedError, collect, episode_seed


def cfg(out: Path, **kw) -> CollectConfig:
    base = dict(
        out_dir=out,
        env="fake",
        episodes=6,
        workers=1,
        progress=False,
        env_kwargs={"min_len": 10, "max_len": 30},
    )
    base.update(kw)
    return CollectConfig(**base)


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in store.list_episodes(folder)}


def test_same_seed_same_bytes_whichever_worker(tmp_path):
    one = file_bytes(collect(cfg(tmp_path / "w1", workers=1)))
    two = file_bytes(collect(cfg(tmp_path / "w2", workers=2)))
    assert len(one) == 6 and one == two
    other = file_bytes(collect(cfg(tmp_path / "s1", seed=1, episodes=6)))
    assert not set(other.values()) & set(one.values())  # seeds 0 and 1 share no episode
    seeds = {episode_seed(s, i) for s in range(100) for i in range(1000)}
    assert len(seeds) == 100_000  # seed + i made seed 1's episode i seed 0's episode i + 1
    ep = store.read_episode(tmp_path / "w1" / "ep_000003.npz")
    assert ep.obs.shape[1:] == (64, 64, 3) and ep.action.shape == (len(ep), 3)
    assert ep.terminated[-1] and not ep.terminated[:-1].any()  # the fake env ends itself
    m = store.read_manifest(tmp_path / "w2")
    assert (m["episodes"], m["complete"], m["seed"], m["env"]) == (6, True, 0, "fake")
    assert m["episode_seed"] == "SeedSequence([seed, i])"
    assert m["frames"] == sum(
        len(store.read_episode(p)) for p in store.list_episodes(tmp_path / "w2")
    )
    assert m["policy"] == {"name": "brownian", "dt": 0.02} and "library_version" in m


def test_resume_tops_up_and_repairs(tmp_path):
    out = tmp_path / "d"
    ref = file_bytes(collect(cfg(tmp_path / "ref")))
    collect(cfg(out, episodes=3))
    first = {p.name: p.stat().st_mtime_ns for p in store.list_episodes(out)}
    bad = out / "ep_000001.npz"
    bad.write_bytes(bad.read_bytes()[:50])  # damaged after the fact
    (out / ".ep_000004.npz.tmp-99999-deadbeef").write_bytes(b"left by a killed run")
    with pytest.warns(UserWarning, match="re-collecting a bad episode"):
        collect(cfg(out, episodes=6))
    assert file_bytes(out) == ref  # topped up, repaired, identical to one clean run
    assert (out / "ep_000000.npz").stat().st_mtime_ns == first["ep_000000.npz"]  # skipped
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
    assert store.read_manifest(out)["episodes"] == 6


def test_other_settings_in_the_same_folder_are_refused(tmp_path):
    collect(cfg(tmp_path, episodes=1))
    with pytest.raises(ConfigError, match="seed: 0 there, 5 now"):
        collect(cfg(tmp_path, episodes=2, seed=5))
    m = store.read_manifest(tmp_path)
    del m["episode_seed"]  # as written before episode seeds were SeedSequence([seed, i])
    store.write_manifest(tmp_path, m)
    with pytest.raises(ConfigError, match="episode_seed: None there"):
        collect(cfg(tmp_path, episodes=2))


def test_a_first_run_that_failed_does_not_lock_the_folder(tmp_path):
    with pytest.raises(TypeError, match="no_such_option"):  # fails in the env, after the manifest
        collect(cfg(tmp_path, env_kwargs={"no_such_option": 1}))
    assert store.read_manifest(tmp_path) is not None and not store.list_episodes(tmp_path)
    collect(cfg(tmp_path, episodes=2))  # no episodes to protect: other settings are fine
    assert len(store.list_episodes(tmp_path)) == 2
    assert store.read_manifest(tmp_path)["env_kwargs"] == {"max_len": 30, "min_len": 10}


@pytest.mark.parametrize(
    "env, crop, match",
    [
        ("fake", (50, 10, 0, 96), "0 <= top < bottom"),  # inverted: all-zero frames before
        ("fake", (0, 84, 96, 96), "0 <= left < right"),
        ("fake", (-1, 84, 0, 96), "0 <= top < bottom"),
        ("doom", (0, 121, 0, 160), "does not fit the env's 120x160 frames"),
    ],
)
def test_bad_crops_fail_before_the_folder_is_touched(tmp_path, env, crop, match):
    if env == "doom":
        pytest.importorskip("vizdoom")  # its check comes first
    out = tmp_path / "d"
    with pytest.raises(ConfigError, match=match):
        collect(cfg(out, env=env, crop=crop, env_kwargs={}))
    assert not out.exists()


def test_inverted_crop_is_a_one_line_cli_error(tmp_path, capsys):
    argv = ["collect", "--preset", "debug", "--out-dir", str(tmp_path / "d"), "--no-progress"]
    assert main([*argv, "--crop", "50", "10", "0", "96"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: crop top,bottom,left,right") and err.count("\n") == 1
    assert main([*argv, "--workers", "1", "--episodes", "1"]) == 0  # the corrected command


def test_unguarded_script_with_workers_is_a_clear_error(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from pathlib import Path\n"
        "from world_models.data.collect import CollectConfig, collect\n"
        "collect(CollectConfig(out_dir=Path('d'), env='fake', episodes=2, workers=2, "
        "progress=False))\n"
    )
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0
    assert "call it under `if __name__ == '__main__':`" in proc.stderr


def test_discrete_env_stores_one_hot_actions(tmp_path):
    collect(cfg(tmp_path, env="fake-discrete", episodes=1))
    ep = store.read_episode(tmp_path / "ep_000000.npz")
    assert ep.action.dtype == np.float32 and ep.action.shape == (len(ep), 3)
    assert (ep.action.sum(1) == 1).all() and set(np.unique(ep.action)) <= {0.0, 1.0}
    assert store.read_manifest(tmp_path)["policy"]["name"] == "repeat"


def test_dead_worker_raises_instead_of_hanging(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(WorkerDiedError, match="re-run the same command to resume"):
        collect(
            cfg(tmp_path, workers=2, episodes=4, env_kwargs={"die_on_seed": episode_seed(0, 2)})
        )
    assert time.monotonic() - t0 < 60
    for p in store.list_episodes(tmp_path):  # what was written is whole
        store.read_episode(p)


def test_worker_error_keeps_its_type(tmp_path):
    with pytest.raises(TypeError, match="no_such_option"):
        collect(cfg(tmp_path, workers=2, env_kwargs={"no_such_option": 1}))


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def test_killed_collection_resumes_to_the_same_bytes(tmp_path):
    kw = dict(episodes=8, workers=2, env_kwargs={"min_len": 30, "max_len": 30, "step_delay": 0.02})
    out = tmp_path / "killed"
    script = (
        "from pathlib import Path\n"
        "from world_models.data.collect import CollectConfig, collect\n"
        f"collect(CollectConfig(out_dir=Path({str(out)!r}), env='fake', progress=False, "
        f"**{kw!r}))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(list(out.glob("ep_*.npz"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
            assert proc.poll() is None, "collection ended before it could be killed"
        proc.kill()  # SIGKILL the main process only, mid-run: its workers must not linger
        proc.wait()
        deadline = time.monotonic() + 15
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _group_alive(proc.pid), "orphaned collection workers kept running"
    finally:
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    done = store.list_episodes(out)
    assert 2 <= len(done) < 8
    for p in done:
        store.read_episode(p)  # no partial episode file, whatever the moment
    collect(cfg(out, **kw))
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
    # the frames do not depend on step_delay: an uninterrupted run without it is the reference
    clean = cfg(tmp_path / "clean", episodes=8, env_kwargs={"min_len": 30, "max_len": 30})
    assert file_bytes(out) == file_bytes(collect(clean))


def test_envpool_backend_without_envpool_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "envpool", None)  # as if not installed
    with pytest.raises(MissingDependencyError, match=r"world_models\[envpool\]"):
        collect(cfg(tmp_path, env="carracing", backend="envpool", episodes=1, env_kwargs={}))
    argv = [
        "collect",
        "--env",
        "carracing",
        "--backend",
        "envpool",
        "--out-dir",
        str(tmp_path),
        "--episodes",
        "1",
        "--workers",
        "1",
        "--no-progress",
    ]
    assert main(argv) == 2
    assert "world_models[envpool]" in capsys.readouterr().err


def _fixed_gas_run(backend: str, seed: int, steps: int = 100) -> dict[str, float]:
    """Statistics of one CarRacing episode driving straight at half gas."""
    from world_models.envs.make import make_env
    from world_models.envs.presets import CARRACING

    env = make_env(CARRACING, backend=backend, max_steps=steps)
    try:
        frames, rewards = [env.reset(seed=seed)[0]], []
        for _ in range(steps):
            obs, reward, terminated, truncated, _ = env.step(np.array([0, 0.5, 0], np.float32))
            frames.append(obs)
            rewards.append(reward)
            if terminated or truncated:
                break
    finally:
        env.close()
    f = np.stack(frames).astype(np.float32)  # (T + 1, 64, 64, 3)
    r = np.asarray(rewards)
    return {
        "length": len(r),
        "truncated": float(truncated and not terminated),
        "return": float(r.sum()),
        "tile_steps": float((r > 0).mean()),  # steps that reached a new track tile
        "time_penalty": float(np.isclose(r[r < 0], -0.1, atol=1e-4).mean()),  # others: -0.1
        "brightness": float(f.mean()),
        "grass": float((f[..., 1] > f[..., 0] + 30).mean()),
    }


@pytest.mark.box2d
def test_envpool_parity_with_gymnasium(tmp_path):
    pytest.importorskip("envpool")
    pytest.importorskip("Box2D")
    real = dict(env="carracing", episodes=1, max_steps=40, env_kwargs={})
    a = collect(cfg(tmp_path / "gym", **real))
    b = collect(cfg(tmp_path / "pool", backend="envpool", **real))
    ea, eb = (store.read_episode(d / "ep_000000.npz") for d in (a, b))
    assert ea.obs.shape == eb.obs.shape and ea.action.shape == eb.action.shape
    np.testing.assert_array_equal(ea.action, eb.action)  # the policy depends on the seed only

    # The env itself, under the same actions: envpool draws other tracks than Gymnasium for a
    # seed, so compare statistics over a few seeds, with loose tolerances.
    def mean_stats(backend: str) -> dict[str, float]:
        runs = [_fixed_gas_run(backend, seed) for seed in range(3)]
        return {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}

    gym_, pool = mean_stats("gymnasium"), mean_stats("envpool")
    for stats in (gym_, pool):
        assert stats["length"] == 100 and stats["truncated"] == 1 and stats["time_penalty"] == 1
        assert 0.08 < stats["tile_steps"] < 0.3 and 25 < stats["return"] < 90  # it drives
    assert abs(gym_["return"] - pool["return"]) < 20
    assert abs(gym_["tile_steps"] - pool["tile_steps"]) < 0.05
    assert abs(gym_["brightness"] - pool["brightness"]) < 8
    assert abs(gym_["grass"] - pool["grass"]) < 0.05


def test_cli_collect_debug_preset(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(
        [
            "collect",
            "--preset",
            "debug",
            "--out-dir",
            str(out),
            "--episodes",
            "2",
            "--workers",
            "1",
            "--no-progress",
        ]
    )
    assert rc == 0
    assert len(store.list_episodes(out)) == 2 and "episodes     2" in capsys.readouterr().out
    assert store.read_manifest(out)["max_steps"] == 50
    assert (
        main(
            [
                "collect",
                "--preset",
                "debug",
                "--out-dir",
                str(out),
                "--crop",
                "1",
                "2",
                "3",
                "--no-progress",
            ]
        )
        == 2
    )


def test_cli_defaults_follow_env(monkeypatch, capsys):
    seen: list[CollectConfig] = []

    class Stop(Exception):
        pass

    def record(config):
        seen.append(config)
        raise Stop

    monkeypatch.setattr("world_models.data.collect.collect", record)
    monkeypatch.setenv("WM_DEBUG", "1")  # main re-raises Stop
    for argv in (["--env", "doom"], [], ["--env", "fake-discrete"], ["--preset", "debug"]):
        with pytest.raises(Stop):
            main(["collect", *argv])
    doom, car, fake, debug = ((c.out_dir, c.env, c.episodes, c.max_steps) for c in seen)
    assert doom == (Path("data/doom"), "doom", 10_000, 2100)  # not carracing's folder, capped
    assert car == (Path("data/carracing"), "carracing", 10_000, None)
    assert fake == (Path("data/fake-discrete"), "fake-discrete", 100, None)
    assert debug == (Path("data/debug"), "fake", 8, 50)
    monkeypatch.setenv("COLUMNS", "500")  # no line wraps in --help
    assert main(["collect", "--help"]) == 0
    shown = capsys.readouterr().out
    assert "or the one --env names" in shown and "None: data/ENV" in shown


def test_raw_frames_resized_per_episode_equal_per_step_frames():
    # collect resizes a random policy's frames in chunks: the same frames as the env's own
    from world_models.data.collect import _CHUNK, run_episode
    from world_models.envs.make import make_env
    from world_models.envs.presets import FAKE
    from world_models.policies import make_random_policy

    eps = []
    for raw in (False, True):
        n = _CHUNK + 44
        env = make_env(FAKE, env_kwargs={"min_len": n, "max_len": n}, raw_frames=raw)
        policy = make_random_policy("brownian", env.action_space)
        eps.append(run_episode(env, policy, 7, preprocess=FAKE.preprocess if raw else None))
        env.close()
    per_step, chunked = eps
    assert len(chunked) == _CHUNK + 44 and chunked.obs.shape[1:] == (64, 64, 3)
    np.testing.assert_array_equal(chunked.obs, per_step.obs)
    np.testing.assert_array_equal(chunked.action, per_step.action)
