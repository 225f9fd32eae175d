"""An env from outside the package: one preset (and its own action mode) registered here
runs the whole pipeline, collect -> V -> encode -> M -> C in the dream -> evaluate in the
real env, through the same commands and flags as the built-in games."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from world_models.cli import main
from world_models.core.errors import ConfigError
from world_models.core.layout import Layout
from world_models.envs.presets import ENV_PRESETS, EnvPreset, Preprocess, register_preset
from world_models.models.actions import ACTION_MODES, ActionMode, register_action_mode


class BallEnv(gym.Env):
    """A ball on a 48x40 table that two actions push left or right; it earns +1 a step
    near the middle and the episode ends when it rolls off an edge (or at ``max_len``)."""

    metadata = {"render_modes": []}

    def __init__(self, max_len: int = 40) -> None:
        self.max_len = max_len
        self.observation_space = spaces.Box(0, 255, (40, 48, 3), np.uint8)
        self.action_space = spaces.Discrete(2)
        self._x, self._v, self._t = 24.0, 0.0, 0

    def _frame(self) -> np.ndarray:
        frame = np.full((40, 48, 3), 30, np.uint8)
        x = int(np.clip(self._x, 0, 44))
        frame[16:24, x : x + 4] = (250, 200, 20)  # the ball
        frame[:, :, 2] += np.uint8(self._t % 50)  # time passes: frames differ
        return frame

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._x, self._v, self._t = 24.0 + self.np_random.uniform(-6, 6), 0.0, 0
        return self._frame(), {}

    def step(self, action):
        self._v = 0.7 * self._v + (0.25 if int(action) == 1 else -0.25)  # <= 0.83 a step
        self._x += self._v
        self._t += 1
        terminated = not 0.0 <= self._x <= 44.0
        reward = 1.0 if abs(self._x - 22.0) < 8.0 else 0.0
        return self._frame(), reward, terminated, self._t >= self.max_len, {}


def make_ball(preset: EnvPreset, max_steps: int | None, env_kwargs: dict):
    env = BallEnv(**env_kwargs)
    return gym.wrappers.TimeLimit(env, max_steps) if max_steps is not None else env


class PushActions(ActionMode):
    """Discrete(2), 0 push left, 1 push right, from C's one output (its sign)."""

    name = "push"
    discrete = True
    keys_help = "left/right arrows push  R restart  Esc quit"
    fixed = {"left": 0, "right": 1}

    def outputs(self, action_dim: int) -> int:
        return 1

    def check_outputs(self, output_size: int) -> None:
        if output_size != 1:
            raise ValueError(f"push needs 1 output, got {output_size}")

    def to_env(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw[..., 0] > 0).long()  # (...,)

    def model_sizes(self, action_dim: int) -> tuple[int, ...]:
        return (2,)  # collect stores the index one-hot

    def to_model(self, action: torch.Tensor, size: int) -> torch.Tensor:
        return (action.unsqueeze(-1) == torch.arange(2, device=action.device)).float()

    def space(self, action_dim: int):
        return spaces.Discrete(2)

    def keys(self, held) -> np.ndarray:
        turn = [k for k in held if k in ("left", "right")]
        return np.array(1 if turn and turn[-1] == "right" else 0, np.int64)


BALL = EnvPreset(
    name="ball",
    env_id="tests/Ball-v0",
    preprocess=Preprocess(crop=(0, 40, 0, 48), size=64),
    actions=PushActions(),
    action_dim=2,
    default_policy="repeat",
    frame_shape=(40, 48),
    make=make_ball,
    fps=20,
    layout=Layout.standalone("ball", "-ball"),
)


@pytest.fixture
def ball():
    """The ball env and its action mode registered for one test, then forgotten."""
    register_action_mode(PushActions())
    register_preset(BALL)
    yield BALL
    ENV_PRESETS.pop("ball", None)
    ACTION_MODES.pop("push", None)


def test_a_registered_preset_is_an_env_everywhere(ball):
    from world_models.envs.make import make_env
    from world_models.evaluation.evaluate import baseline_policy
    from world_models.play.keys import action_for_keys, key_help

    env = make_env(ball, max_steps=5)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8  # 40x48 resized
    assert env.action_space == spaces.Discrete(2)
    assert ball.controller_outputs == 1 and ball.action_kind == "discrete"
    policy = baseline_policy("right", "ball")
    policy.reset(3)
    assert policy.act(np.zeros((3, 64, 64, 3), np.uint8)).tolist() == [1, 1, 1]
    assert action_for_keys(["right"], "push") == 1 and "push" in key_help("push")
    with pytest.raises(ConfigError, match="not a constant action of ball"):
        baseline_policy("stay", "ball")
    with pytest.raises(ConfigError, match="already registered"):
        register_preset(EnvPreset("ball", "other-v0", Preprocess(), "tanh", 2, "uniform"))


def test_an_unknown_env_is_one_line(capsys):
    assert main(["collect", "--env", "ball", "--episodes", "1"]) == 2  # not registered here
    assert "unknown env 'ball'" in capsys.readouterr().err


@pytest.mark.slow
def test_a_registered_pixel_env_runs_the_whole_pipeline(ball, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    at = ball.layout
    env = ["--env", "ball"]
    steps = [
        ["collect", "--preset", "debug", *env, "--out-dir", str(at.data), "--no-progress"],
        ["train-vae", "--preset", "debug", "--data-dir", str(at.data)]
        + ["--run-dir", str(at.vae_run)],
        ["encode", "--preset", "debug", "--data-dir", str(at.data), "--vae", str(at.vae)]
        + ["--out-dir", str(at.series), "--no-progress"],
        ["train-mdrnn", "--preset", "debug", "--series-dir", str(at.series)]
        + ["--run-dir", str(at.mdrnn_run), "--batch-size", "4", "--no-progress"],
        ["train-controller", "--preset", "debug", *env, "--mdrnn", str(at.mdrnn)]
        + ["--series-dir", str(at.series), "--run-dir", str(at.controller_run)],
        ["evaluate", "--preset", "debug", *env, "--controller", str(at.controller)]
        + ["--vae", str(at.vae), "--mdrnn", str(at.mdrnn), "--out-dir", str(at.evaluation)],
    ]
    for argv in steps:
        assert main(argv) == 0, (argv, capsys.readouterr().err)
    manifest = json.loads((tmp_path / at.data / "manifest.json").read_text())
    assert manifest["env"] == "ball" and manifest["action"]["dim"] == 2
    c_config = json.loads((tmp_path / at.controller / "config.json").read_text())["config"]
    assert c_config["action_mode"] == "push" and c_config["output_size"] == 1
    results = json.loads((tmp_path / at.evaluation / "results.json").read_text())
    assert results["env"] == "ball" and len(results["returns"]) == 8
    assert results["mean_length"] <= 40  # BallEnv's max_len
