"""Policies: what chooses the actions during collection, evaluation and the dream.

The contract (:class:`Policy`) is batched so one call serves many environments at once:

* ``reset(n, seed=None)`` starts ``n`` new episodes; ``seed`` (an int, or one int per
  episode) makes random policies reproducible: the same seed gives the same actions.
* ``act(obs)`` takes ``obs`` of shape (n, 64, 64, 3) uint8, one frame per environment, and
  returns the env-native actions for all ``n``: float32 (n, A) for a Box action space,
  int64 (n,) for a Discrete one. Policies with state (an LSTM, a held action) keep it per
  environment between ``act`` calls until the next ``reset``. In the dream the
  observation is ``[z, h]`` instead, (n, Z + H) float32: see
  :class:`~world_models.policies.controller.LatentPolicy`.

The random data policies of the original: :class:`BrownianPolicy` (CarRacing; ctallec's
``sample_continuous_policy``, dt = 1/50), :class:`UniformPolicy`, and
:class:`RepeatPolicy` (Doom: a uniform random action held for 1-10 frames).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence

import numpy as np
from gymnasium import spaces

from world_models.core.errors import ConfigError

SeedLike = int | Sequence[int] | None


def _rngs(n: int, seed: SeedLike) -> list[np.random.Generator]:
    if seed is None or isinstance(seed, (int, np.integer)):
        # one stream per env, all derived from the one seed
        return [
            np.random.default_rng([int(seed), i]) if seed is not None else np.random.default_rng()
            for i in range(n)
        ]
    if len(seed) != n:
        raise ValueError(f"got {len(seed)} seeds for {n} environments")
    return [np.random.default_rng(int(s)) for s in seed]


class Policy(abc.ABC):
    """Chooses actions for a batch of environments; see the module docstring."""

    @abc.abstractmethod
    def reset(self, n: int, seed: SeedLike = None) -> None:
        """Start ``n`` new episodes (one per environment)."""

    @abc.abstractmethod
    def act(self, obs: np.ndarray) -> np.ndarray:
        """(n, 64, 64, 3) uint8 frames -> actions: float32 (n, A) or int64 (n,)."""


class UniformPolicy(Policy):
    """Box: uniform in [low, high] each step; Discrete(k): uniform in 0..k-1 each step."""

    def __init__(
        self,
        low: np.ndarray | None = None,
        high: np.ndarray | None = None,
        n_actions: int | None = None,
    ) -> None:
        if (n_actions is None) == (low is None):
            raise ValueError("give either low/high (Box) or n_actions (Discrete)")
        self.low = None if low is None else np.asarray(low, np.float32)
        self.high = None if high is None else np.asarray(high, np.float32)
        self.n_actions = n_actions
        self._rngs: list[np.random.Generator] = []

    def reset(self, n: int, seed: SeedLike = None) -> None:
        self._rngs = _rngs(n, seed)

    def act(self, obs: np.ndarray) -> np.ndarray:
        if self.n_actions is not None:
            return np.array([r.integers(self.n_actions) for r in self._rngs], np.int64)
        return np.stack([r.uniform(self.low, self.high) for r in self._rngs]).astype(np.float32)


class BrownianPolicy(Policy):
    """Brownian-motion actions: a_0 ~ U[low, high], a_t = clip(a_{t-1} + sqrt(dt) N(0, 1))."""

    def __init__(self, low: np.ndarray, high: np.ndarray, dt: float = 1 / 50) -> None:
        self.low = np.asarray(low, np.float64)
        self.high = np.asarray(high, np.float64)
        self.dt = dt
        self._rngs: list[np.random.Generator] = []
        self._last: list[np.ndarray | None] = []

    def reset(self, n: int, seed: SeedLike = None) -> None:
        self._rngs = _rngs(n, seed)
        self._last = [None] * n

    def act(self, obs: np.ndarray) -> np.ndarray:
        out = []
        for i, rng in enumerate(self._rngs):
            prev = self._last[i]
            if prev is None:
                a = rng.uniform(self.low, self.high)
            else:
                step = math.sqrt(self.dt) * rng.standard_normal(self.low.shape)
                a = np.clip(prev + step, self.low, self.high)
            self._last[i] = a
            out.append(a)
        return np.stack(out).astype(np.float32)  # (n, A)


class RepeatPolicy(Policy):
    """Discrete(k): a uniform random action held for a uniform 1..max_repeat frames."""

    def __init__(self, n_actions: int, min_repeat: int = 1, max_repeat: int = 10) -> None:
        if not 1 <= min_repeat <= max_repeat:
            raise ValueError(f"need 1 <= min_repeat <= max_repeat, got {min_repeat}, {max_repeat}")
        self.n_actions = n_actions
        self.min_repeat, self.max_repeat = min_repeat, max_repeat
        self._rngs: list[np.random.Generator] = []
        self._action: list[int] = []
        self._left: list[int] = []

    def reset(self, n: int, seed: SeedLike = None) -> None:
        self._rngs = _rngs(n, seed)
        self._action = [0] * n
        self._left = [0] * n

    def act(self, obs: np.ndarray) -> np.ndarray:
        for i, rng in enumerate(self._rngs):
            if self._left[i] == 0:
                self._action[i] = int(rng.integers(self.n_actions))
                self._left[i] = int(rng.integers(self.min_repeat, self.max_repeat + 1))
            self._left[i] -= 1
        return np.array(self._action, np.int64)  # (n,)


class ConstantPolicy(Policy):
    """The same action every step: a Discrete index (int64 (n,)) or a Box vector
    (float32 (n, A)). Doom's always-stay, always-left and always-right baselines."""

    def __init__(self, action) -> None:
        self.action = np.asarray(action)
        self._n = 0

    def reset(self, n: int, seed: SeedLike = None) -> None:
        self._n = n

    def act(self, obs: np.ndarray) -> np.ndarray:
        n = len(obs)
        if self.action.ndim == 0:
            return np.full(n, int(self.action), np.int64)
        return np.broadcast_to(self.action.astype(np.float32), (n, *self.action.shape)).copy()


