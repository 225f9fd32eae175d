"""Make an environment whose observations are preprocessed (size, size, 3) uint8 frames."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import weakref
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from world_models.core.errors import ConfigError, require
from world_models.envs.fake import FakeEnv
from world_models.envs.presets import EnvPreset, Preprocess

Backend = Literal["gymnasium", "envpool"]


class FrameObservation(gym.ObservationWrapper):
    """Take the RGB screen out of the observation (VizDoom's is a dict) and preprocess it.

    With ``raw`` the screen comes as it is, (H, W, 3) uint8, for a caller that preprocesses
    whole batches itself (:func:`~world_models.envs.presets.preprocess_frames`, a fraction
    of the per-frame cost): collect, whose random policies never look at the frames.
    """

    def __init__(self, env: gym.Env, preprocess: Preprocess, raw: bool = False) -> None:
        super().__init__(env)
        self.preprocess, self.raw = preprocess, raw
        space = env.observation_space
        if isinstance(space, spaces.Dict):
            space = space["screen"]
        s = preprocess.size
        self.observation_space = space if raw else spaces.Box(0, 255, (s, s, 3), np.uint8)

    def observation(self, observation: Any) -> np.ndarray:
        if isinstance(observation, dict):
            observation = observation["screen"]  # VizDoom: {"screen", "gamevariables"}
        return observation if self.raw else self.preprocess(observation)  # (64, 64, 3) uint8


def check_available(preset: EnvPreset, backend: Backend = "gymnasium") -> None:
    """Raise MissingDependencyError now (in the main process) if the env cannot be made."""
    if backend == "envpool":
        require("envpool", "envpool", "the envpool backend")
        if not preset.envpool:
            raise ConfigError(f"the envpool backend supports only carracing, not {preset.name}")
    elif preset.module is not None:
        require(preset.module, preset.extra or preset.name, f"the {preset.name} env")


def resolve_backend(backend: str, preset: EnvPreset) -> Backend:
    """``backend`` itself, or for ``auto``: envpool where it is installed and has the env
    (CarRacing), else Gymnasium."""
    if backend != "auto":
        return backend  # type: ignore[return-value]
    if not preset.envpool or importlib.util.find_spec("envpool") is None:
        return "gymnasium"
    return "envpool"


def make_env(
    preset: EnvPreset,
    *,
    preprocess: Preprocess | None = None,
    max_steps: int | None = None,
    backend: Backend = "gymnasium",
    env_kwargs: dict[str, Any] | None = None,
    stall_steps: int | None = None,
    raw_frames: bool = False,
) -> gym.Env:
    """A Gymnasium env for ``preset`` emitting preprocessed frames.

    ``max_steps`` truncates episodes (Gymnasium's TimeLimit: ``truncated=True``); None keeps
    the env's own limit (CarRacing-v3: 1000 steps). ``env_kwargs`` go to the env's
    constructor (for the fake env: ``step_delay``, ``min_len``, ...). ``stall_steps`` ends
    an episode (truncated) after that many steps in a row without a positive reward
    (:class:`StallLimit`). ``raw_frames`` leaves the frames to the caller
    (:class:`FrameObservation`).
    """
    check_available(preset, backend)
    preprocess = preprocess or preset.preprocess
    kwargs = {**dict(preset.env_kwargs), **(env_kwargs or {})}
    if backend == "envpool":
        env: gym.Env = EnvpoolEnv(max_steps=max_steps)
    elif preset.make is not None:
        env = preset.make(preset, max_steps, kwargs)
    else:
        env = make_gymnasium(preset, max_steps, kwargs)
    if stall_steps is not None:
        env = StallLimit(env, stall_steps)
    return FrameObservation(env, preprocess, raw=raw_frames)


def make_gymnasium(preset: EnvPreset, max_steps: int | None, env_kwargs: dict[str, Any]):
    """``gymnasium.make(preset.env_id)``: a preset's env without a maker of its own."""
    limit = {"max_episode_steps": max_steps} if max_steps is not None else {}
    return gym.make(preset.env_id, **limit, **env_kwargs)


def make_fake(preset: EnvPreset, max_steps: int | None, env_kwargs: dict[str, Any]):
    """The fake env (envs/fake.py) with the preset's actions: Discrete(3) frames of 64x64
    for a discrete preset (fake-discrete), else CarRacing's Box and 96x96 frames."""
    kwargs = dict(env_kwargs)
    if preset.actions.discrete:
        kwargs.setdefault("discrete", True)
        kwargs.setdefault("frame_size", 64)
    env: gym.Env = FakeEnv(**kwargs)
    return gym.wrappers.TimeLimit(env, max_steps) if max_steps is not None else env


def make_vizdoom(preset: EnvPreset, max_steps: int | None, env_kwargs: dict[str, Any]):
    """VizDoom's env with the preset's action order, its game in a temporary folder."""
    require("vizdoom.gymnasium_wrapper", "doom", "the doom env")  # registers the ids
    return DoomActions(InTempDir(make_gymnasium(preset, max_steps, env_kwargs)))


class StallLimit(gym.Wrapper):
    """Truncate an episode after ``steps`` steps in a row with no positive reward.

    For training C in the real CarRacing: a car lost off the track earns nothing but the
    -0.1 a step until step 1,000, so its remaining steps cost env time without telling
    candidates apart (a new track tile is the only positive reward). Scores to report are
    full episodes: evaluate does not use it.
    """

    def __init__(self, env: gym.Env, steps: int) -> None:
        if steps < 1:
            raise ConfigError(f"stall_steps must be >= 1, got {steps}")
        super().__init__(env)
        self.steps, self._since = int(steps), 0

    def reset(self, **kwargs):
        self._since = 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, rew, term, trunc, info = self.env.step(action)
        self._since = 0 if rew > 0 else self._since + 1
        return obs, rew, term, trunc or self._since >= self.steps, info


class DoomActions(gym.ActionWrapper):
    """The preset's Discrete(3), 0 stay, 1 MOVE_LEFT, 2 MOVE_RIGHT, onto VizDoom's own indices.

    VizDoom builds its Discrete actions from its button combinations, and TakeCover's
    buttons come as [MOVE_LEFT, MOVE_RIGHT] with combinations [none, RIGHT, LEFT]: its 1
    moves right. The map is read from the env's ``button_map`` at the first step, so it
    holds whatever order a VizDoom version uses.
    """

    WANT = {0: frozenset(), 1: frozenset({"MOVE_LEFT"}), 2: frozenset({"MOVE_RIGHT"})}

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._map: dict[int, int] | None = None

    def _build(self) -> dict[int, int]:
        u = self.env.unwrapped
        combos = getattr(u, "button_map", None)
        game = getattr(u, "game", None)
        if combos is None or game is None:
            return {0: 0, 1: 1, 2: 2}
        names = [b.name for b in game.get_available_buttons()]
        pressed = [frozenset(n for n, v in zip(names, c) if v) for c in combos]
        mapping = {k: pressed.index(want) for k, want in self.WANT.items() if want in pressed}
        if len(mapping) != 3:
            raise ConfigError(f"VizDoom's actions {pressed} lack stay / left / right")
        return mapping

    def action(self, action):
        if self._map is None:
            self._map = self._build()
        return self._map[int(action)]


class InTempDir(gym.Wrapper):
    """Start VizDoom's game process in a private temporary folder, removed at close.

    The game process (started at the first reset) writes ``_vizdoom.ini`` and ``_vizdoom/``
    into its working directory, which would otherwise be the user's folder. The chdir is
    process-wide, so it lasts only while a reset may start the game.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.folder = tempfile.mkdtemp(prefix="world_models-vizdoom-")
        self._remove = weakref.finalize(self, shutil.rmtree, self.folder, ignore_errors=True)

    def reset(self, **kwargs):
        game = getattr(self.env.unwrapped, "game", None)
        if game is not None and game.is_running():
            return self.env.reset(**kwargs)  # a new episode: no process to start
        here = os.getcwd()
        os.chdir(self.folder)
        try:
            return self.env.reset(**kwargs)
        finally:
            os.chdir(here)

    def close(self) -> None:
        try:
            super().close()  # stops the game process, which writes its files on exit
        finally:
            self._remove()


class EnvpoolEnv(gym.Env):
    """One envpool CarRacing env behind the Gymnasium single-env API.

    envpool seeds an env when it is built, not at reset, so each ``reset(seed=s)`` builds a
    new one with seed ``s`` (cheap) and closes the old; episodes stay a function of their
    seed. The parity test in tests/test_data_collect.py compares it with Gymnasium's.
    """

    def __init__(self, max_steps: int | None = None) -> None:
        self._envpool = require("envpool", "envpool", "the envpool backend")
        self._max_steps = max_steps
        self._env: Any = None
        self.observation_space = spaces.Box(0, 255, (96, 96, 3), np.uint8)
        self.action_space = spaces.Box(
            np.array([-1, 0, 0], np.float32), np.array([1, 1, 1], np.float32)
        )

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        kwargs = {"max_episode_steps": self._max_steps} if self._max_steps else {}
        self.close()
        seed = int(seed or 0) % (2**31 - 1)  # envpool takes int32 seeds; collect's are 64-bit
        self._env = self._envpool.make_gymnasium(self._env_id(), num_envs=1, seed=seed, **kwargs)
        obs, info = self._env.reset()
        return obs[0], {}

    def _env_id(self) -> str:
        # envpool >= 1.0 ships CarRacing-v3 (Gymnasium's); older releases only v2
        ids = self._envpool.list_all_envs()
        return "CarRacing-v3" if "CarRacing-v3" in ids else "CarRacing-v2"

    def step(self, action):
        obs, rew, term, trunc, info = self._env.step(np.asarray(action, np.float32)[None])
        return obs[0], float(rew[0]), bool(term[0]), bool(trunc[0]), {}

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None
