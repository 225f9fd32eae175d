"""A tiny deterministic Gymnasium env for tests and benchmarks: no Box2D, no Doom.

Frames are (frame_size, frame_size, 3) uint8: a background colour drawn from the reset
seed, a white square moved by the actions, and a stripe that moves with time, so frames
differ from step to step and from episode to episode. Episodes terminate after a length
drawn from the seed in [min_len, max_len]; reward is the square's x position / frame size.
"""

from __future__ import annotations

import os
import time
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class FakeEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(
        self,
        frame_size: int = 96,
        discrete: bool = False,
        min_len: int = 20,
        max_len: int = 60,
        step_delay: float = 0.0,
        die_on_seed: int | None = None,
    ) -> None:
        """``step_delay`` sleeps per step to mimic a slow env; ``die_on_seed`` makes the
        process exit abruptly on ``reset(seed=die_on_seed)`` (tests of dead workers)."""
        self.frame_size = frame_size
        self.min_len, self.max_len = min_len, max_len
        self.step_delay = step_delay
        self.die_on_seed = die_on_seed
        self.observation_space = spaces.Box(0, 255, (frame_size, frame_size, 3), np.uint8)
        if discrete:
            self.action_space: spaces.Space = spaces.Discrete(3)
        else:
            self.action_space = spaces.Box(
                np.array([-1, 0, 0], np.float32), np.array([1, 1, 1], np.float32)
            )
        self._rng = np.random.default_rng(0)
        self._t = 0
        self._len = max_len
        self._pos = np.zeros(2)
        self._bg = np.zeros(3, np.uint8)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None and seed == self.die_on_seed:
            os._exit(7)  # simulate a crash (segfault, OOM kill) without any Python cleanup
        self._t = 0
        self._len = int(self.np_random.integers(self.min_len, self.max_len + 1))
        self._pos = self.np_random.uniform(0, self.frame_size - 8, size=2)
        self._bg = self.np_random.integers(0, 200, size=3).astype(np.uint8)
        return self._frame(), {}

    def step(self, action):
        if self.step_delay:
            time.sleep(self.step_delay)
        if isinstance(self.action_space, spaces.Discrete):
            dx = (0.0, -2.0, 2.0)[int(action)]
            dy = 1.0
        else:
            a = np.asarray(action, np.float64)
            dx, dy = 4.0 * a[0], 4.0 * (a[1] - a[2])
        hi = self.frame_size - 8
        self._pos = np.clip(self._pos + (dx, dy), 0, hi)
        self._t += 1
        reward = float(self._pos[0] / self.frame_size)
        terminated = self._t >= self._len
        return self._frame(), reward, terminated, False, {}

    def _frame(self) -> np.ndarray:
        s = self.frame_size
        frame = np.empty((s, s, 3), np.uint8)  # (s, s, 3)
        frame[:] = self._bg
        row = (self._t * 3) % s
        frame[row : row + 2] = (self._t * 37) % 256  # time stripe
        x, y = int(self._pos[0]), int(self._pos[1])
        frame[y : y + 8, x : x + 8] = 255
        return frame