class ExplorePolicy(Policy):
    """``policy``'s action, or, with probability ``explore`` per env and step, ``random``'s:
    the exploration noise of the paper's iterative training (collect with the evolved C).

    Both policies act every step, so their state (M's LSTM, a held random action) runs on;
    ``policy`` keeps its own view of what it chose (M's state advances on C's action even
    when the random one was taken): only the executed action is recorded."""

    def __init__(self, policy: Policy, random: Policy, explore: float) -> None:
        if not 0.0 <= explore <= 1.0:
            raise ValueError(f"explore must be in [0, 1], got {explore}")
        self.policy, self.random, self.explore = policy, random, explore
        self._rngs: list[np.random.Generator] = []

    def reset(self, n: int, seed: SeedLike = None) -> None:
        self.policy.reset(n, seed=seed)
        self.random.reset(n, seed=seed)
        # a stream of its own, so the coin flips do not shift the random policy's draws
        self._rngs = _rngs(n, None if seed is None else _offset(seed, 0x5EED))

    def act(self, obs: np.ndarray) -> np.ndarray:
        main, rand = self.policy.act(obs), self.random.act(obs)
        take = np.array([r.random() < self.explore for r in self._rngs])  # (n,)
        return np.where(take.reshape(-1, *[1] * (main.ndim - 1)), rand, main).astype(main.dtype)


def _offset(seed: SeedLike, k: int) -> SeedLike:
    if isinstance(seed, (int, np.integer)):
        return int(seed) ^ k
    return [int(s) ^ k for s in seed]


POLICIES = ("brownian", "uniform", "repeat")


def make_random_policy(
    name: str, action_space, *, dt: float = 1 / 50, min_repeat: int = 1, max_repeat: int = 10
) -> Policy:
    """One of :data:`POLICIES` for a Gymnasium ``action_space`` (Box or Discrete)."""

    discrete = isinstance(action_space, spaces.Discrete)
    if name == "uniform":
        if discrete:
            return UniformPolicy(n_actions=int(action_space.n))
        return UniformPolicy(action_space.low, action_space.high)
    if name == "brownian" and not discrete:
        return BrownianPolicy(action_space.low, action_space.high, dt=dt)
    if name == "repeat" and discrete:
        return RepeatPolicy(int(action_space.n), min_repeat, max_repeat)
    kind = "discrete" if discrete else "continuous"
    raise ConfigError(
        f"policy {name!r} does not fit a {kind} action space; choose from "
        f"{['uniform', 'repeat'] if discrete else ['uniform', 'brownian']}"
    )
