"""`world-models play`: keys -> actions, the frame loop, the drawing, and the session run
headless (SDL_VIDEODRIVER=dummy) with key events posted as a person would press them."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from helpers import save_play_models

from world_models import cli
from world_models.core.errors import ConfigError
from world_models.envs.make import make_env
from world_models.envs.presets import get_preset
from world_models.models.controller import (
    DOOM_LEFT,
    DOOM_RIGHT,
    DOOM_STAY,
    Controller,
    actions_for_model,
    map_actions,
)
from world_models.models.mdrnn import MDNRNN
from world_models.models.vae import ConvVAE
from world_models.play import draw
from world_models.play.keys import (
    BRAKE,
    DOWN,
    LEFT,
    RIGHT,
    UP,
    Keyboard,
    KeyboardPolicy,
    action_for_keys,
)
from world_models.play.loop import Command, GameLoop, run
from world_models.play.sessions import PlayConfig, play
from world_models.policies import Policy

Z, H = 8, 16


pytestmark = pytest.mark.usefixtures("headless")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """Tiny untrained V (z=8), M (h=16, one-hot or Box 3-dim actions), two Cs, a series."""
    root = save_play_models(tmp_path_factory.mktemp("play_models"), Z, H)
    (root / "series").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        np.savez(
            root / "series" / f"ep_{i:06d}.npz",
            mu=rng.standard_normal((4, Z)).astype(np.float16),
            logvar=np.full((4, Z), -4.0, np.float16),
        )
    return root


class RecordingEnv(gym.Wrapper):
    """Keeps every action the env was given, and every reset."""

    def __init__(self, env):
        super().__init__(env)
        self.actions: list = []
        self.resets = 0

    def reset(self, **kwargs):
        self.resets += 1
        return self.env.reset(**kwargs)

    def step(self, action):
        self.actions.append(action)
        return self.env.step(action)


def _events(pg, script: dict[int, list[tuple[int, int]]]):
    """A hook that posts (event type, key) pairs before the tick of that total step."""
    posted: set[int] = set()

    def hook(loop):
        t = loop.total_steps
        if t in script and t not in posted:
            posted.add(t)
            for kind, key in script[t]:
                pg.event.post(pg.event.Event(kind, key=key))

    return hook


def _pygame():
    from world_models.play.window import require_pygame

    return require_pygame()


# ---------------------------------------------------------------------------- keys


def test_doom_keys_use_the_controllers_encoding():
    assert action_for_keys([], "thirds") == DOOM_STAY == 0
    assert action_for_keys([LEFT], "thirds") == DOOM_LEFT == 1
    assert action_for_keys([RIGHT], "thirds") == DOOM_RIGHT == 2
    assert action_for_keys([LEFT, RIGHT], "thirds") == DOOM_RIGHT  # the last pressed wins
    assert action_for_keys([RIGHT, LEFT, UP], "thirds") == DOOM_LEFT
    # the same index C gives for a raw output in its left / right third
    left_c = map_actions(torch.tensor([[-0.9]]), "thirds")
    right_c = map_actions(torch.tensor([[0.9]]), "thirds")
    assert int(left_c[0]) == action_for_keys([LEFT], "thirds")
    assert int(right_c[0]) == action_for_keys([RIGHT], "thirds")
    # and M sees it as the original's scalar: left -1, right +1
    idx = torch.as_tensor([int(action_for_keys([LEFT], "thirds"))])
    assert actions_for_model(idx, "thirds", 1).item() == -1.0
    assert get_preset("doom").action_kind == "discrete" and get_preset("doom").action_dim == 3


def test_carracing_keys_steer_gas_brake():
    np.testing.assert_array_equal(action_for_keys([], "carracing"), [0, 0, 0])
    np.testing.assert_array_equal(action_for_keys([LEFT], "carracing"), [-1, 0, 0])
    np.testing.assert_array_equal(action_for_keys([RIGHT, UP], "carracing"), [1, 1, 0])
    np.testing.assert_allclose(action_for_keys([DOWN, LEFT], "carracing"), [-1, 0, BRAKE])
    a = action_for_keys([UP], "carracing")
    assert a.dtype == np.float32 and get_preset("carracing").action_dim == a.shape[0]
    space = make_env(get_preset("fake")).action_space  # CarRacing's Box
    assert all(space.contains(action_for_keys(k, "carracing")) for k in ([LEFT, DOWN], [UP]))
    with pytest.raises(ValueError, match="no keyboard mapping"):
        action_for_keys([], "tanh")


def test_keyboard_tracks_keydown_keyup_restart_quit():
    pg = _pygame()
    kb = Keyboard(pg)

    def ev(kind, key=None):
        return pg.event.Event(kind, key=key) if key is not None else pg.event.Event(kind)

    assert kb.handle([ev(pg.KEYDOWN, pg.K_LEFT)]) == Command()
    assert kb.held == [LEFT] and kb.action("thirds") == DOOM_LEFT
    kb.handle([ev(pg.KEYDOWN, pg.K_d)])  # D is right too
    assert kb.action("thirds") == DOOM_RIGHT
    kb.handle([ev(pg.KEYUP, pg.K_d)])
    assert kb.action("thirds") == DOOM_LEFT
    kb.handle([ev(pg.KEYUP, pg.K_LEFT), ev(pg.KEYDOWN, pg.K_UP)])
    np.testing.assert_array_equal(kb.action("carracing"), [0, 1, 0])
    assert kb.handle([ev(pg.KEYDOWN, pg.K_r)]) == Command(restart=True)
    assert kb.handle([ev(pg.KEYDOWN, pg.K_ESCAPE)]) == Command(quit=True)
    assert kb.handle([ev(pg.QUIT)]).quit
    kb.handle([ev(pg.WINDOWFOCUSLOST)])
    assert kb.held == []
    policy = KeyboardPolicy(kb, "thirds")
    policy.reset(1)
    assert policy.act(np.zeros((1, 64, 64, 3), np.uint8)).shape == (1,)


# ---------------------------------------------------------------------------- loop


class Scripted(Policy):
    """Plays a fixed list of discrete actions, then stays; counts resets and their seeds."""

    def __init__(self, actions):
        self.script, self.t, self.seeds = list(actions), 0, []

    def reset(self, n, seed=None):
        self.seeds.append(seed)

    def act(self, obs):
        a = self.script[self.t] if self.t < len(self.script) else 0
        self.t += 1
        return np.array([a], np.int64)


def _fake_discrete(**kwargs):
    return RecordingEnv(make_env(get_preset("fake-discrete"), env_kwargs=kwargs))


def test_loop_counts_score_and_steps_and_stops_at_max_steps():
    env = _fake_discrete(min_len=100, max_len=100)
    loop = GameLoop(env, Scripted([1, 2, 2]), max_steps=7, seed=3)
    rewards = []
    res = run(loop, on_step=lambda lp, tr: rewards.append(tr.reward))
    assert res.total_steps == 7 and loop.steps == 7 and res.episodes == 1
    assert env.actions == [1, 2, 2, 0, 0, 0, 0]
    assert all(isinstance(a, int) for a in env.actions)  # Discrete gets Python ints
    assert res.score == pytest.approx(sum(rewards)) and res.returns == [] and not res.quit
    assert loop.policy.seeds == [3]


def test_loop_restarts_after_an_episode_ends_and_on_restart():
    env = _fake_discrete(min_len=4, max_len=4)
    policy = Scripted([])
    loop = GameLoop(env, policy, max_episodes=2, seed=10)
    resets = []
    res = run(loop, on_reset=lambda lp: resets.append(lp.episode))
    assert len(res.returns) == 2 and all(r > 0 for r in res.returns)
    assert res.total_steps == 8 and resets == [0, 1] and policy.seeds == [10, 11]
    # R: a new episode at once (its score so far is not a return); Esc: stop
    commands = iter([Command(), Command(), Command(restart=True), Command(), Command(quit=True)])
    loop = GameLoop(_fake_discrete(min_len=50, max_len=50), Scripted([]))
    res = run(loop, poll=lambda lp: next(commands))
    assert res.quit and res.episodes == 2 and res.returns == [] and loop.steps == 1
    assert res.total_steps == 3


def test_loop_refuses_bad_limits_and_step_before_reset():
    env = _fake_discrete()
    with pytest.raises(ValueError, match="max_steps"):
        GameLoop(env, Scripted([]), max_steps=0)
    with pytest.raises(RuntimeError, match="reset"):
        GameLoop(env, Scripted([])).step()


# ---------------------------------------------------------------------------- drawing


def test_compose_places_upscaled_panels_and_draws_text():
    a = np.zeros((64, 64, 3), np.uint8)
    a[:, :, 0] = 200
    b = np.full((64, 64, 3), 90, np.uint8)
    pic = draw.compose([a, b], ["one", "two"], ["score 3  step 4"], scale=2)
    top, left = draw.panel_origin(["one", "two"], scale=2)
    assert pic.dtype == np.uint8 and pic.ndim == 3 and pic.shape[2] == 3
    np.testing.assert_array_equal(pic[top : top + 128, left : left + 128], draw.upscale(a, 2))
    x2 = left + 128 + draw.GAP
    assert (pic[top : top + 128, x2 : x2 + 128] == 90).all()
    assert pic.shape[1] >= 2 * 128 + 3 * draw.GAP
    text = pic[top + 128 + draw.GAP :]  # the status line's band
    assert (text != draw.BACKGROUND).any()
    other = draw.compose([a, b], ["one", "two"], ["score 4  step 5"], scale=2)
    assert other.shape == pic.shape and (other != pic).any()
    plain = draw.compose([a], scale=1)
    assert plain.shape == (64 + 2 * draw.GAP, 64 + 2 * draw.GAP, 3)
    with pytest.raises(ValueError, match="uint8"):
        draw.compose([a.astype(np.float32)])


def test_strip_and_even_sampler():
    frames = [np.full((4, 5, 3), i, np.uint8) for i in range(100)]
    s = draw.EvenSampler(5)
    for f in frames:
        s.add(f)
    picks = [int(f[0, 0, 0]) for f in s.pick()]
    assert picks[0] == 0 and picks[-1] == 99 and len(picks) == 5
    assert np.all(np.diff(picks) > 15) and len(s.kept) <= s.capacity
    few = draw.EvenSampler(5)
    for f in frames[:3]:
        few.add(f)
    assert [int(f[0, 0, 0]) for f in few.pick()] == [0, 1, 2]
    out = draw.strip(s.pick(), gap=2)
    assert out.shape == (4, 5 * 5 + 4 * 2, 3)


# ---------------------------------------------------------------------------- sessions


def _read_frames(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    return iio.imread(path, index=None)


def test_play_in_the_dream_runs_headless_and_records(models, tmp_path):
    world = {"vae": models / "vae", "mdrnn": models / "mdrnn", "series_dir": models / "series"}
    config = PlayConfig(
        target="dream",
        env="fake-discrete",
        **world,
        max_steps=6,
        record=tmp_path / "play.gif",
        strip=tmp_path / "play.png",
        strip_frames=3,
        scale=1,
        device="cpu",
    )
    res = play(config)
    assert res.total_steps == 6 and not res.quit
    frames = _read_frames(tmp_path / "play.gif")
    assert len(frames) == 7  # the first frame, then one per step
    from PIL import Image

    strip = np.asarray(Image.open(tmp_path / "play.png"))
    assert strip.shape[1] == 3 * frames.shape[2] + 2 * draw.GAP
    assert res.files == {"video": tmp_path / "play.gif", "strip": tmp_path / "play.png"}


def test_keys_reach_the_real_env(models):
    pg = _pygame()
    env = _fake_discrete(min_len=100, max_len=100)
    hook = _events(
        pg,
        {
            2: [(pg.KEYDOWN, pg.K_LEFT)],
            4: [(pg.KEYUP, pg.K_LEFT)],
            5: [(pg.KEYDOWN, pg.K_RIGHT)],
            7: [(pg.KEYDOWN, pg.K_LEFT)],  # both held: the last pressed
            8: [(pg.KEYUP, pg.K_LEFT)],  # right still held
        },
    )
    config = PlayConfig(target="real", env="fake-discrete", max_steps=10, scale=1)
    res = play(config, env=env, hook=hook)
    assert env.actions == [0, 0, 1, 1, 0, 2, 2, 1, 2, 2]
    assert res.total_steps == 10


def test_restart_and_escape_keys(models):
    pg = _pygame()
    env = _fake_discrete(min_len=100, max_len=100)
    hook = _events(pg, {3: [(pg.KEYDOWN, pg.K_r)], 5: [(pg.KEYDOWN, pg.K_ESCAPE)]})
    config = PlayConfig(target="real", env="fake-discrete", max_steps=50, scale=1)
    res = play(config, env=env, hook=hook)
    assert res.quit and env.resets == 2 and res.episodes == 2
    assert res.total_steps == 5  # 3 steps, restart, 2 steps, Esc


def test_keys_reach_the_dream(models, monkeypatch):
    from world_models.envs.dream import DreamEnv

    pg = _pygame()
    taken = []
    step = DreamEnv.step

    def recording_step(self, action):
        taken.append(int(action))
        return step(self, action)

    monkeypatch.setattr(DreamEnv, "step", recording_step)
    hook = _events(pg, {1: [(pg.KEYDOWN, pg.K_RIGHT)], 3: [(pg.KEYUP, pg.K_RIGHT)]})
    config = PlayConfig(
        env="fake-discrete",
        vae=models / "vae",
        mdrnn=models / "mdrnn",
        max_steps=4,
        scale=1,
        device="cpu",
    )
    play(config, hook=hook)
    assert taken == [DOOM_STAY, DOOM_RIGHT, DOOM_RIGHT, DOOM_STAY]


@pytest.mark.parametrize("target", ["dream", "real"])
def test_agent_plays_through_the_cli(models, tmp_path, capsys, target):
    out = tmp_path / "agent.gif"
    argv = ["play", "--in", target, "--env", "fake", "--agent", "--max-steps", "4"]
    argv += ["--vae", str(models / "vae"), "--mdrnn", str(models / "mdrnn")]
    argv += ["--controller", str(models / "c_box"), "--record", str(out), "--scale", "1"]
    argv += ["--device", "cpu"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert "4 steps" in capsys.readouterr().out and len(_read_frames(out)) == 5


def _one_line_error(capsys, rc: int) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_missing_pygame_is_one_line_and_exit_2(models, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pygame", None)
    rc = cli.main(["play", "--in", "real", "--env", "fake", "--max-steps", "2"])
    err = _one_line_error(capsys, rc)
    assert 'pip install "world_models[play]"' in err


@pytest.mark.parametrize(
    "extra, match",
    [
        ([], "needs --vae, --mdrnn"),
        (["--in", "real", "--agent"], "needs --vae, --mdrnn, --controller"),
        (["--in", "real", "--record", "x.txt"], "suffix"),
        (["--in", "real", "--strip", "x.gif"], "PNG"),
        (["--in", "real", "--max-steps", "0"], "max-steps"),
        (["--in", "real", "--tau", "-1"], "tau"),
        (["--pretrained", "doom", "--vae", "v"], "drop --vae"),
    ],
)
def test_bad_settings_fail_in_one_line(extra, match, capsys):
    rc = cli.main(["play", "--env", "fake", *extra])
    assert match in _one_line_error(capsys, rc)


def test_help_lists_play_and_watch(capsys):
    assert cli.main(["play", "--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--in", "--pretrained", "--tau", "--max-steps", "--record", "--agent", "--strip"):
        assert flag in text


@dataclass(frozen=True)
class _FakePretrained:
    vae: ConvVAE
    mdrnn: MDNRNN
    controller: Controller
    initial_mu: torch.Tensor
    initial_logvar: torch.Tensor
    env: str
    root: Path


def _fake_pretrained_module(models: Path, asked: list) -> types.ModuleType:
    def pretrained(name: str):
        asked.append(name)
        if name != "doom":
            raise ConfigError(f"no pretrained world model named {name!r}")
        return _FakePretrained(
            ConvVAE.from_pretrained(models / "vae"),
            MDNRNN.from_pretrained(models / "mdrnn"),
            Controller.from_pretrained(models / "c_thirds"),
            torch.zeros(2, Z),
            torch.full((2, Z), -3.0),
            "fake-discrete",
            models,
        )

    module = types.ModuleType("world_models.shipped")
    module.pretrained = pretrained
    return module


def test_pretrained_brings_v_m_c_and_first_frames(models, monkeypatch, capsys, tmp_path):
    asked: list = []
    monkeypatch.setitem(sys.modules, "world_models.shipped", _fake_pretrained_module(models, asked))
    argv = ["play", "--pretrained", "doom", "--agent", "--max-steps", "3", "--scale", "1"]
    assert cli.main([*argv, "--device", "cpu"]) == 0, capsys.readouterr().err
    assert asked == ["doom"] and "3 steps" in capsys.readouterr().out
    rc = cli.main(["play", "--pretrained", "nope", "--max-steps", "3", "--device", "cpu"])
    assert "no pretrained world model named 'nope'" in _one_line_error(capsys, rc)
    rc = cli.main(["play", "--pretrained", "doom", "--env", "carracing", "--device", "cpu"])
    assert "world model of fake-discrete" in _one_line_error(capsys, rc)


def test_pretrained_not_shipped_is_one_line(monkeypatch, capsys, tmp_path):
    import world_models.shipped

    monkeypatch.setattr(world_models.shipped, "ASSETS", tmp_path)  # an install shipping none
    rc = cli.main(["play", "--pretrained", "doom", "--max-steps", "3", "--device", "cpu"])
    assert "no pretrained world model named 'doom'" in _one_line_error(capsys, rc)


@pytest.mark.doom
def test_left_key_moves_left_in_the_real_doom_game():
    import math

    pytest.importorskip("vizdoom")
    import vizdoom as vzd

    env = make_env(get_preset("doom"))
    try:
        env.reset(seed=0)
        game = env.unwrapped.game

        def where():
            x = game.get_game_variable(vzd.GameVariable.POSITION_X)
            y = game.get_game_variable(vzd.GameVariable.POSITION_Y)
            return np.array([x, y])

        angle = math.radians(game.get_game_variable(vzd.GameVariable.ANGLE))
        left = np.array([math.cos(angle + math.pi / 2), math.sin(angle + math.pi / 2)])
        start = where()
        for _ in range(10):
            env.step(int(action_for_keys([LEFT], "thirds")))
        assert float((where() - start) @ left) > 0  # moved towards the player's left
    finally:
        env.close()
