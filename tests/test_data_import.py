"""Importing rollouts in hardmaru's and ctallec's npz layouts."""

from __future__ import annotations

import numpy as np
import pytest

from world_models.cli import main
from world_models.core.errors import DataError
from world_models.data import store
from world_models.data.importers import import_rollouts
from world_models.envs.presets import CARRACING, preprocess_frame


def hardmaru_file(path, T=6, seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.integers(0, 256, (T, 64, 64, 3), dtype=np.uint8)
    action = rng.uniform(-1, 1, (T, 3)).astype(np.float64)  # the original saved float64
    np.savez_compressed(path, obs=obs, action=action)
    return obs, action


def ctallec_file(path, T=5, seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.integers(0, 256, (T, 96, 96, 3), dtype=np.uint8)
    terminals = np.zeros(T, bool)
    terminals[-1] = True
    arrays = dict(
        observations=obs,
        actions=rng.uniform(0, 1, (T, 3)).astype(np.float32),
        rewards=rng.normal(size=T).astype(np.float32),
        terminals=terminals,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays


def test_import_hardmaru_layout_keeps_64px_frames(tmp_path):
    src = tmp_path / "record"
    src.mkdir()
    obs, action = hardmaru_file(src / "123.npz")
    report = import_rollouts(src, tmp_path / "out")
    assert (report.imported, report.missing) == (1, ("done", "reward"))
    ep = store.read_episode(tmp_path / "out" / "ep_000000.npz")
    np.testing.assert_array_equal(ep.obs, obs)  # lossless, untouched
    np.testing.assert_allclose(ep.action, action.astype(np.float32))
    assert (ep.reward == 0).all() and not ep.terminated.any() and not ep.truncated.any()
    m = store.read_manifest(tmp_path / "out")
    assert m["source"] == "import" and m["missing_keys"] == ["done", "reward"]
    assert m["layouts"] == ["hardmaru"]


def test_import_ctallec_layout_crops_and_resizes_raw_frames(tmp_path):
    src = tmp_path / "datasets" / "carracing"
    a = ctallec_file(src / "thread_1" / "rollout_0.npz", seed=1)
    b = ctallec_file(src / "thread_0" / "rollout_3.npz", T=4, seed=2)
    report = import_rollouts(src, tmp_path / "out")
    assert report.imported == 2
    # sorted source paths: thread_0/rollout_3 -> ep_000000, thread_1/rollout_0 -> ep_000001
    ep0 = store.read_episode(tmp_path / "out" / "ep_000000.npz")
    ep1 = store.read_episode(tmp_path / "out" / "ep_000001.npz")
    assert len(ep0) == 4 and len(ep1) == 5
    expected = np.stack([preprocess_frame(f, CARRACING.preprocess) for f in a["observations"]])
    np.testing.assert_array_equal(ep1.obs, expected)
    np.testing.assert_array_equal(ep1.terminated, a["terminals"])
    np.testing.assert_array_equal(ep0.reward, b["rewards"])
    assert not ep1.truncated.any()
    again = import_rollouts(src, tmp_path / "out")  # re-running keeps what is there
    assert (again.imported, again.skipped_existing) == (0, 2)


def test_import_doom_integer_actions_become_one_hot(tmp_path):
    src = tmp_path / "doom.npz"
    obs = np.zeros((4, 240, 320, 3), np.uint8)
    np.savez(
        src, obs=obs, action=np.array([0, 2, 1, 2]), reward=np.ones(4), done=np.array([0, 0, 0, 1])
    )
    import_rollouts(src, tmp_path / "out", env="doom")
    ep = store.read_episode(tmp_path / "out" / "ep_000000.npz")
    assert ep.obs.shape == (4, 64, 64, 3)
    np.testing.assert_array_equal(ep.action.argmax(1), [0, 2, 1, 2])
    assert ep.terminated.tolist() == [False, False, False, True]


def test_bad_sources_are_named_or_skipped(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    hardmaru_file(src / "a.npz")
    np.savez(src / "b.npz", obs=np.zeros((3, 64, 64, 3), np.uint8))  # no action
    (src / "c.npz").write_bytes(b"PK\x03\x04 torn")
    np.savez(src / "d.npz", obs=np.zeros((3, 50, 50, 3), np.uint8), action=np.zeros((3, 3)))
    with pytest.raises(DataError, match=r"b\.npz: unknown layout"):
        import_rollouts(src, tmp_path / "out")
    with pytest.warns(UserWarning) as warned:
        report = import_rollouts(src, tmp_path / "out2", skip_bad=True)
    text = " ".join(str(w.message) for w in warned)
    assert "b.npz" in text and "c.npz" in text and "d.npz" in text and "smaller than" in text
    assert (report.imported, report.bad) == (1, 3)
    assert main(["data", "import", str(src), str(tmp_path / "out3")]) == 2
    assert "b.npz" in capsys.readouterr().err
    assert main(["data", "import", str(src), str(tmp_path / "out4"), "--skip-bad"]) == 0
    assert "imported 1" in capsys.readouterr().out


def doom_file(path, action, T=4):
    np.savez(path, obs=np.zeros((T, 64, 64, 3), np.uint8), action=action)


@pytest.mark.parametrize(
    "action, message",
    [
        (np.array([0, 3, 1, 2]), r"action indices must be in 0\.\.2, got 0\.\.3"),
        (np.array([0, -1, 1, 2]), r"action indices must be in 0\.\.2, got -1\.\.2"),
        (np.array(["left", "right", "stay", "left"]), "action must be numbers"),
        (np.zeros((4, 2), np.float32), r"doom actions must be .* got \(4, 2\)"),
        (
            np.array([[1, 0, 0], [0, 1, 1], [0, 0, 1], [1, 0, 0]]),
            r"\(T, 3\) actions must be one-hot",
        ),
    ],
)
def test_bad_doom_actions_name_the_file_and_are_skipped(tmp_path, capsys, action, message):
    src = tmp_path / "src"
    src.mkdir()
    doom_file(src / "a.npz", np.array([0, 1, 2, 0]))
    doom_file(src / "b.npz", action)
    with pytest.raises(DataError, match=rf"b\.npz: {message}"):
        import_rollouts(src, tmp_path / "out", env="doom")
    args = ["data", "import", str(src), str(tmp_path / "out2"), "--env", "doom"]
    assert main([*args, "--skip-bad"]) == 0
    assert "b.npz" in capsys.readouterr().err
    assert [p.name for p in store.list_episodes(tmp_path / "out2")] == ["ep_000000.npz"]


def test_doom_continuous_actions_map_like_the_original(tmp_path):
    """doomrnn recorded a float in [-1, 1]: < -1/3 left, > 1/3 right, else stay."""
    from world_models.models.controller import DOOM_LEFT, DOOM_RIGHT, DOOM_STAY

    a = np.array([-0.9, -0.3, 0.0, 0.34, 1.0], np.float64)
    want = [DOOM_LEFT, DOOM_STAY, DOOM_STAY, DOOM_RIGHT, DOOM_RIGHT]
    for i, action in enumerate((a, a[:, None])):  # (T,) and (T, 1)
        doom_file(tmp_path / f"{i}.npz", action, T=5)
        import_rollouts(tmp_path / f"{i}.npz", tmp_path / f"out{i}", env="doom")
        ep = store.read_episode(tmp_path / f"out{i}" / "ep_000000.npz")
        assert ep.action.shape == (5, 3) and ep.action.dtype == np.float32  # as collected
        np.testing.assert_array_equal(ep.action, np.eye(3, dtype=np.float32)[want])
    m = store.read_manifest(tmp_path / "out0")
    assert m["action"] == {"kind": "discrete", "dim": 3, "stored_as": "float32 (T, A) one-hot"}
    np.savez(tmp_path / "w.npz", obs=np.zeros((5, 64, 64, 3), np.uint8), action=a[:, None])
    with pytest.raises(DataError, match=r"w\.npz: carracing actions must be \(T, 3\)"):
        import_rollouts(tmp_path / "w.npz", tmp_path / "out2")


@pytest.mark.parametrize("T, truncated", [(1000, True), (999, False)])
def test_episodes_cut_at_the_time_limit_are_truncated(tmp_path, T, truncated):
    a = ctallec_file(tmp_path / "src" / "r.npz", T=T)
    import_rollouts(tmp_path / "src", tmp_path / "out")
    ep = store.read_episode(tmp_path / "out" / "ep_000000.npz")
    assert ep.truncated[-1] == truncated and ep.terminated[-1] == (not truncated)
    assert not ep.terminated[:-1].any() and not ep.truncated[:-1].any()
    np.testing.assert_array_equal(ep.reward, a["rewards"])


def test_rerun_keeps_names_as_sources_come_and_go(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    obs = {n: hardmaru_file(src / f"{n}.npz", seed=i)[0] for i, n in enumerate("bd")}
    import_rollouts(src, out)  # b -> 0, d -> 1
    obs["a"] = hardmaru_file(src / "a.npz", seed=5)[0]  # sorts first: must not shift b and d
    (src / "d.npz").unlink()
    report = import_rollouts(src, out)
    assert (report.imported, report.skipped_existing, report.sources_gone) == (1, 1, 1)
    eps = {p.name: store.read_episode(p).obs for p in store.list_episodes(out)}
    assert sorted(eps) == ["ep_000000.npz", "ep_000001.npz", "ep_000002.npz"]
    for name, source in [("ep_000000.npz", "b"), ("ep_000002.npz", "a")]:
        np.testing.assert_array_equal(eps[name], obs[source])
    (out / "ep_000002.npz").unlink()  # lost: re-imported under its recorded name
    assert main(["data", "import", str(src), str(out)]) == 0
    assert "imported 1, kept 1" in capsys.readouterr().out
    np.testing.assert_array_equal(store.read_episode(out / "ep_000002.npz").obs, obs["a"])
    lines = (out / "imports.jsonl").read_text().splitlines()
    assert len(lines) == 3 and '"source": "a.npz"' in lines[2]
