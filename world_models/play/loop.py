"""The frame loop: step one env with a policy, count score and steps, restart and quit.

:class:`GameLoop` knows nothing of windows or keys: the action comes from a
:class:`~world_models.policies.Policy` of one env (the keyboard's
:class:`~world_models.play.keys.KeyboardPolicy`, C's ``ControllerPolicy`` in the real game
or ``LatentPolicy`` in the dream), the person's wishes from a ``poll()`` that returns a
:class:`Command`, and what to show from two callbacks. So the same
loop runs in a window, headless, and in tests.

Rules: episode ``k`` (0, 1, ...) resets the env and the policy with seed ``seed + k``; an
episode that terminates or is truncated is followed by a new one (its score goes to
``returns``); ``restart`` starts a new episode at once (the unfinished one's score is not
a return); the loop ends on ``quit``, after ``max_steps`` env steps in all, or after
``max_episodes`` finished episodes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gymnasium import spaces

from world_models.policies import Policy


@dataclass(frozen=True)
class Command:
    """What the person asked for since the last frame, besides the keys held."""

    quit: bool = False
    restart: bool = False


@dataclass(frozen=True)
class Transition:
    """One env step: ``action`` was chosen on ``obs`` and led to ``next_obs``."""

    obs: Any
    action: Any
    next_obs: Any
    reward: float
    terminated: bool
    truncated: bool
    info: dict

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated


@dataclass
class LoopResult:
    """How a :func:`run` ended."""

    total_steps: int
    episodes: int
    """Episodes started."""
    returns: list[float] = field(default_factory=list)
    """Scores of the finished episodes."""
    score: float = 0.0
    """Score of the last episode so far (finished or not)."""
    quit: bool = False
    """The person quit (Esc or the window closed)."""


class GameLoop:
    """One env, one policy, and the counters the screen shows (see the module docstring)."""

    def __init__(
        self,
        env,
        policy: Policy,
        *,
        max_steps: int | None = None,
        max_episodes: int | None = None,
        seed: int = 0,
    ) -> None:
        for name, value in (("max_steps", max_steps), ("max_episodes", max_episodes)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")
        self.env, self.policy = env, policy
        self.max_steps, self.max_episodes, self.seed = max_steps, max_episodes, int(seed)
        self.discrete = isinstance(env.action_space, spaces.Discrete)
        self.obs: Any = None
        self.episode = -1
        """Index of the current episode (-1 before the first reset)."""
        self.score = 0.0
        self.steps = 0
        """Steps of the current episode."""
        self.total_steps = 0
        self.returns: list[float] = []
        self.over = False
        """The current episode has ended (the next tick starts a new one)."""
        self.quit = False

    @property
    def finished(self) -> bool:
        return (
            self.quit
            or (self.max_steps is not None and self.total_steps >= self.max_steps)
            or (self.max_episodes is not None and len(self.returns) >= self.max_episodes)
        )

    def reset(self) -> Any:
        """Start the next episode; returns its first observation."""
        self.episode += 1
        seed = self.seed + self.episode
        self.obs, _ = self.env.reset(seed=seed)
        self.policy.reset(1, seed=seed)
        self.score, self.steps, self.over = 0.0, 0, False
        return self.obs

    def step(self) -> Transition:
        """Ask the policy for an action on the current observation and take it."""
        if self.obs is None or self.over:
            raise RuntimeError("reset() before step(): no episode is running")
        action = np.asarray(self.policy.act(np.asarray(self.obs)[None]))[0]
        env_action = int(action) if self.discrete else action
        next_obs, reward, terminated, truncated, info = self.env.step(env_action)
        tr = Transition(
            self.obs, env_action, next_obs, float(reward), bool(terminated), bool(truncated), info
        )
        self.obs = next_obs
        self.score += tr.reward
        self.steps += 1
        self.total_steps += 1
        if tr.done:
            self.over = True
            self.returns.append(self.score)
        return tr

    def result(self) -> LoopResult:
        return LoopResult(
            self.total_steps, self.episode + 1, list(self.returns), self.score, self.quit
        )


def run(
    loop: GameLoop,
    poll: Callable[[GameLoop], Command] = lambda loop: Command(),
    on_reset: Callable[[GameLoop], None] = lambda loop: None,
    on_step: Callable[[GameLoop, Transition], None] = lambda loop, tr: None,
) -> LoopResult:
    """Run ``loop`` to its end; returns how it ended.

    Each tick: ``poll(loop)`` (events; a window also waits for its frame rate there), then
    quit, or a new episode (``restart``, or the last one ended: ``on_reset``), or one step
    (``on_step`` with its :class:`Transition`).
    """
    loop.reset()
    on_reset(loop)
    while not loop.finished:
        command = poll(loop)
        if command.quit:
            loop.quit = True
            break
        if command.restart or loop.over:
            loop.reset()
            on_reset(loop)
            continue
        on_step(loop, loop.step())
    return loop.result()
