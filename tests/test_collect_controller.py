"""Collecting with an evolved V+M+C (the paper's iterative training), with exploration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from world_models.core.errors import ConfigError
from world_models.data import store
from world_models.data.collect import CollectConfig, collect, episode_seed
from world_models.models.controller import Controller
from world_models.models.mdrnn import MDNRNN
from world_models.models.vae import ConvVAE
from world_models.policies.controller import ControllerPolicy

pytestmark = pytest.mark.usefixtures("one_thread")


def _models(tmp_path):
    torch.manual_seed(0)
    vae, m = ConvVAE(8), MDNRNN(latent_size=8, action_size=3, hidden_size=16, num_gaussians=2)
    c = Controller(latent_size=8, hidden_size=16, output_size=1, action_mode="thirds")
    with torch.no_grad():
        c.fc.weight.mul_(30)  # all three actions, not only stay
    for name, model in (("v", vae), ("m", m), ("c", c)):
        model.save_pretrained(tmp_path / name)
    return vae, m, c


def _cfg(tmp_path, out, **kw):
    base = dict(
        out_dir=tmp_path / out,
        env="fake-discrete",
        episodes=3,
        workers=1,
        progress=False,
        env_kwargs={"min_len": 20, "max_len": 30},
        controller=tmp_path / "c",
        vae=tmp_path / "v",
        mdrnn=tmp_path / "m",
    )
    return CollectConfig(**{**base, **kw})


def _actions(folder):
    return [store.read_episode(p).action.argmax(1) for p in store.list_episodes(folder)]


def test_controller_plays_the_episodes_and_explore_mixes_in_the_random_policy(tmp_path):
    vae, m, c = _models(tmp_path)
    collect(_cfg(tmp_path, "c0", explore=0.0))
    # explore 0: every stored action is C's, replayed on the stored frames
    for i, path in enumerate(store.list_episodes(tmp_path / "c0")):
        ep = store.read_episode(path)
        policy = ControllerPolicy(vae, m, c, "cpu")
        policy.reset(1, seed=[episode_seed(0, i)])  # C's z noise follows the episode's seed
        replayed = [int(policy.act(frame[None])[0]) for frame in ep.obs]
        np.testing.assert_array_equal(ep.action.argmax(1), replayed)
        assert len(set(replayed)) > 1
    manifest = store.read_manifest(tmp_path / "c0")
    assert manifest["policy"]["name"] == "controller"
    assert len(manifest["policy"]["controller_sha256"]) == 64
    assert manifest["policy"]["random"]["name"] == "repeat"
    # explore 1: the random data policy's actions exactly
    collect(_cfg(tmp_path, "c1", explore=1.0))
    collect(_cfg(tmp_path, "rand", controller=None, vae=None, mdrnn=None))
    for a, b in zip(_actions(tmp_path / "c1"), _actions(tmp_path / "rand")):
        np.testing.assert_array_equal(a, b)
    # in between: some of each
    collect(_cfg(tmp_path, "c5", explore=0.5))
    mixed = np.concatenate(_actions(tmp_path / "c5"))
    assert 0 < len(mixed) and len(set(mixed)) > 1


def test_missing_or_mismatched_models_are_one_line_errors(tmp_path):
    _models(tmp_path)
    with pytest.raises(ConfigError, match="needs --mdrnn"):
        collect(_cfg(tmp_path, "x", mdrnn=None))
    with pytest.raises(ConfigError, match="no checkpoint"):
        collect(_cfg(tmp_path, "x", vae=tmp_path / "nowhere"))
    Controller(
        latent_size=8, hidden_size=16, output_size=3, action_mode="carracing"
    ).save_pretrained(tmp_path / "c3")
    with pytest.raises(ConfigError, match="maps actions as 'carracing'"):
        collect(_cfg(tmp_path, "x", controller=tmp_path / "c3"))
    assert not (tmp_path / "x").exists()  # refused before the folder was made
