"""``reproduce carracing``: C evolved in the real env on [z, h] (or z alone), the recipe as
stage records; the env's implementation chosen per run; episodes cut when a car stalls."""

from __future__ import annotations

import importlib.util
import json

import gymnasium as gym
import numpy as np
import pytest

from world_models.core.errors import ConfigError
from world_models.envs.make import StallLimit, resolve_backend
from world_models.envs.presets import get_preset
from world_models.recipes import (
    CARRACING_CPU_BUDGET,
    ReproduceConfig,
    recipe,
    reproduce,
    stage_configs,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_carracing_cpu_recipe_evolves_c_in_the_real_env_and_scores_on_gymnasium():
    stages = recipe(ReproduceConfig(game="carracing", budget="cpu", root=None))
    names = [s.name for s in stages]
    assert names == [
        "collect",
        "vae",
        "encode",
        "mdrnn",
        "controller",
        "evaluate",
        "evaluate_random",
    ]
    s = {st.name: st.config for st in stages}
    assert s["collect"].env == "carracing" and s["collect"].backend == "auto"
    assert s["collect"].policy in (None, "brownian")  # the env's default: Brownian
    assert s["vae"].model.latent_size == 32
    assert (s["mdrnn"].model.hidden_size, s["mdrnn"].model.num_gaussians) == (256, 5)
    c = s["controller"]
    assert c.target == "real" and c.env == "carracing" and c.series_dir is None
    assert (
        c.rollout.env_backend == "auto"
        and c.stall_steps == CARRACING_CPU_BUDGET["controller"]["stall_steps"]
    )
    assert c.model.hidden_input and not c.model.cell_input  # [z, h]: 867 weights
    ev = s["evaluate"]
    assert ev.env == "carracing" and ev.trials == 100
    assert ev.rollout.env_backend == "gymnasium"  # the score is Gymnasium's CarRacing-v3
    assert s["evaluate_random"].seed == ev.seed and s["evaluate_random"].policy == "random"
    minutes = sum(v.get("time_budget_s", 0) for v in CARRACING_CPU_BUDGET.values()) / 60
    assert minutes <= 110  # collect, encode and 200 scored tracks fit in the other 40
    # every stage reads what an earlier one wrote
    written = set()
    for st in stages:
        for path in st.inputs:
            assert any(path == w or w in path.parents for w in written), (st.name, path)
        written.update(st.outputs)


def test_z_only_reuses_the_data_v_and_m_and_writes_beside_them(tmp_path):
    full = stage_configs(ReproduceConfig(game="carracing", budget="cpu", root=tmp_path))
    z = stage_configs(ReproduceConfig(game="carracing", budget="cpu", root=tmp_path, z_only=True))
    assert list(z) == ["collect", "vae", "encode", "mdrnn", "controller-z", "evaluate-z"]
    for name in ("collect", "vae", "encode", "mdrnn"):
        assert z[name] == full[name]  # skipped when the full recipe has run them
    assert not z["controller-z"].model.hidden_input
    assert z["controller-z"].run_dir == tmp_path / "controller-z"
    assert z["evaluate-z"].out_dir == tmp_path / "evaluation-z"
    assert z["evaluate-z"].controller == tmp_path / "controller-z/checkpoints/best"


def test_carracing_has_no_session_budget():
    with pytest.raises(ConfigError, match="paper and cpu"):
        recipe(ReproduceConfig(game="carracing", budget="session"))


def test_the_debug_recipe_with_a_z_only_c_runs_and_records_each_stage(tmp_path):
    config = ReproduceConfig(game="debug", root=tmp_path, workers=2, progress=False)
    reproduce(config, log=lambda _: None)
    lines: list[str] = []
    reproduce(ReproduceConfig(**{**vars(config), "z_only": True}), log=lines.append)
    done = json.loads((tmp_path / "stages.json").read_text())
    assert {"controller", "controller-z", "evaluate", "evaluate-z"} <= set(done)
    skipped = [line.split(":")[0].strip() for line in lines if "skipped" in line]
    assert skipped == ["collect", "vae", "encode", "mdrnn"]
    c = json.loads((tmp_path / "controller-z/checkpoints/best/config.json").read_text())
    assert c["config"]["hidden_input"] is False
    real = json.loads((tmp_path / "evaluation-z/results.json").read_text())
    assert real["trials"] == 4


class _Rewards(gym.Env):
    observation_space = gym.spaces.Box(0, 1, (1,))
    action_space = gym.spaces.Discrete(1)

    def __init__(self, rewards):
        self.rewards = rewards

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        r = self.rewards[self.t]
        self.t += 1
        return np.zeros(1, np.float32), r, self.t == len(self.rewards), False, {}


def test_stall_limit_cuts_an_episode_after_steps_without_a_positive_reward():
    env = StallLimit(_Rewards([-0.1, 1.0, -0.1, -0.1, -0.1, 1.0, -0.1]), 3)
    env.reset()
    flags = [env.step(0)[3] for _ in range(5)]
    assert flags == [False, False, False, False, True]  # 3 in a row after the +1
    env.reset()  # the count starts again
    assert not env.step(0)[3]
    with pytest.raises(ConfigError, match="stall_steps"):
        StallLimit(_Rewards([0.0]), 0)


def test_auto_backend_is_envpool_only_where_it_is_installed_and_has_the_env():
    have = importlib.util.find_spec("envpool") is not None
    assert resolve_backend("auto", get_preset("carracing")) == ("envpool" if have else "gymnasium")
    assert resolve_backend("auto", get_preset("doom")) == "gymnasium"
    assert resolve_backend("gymnasium", get_preset("carracing")) == "gymnasium"


def test_the_env_factory_wraps_the_stall_limit_inside_the_frame_observation():
    from world_models.envs.make import FrameObservation
    from world_models.envs.pool import EnvFactory
    from world_models.training.configs import TrainControllerConfig

    env = EnvFactory("fake", 40, stall_steps=3)()
    try:
        assert isinstance(env, FrameObservation)  # the pool reads raw frames through it
        inner, found = env, False
        while hasattr(inner, "env"):
            inner = inner.env
            found = found or isinstance(inner, StallLimit)
        assert found and EnvFactory("fake", 40)().env.__class__ is not StallLimit
    finally:
        env.close()
    with pytest.raises(ConfigError, match="stall_steps must be >= 1"):
        TrainControllerConfig(stall_steps=0)
