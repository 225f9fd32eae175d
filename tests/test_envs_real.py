"""Short smoke runs on the real environments (skipped when their extra is missing)."""

from __future__ import annotations

import pytest

from world_models.data import store
from world_models.data.collect import CollectConfig, collect


def small(out, env, **kw) -> CollectConfig:
    return CollectConfig(out_dir=out, env=env, workers=1, progress=False, **kw)


@pytest.mark.box2d
def test_carracing_collect_smoke_and_determinism(tmp_path):
    pytest.importorskip("Box2D")
    collect(small(tmp_path / "a", "carracing", episodes=2, max_steps=50, seed=11))
    # episode 1 of seed 11 played after episode 0 in the same env == episode 0 of seed 12
    # in a fresh env: an episode depends on its seed only, not on what its worker ran before
    collect(small(tmp_path / "b", "carracing", episodes=1, max_steps=50, seed=12))
    ep = store.read_episode(tmp_path / "a" / "ep_000000.npz")
    assert ep.obs.shape == (50, 64, 64, 3) and ep.action.shape == (50, 3)
    assert ep.truncated[-1] and not ep.truncated[:-1].any() and not ep.terminated.any()
    assert (ep.action[:, 0] >= -1).all() and (ep.action[:, 1:] >= 0).all()
    assert ep.obs.std() > 5  # real pictures, not a blank screen
    a = (tmp_path / "a" / "ep_000001.npz").read_bytes()
    assert a == (tmp_path / "b" / "ep_000000.npz").read_bytes()  # same seed, same bytes
    m = store.read_manifest(tmp_path / "a")
    assert m["env_id"] == "CarRacing-v3" and m["preprocess"]["crop"] == [0, 84, 0, 96]


@pytest.mark.doom
def test_doom_take_cover_collect_smoke(tmp_path, monkeypatch):
    pytest.importorskip("vizdoom")
    monkeypatch.chdir(tmp_path)  # VizDoom writes _vizdoom.ini etc. into the cwd
    collect(small(tmp_path / "doom", "doom", episodes=2, max_steps=40))
    collect(small(tmp_path / "doom1", "doom", episodes=1, max_steps=40, seed=1))
    second = (tmp_path / "doom" / "ep_000001.npz").read_bytes()
    assert second == (tmp_path / "doom1" / "ep_000000.npz").read_bytes()  # seed-determined
    ep = store.read_episode(tmp_path / "doom" / "ep_000000.npz")
    assert ep.obs.shape == (40, 64, 64, 3)
    # discrete actions are stored one-hot, float32 (T, 3)
    assert ep.action.shape == (40, 3) and (ep.action.sum(1) == 1).all()
    assert (ep.reward == 1).all()  # TakeCover: +1 per step survived
    assert store.read_manifest(tmp_path / "doom")["policy"]["name"] == "repeat"
