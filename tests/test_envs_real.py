"""Short smoke runs on the real environments (skipped when their extra is missing)."""

from __future__ import annotations

import shutil

import pytest

from world_models.data import store
from world_models.data.collect import CollectConfig, collect


def small(out, env, **kw) -> CollectConfig:
    return CollectConfig(out_dir=out, env=env, workers=1, progress=False, **kw)


def episode_1_alone(first, out, env, **kw) -> bytes:
    """Episode 1 collected in a fresh env (episode 0 copied from folder ``first``)."""
    out.mkdir()
    shutil.copy(first / "ep_000000.npz", out)
    collect(small(out, env, episodes=2, **kw))
    return (out / "ep_000001.npz").read_bytes()


@pytest.mark.box2d
def test_carracing_collect_smoke_and_determinism(tmp_path):
    pytest.importorskip("Box2D")
    collect(small(tmp_path / "a", "carracing", episodes=2, max_steps=50, seed=11))
    ep = store.read_episode(tmp_path / "a" / "ep_000000.npz")
    assert ep.obs.shape == (50, 64, 64, 3) and ep.action.shape == (50, 3)
    assert ep.truncated[-1] and not ep.truncated[:-1].any() and not ep.terminated.any()
    assert (ep.action[:, 0] >= -1).all() and (ep.action[:, 1:] >= 0).all()
    assert ep.obs.std() > 5  # real pictures, not a blank screen
    # episode 1 played after episode 0 in the same env == episode 1 alone in a fresh env:
    # an episode depends on its seed only, not on what its worker ran before
    a = (tmp_path / "a" / "ep_000001.npz").read_bytes()
    assert a == episode_1_alone(tmp_path / "a", tmp_path / "b", "carracing", max_steps=50, seed=11)
    m = store.read_manifest(tmp_path / "a")
    assert m["env_id"] == "CarRacing-v3" and m["preprocess"]["crop"] == [0, 84, 0, 96]


@pytest.mark.doom
def test_doom_take_cover_collect_smoke(tmp_path, monkeypatch):
    pytest.importorskip("vizdoom")
    monkeypatch.chdir(tmp_path)  # VizDoom would write _vizdoom.ini etc. into the cwd
    collect(small(tmp_path / "doom", "doom", episodes=2, max_steps=40))
    second = (tmp_path / "doom" / "ep_000001.npz").read_bytes()
    assert second == episode_1_alone(tmp_path / "doom", tmp_path / "doom1", "doom", max_steps=40)
    ep = store.read_episode(tmp_path / "doom" / "ep_000000.npz")
    assert ep.obs.shape == (40, 64, 64, 3)
    # discrete actions are stored one-hot, float32 (T, 3)
    assert ep.action.shape == (40, 3) and (ep.action.sum(1) == 1).all()
    assert (ep.reward == 1).all()  # TakeCover: +1 per step survived
    assert store.read_manifest(tmp_path / "doom")["policy"]["name"] == "repeat"
    assert not list(tmp_path.glob("_vizdoom*"))  # it ran in a temporary folder
