"""The keyboard: pygame events -> held keys, restart and quit; held keys -> an env action.

Which action the keys held make is the env's action mode's
(:meth:`world_models.models.actions.ActionMode.keys`), so the real game and the dream take
the keyboard's actions as they take C's:

* ``thirds`` (Doom TakeCover, ``Discrete(3)``): 0 stay, 1 MOVE_LEFT, 2 MOVE_RIGHT. Left or
  right held moves; both held: the one pressed last wins; none: stay.
* ``carracing`` (``Box([-1, 0, 0], [1, 1, 1])``): left / right steer -1 / +1 (the last
  pressed wins), up is full gas, down brakes at 0.8, as CarRacing's own keyboard demo.

Arrows, or W A S D. ``R`` restarts the episode; ``Esc`` (or closing the window) quits.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from world_models.models.actions import BRAKE as BRAKE  # re-exported
from world_models.models.actions import DOWN, LEFT, RIGHT, UP, ActionMode, get_action_mode
from world_models.play.loop import Command
from world_models.policies import Policy, SeedLike


def key_help(mode: str | ActionMode) -> str:
    """The key line of a window for action mode ``mode``."""
    m = get_action_mode(mode)
    if m.keys_help is None:
        m.keys([])  # the one-line error: no keyboard mapping
    return str(m.keys_help)


def action_for_keys(held: Iterable[str], mode: str | ActionMode) -> np.ndarray:
    """The env action for the keys ``held`` (oldest first, the last pressed last).

    ``mode`` is the controller's action mode: ``thirds`` -> int64 scalar array (0 stay,
    1 left, 2 right); ``carracing`` -> float32 (3,) steer, gas, brake.
    """
    return get_action_mode(mode).keys(held)


def key_names(pygame: Any) -> dict[int, str]:
    """pygame key codes -> :data:`LEFT` / :data:`RIGHT` / :data:`UP` / :data:`DOWN`."""
    return {
        pygame.K_LEFT: LEFT,
        pygame.K_a: LEFT,
        pygame.K_RIGHT: RIGHT,
        pygame.K_d: RIGHT,
        pygame.K_UP: UP,
        pygame.K_w: UP,
        pygame.K_DOWN: DOWN,
        pygame.K_s: DOWN,
    }


class Keyboard:
    """Tracks the keys held from pygame events (KEYDOWN / KEYUP, not ``key.get_pressed``,
    so events posted by a test or a script count as presses).

    ``handle(events)`` returns the :class:`Command` they contain; ``held`` lists the movement
    keys held, oldest first. Losing the window's focus releases every key.
    """

    def __init__(self, pygame: Any) -> None:
        self.pygame = pygame
        self.names = key_names(pygame)
        self.held: list[str] = []

    def handle(self, events: Iterable[Any]) -> Command:
        pg = self.pygame
        quit_ = restart = False
        focus_lost = getattr(pg, "WINDOWFOCUSLOST", None)
        for e in events:
            if e.type == pg.QUIT:
                quit_ = True
            elif e.type == pg.KEYDOWN:
                if e.key == pg.K_ESCAPE:
                    quit_ = True
                elif e.key == pg.K_r:
                    restart = True
                elif e.key in self.names:
                    name = self.names[e.key]
                    if name in self.held:
                        self.held.remove(name)
                    self.held.append(name)
            elif e.type == pg.KEYUP and e.key in self.names:
                name = self.names[e.key]
                if name in self.held:
                    self.held.remove(name)
            elif focus_lost is not None and e.type == focus_lost:
                self.held.clear()
        return Command(quit=quit_, restart=restart)

    def action(self, mode: str) -> np.ndarray:
        return action_for_keys(self.held, mode)


class KeyboardPolicy(Policy):
    """The person at the keyboard as a :class:`~world_models.policies.Policy` of one env:
    ``act`` ignores the observation and returns the action of the keys held, shaped as C's
    ((1,) int64 for thirds, (1, 3) float32 for carracing)."""

    def __init__(self, keyboard: Keyboard, mode: str) -> None:
        action_for_keys([], mode)  # an unknown mode fails now
        self.keyboard, self.mode = keyboard, mode

    def reset(self, n: int = 1, seed: SeedLike = None) -> None:
        if n != 1:
            raise ValueError(f"one keyboard plays one env, not {n}")

    def act(self, obs) -> np.ndarray:
        return self.keyboard.action(self.mode)[None]
