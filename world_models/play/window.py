"""The pygame window (the optional ``play`` extra): shows RGB arrays, hands out events.

``SDL_VIDEODRIVER=dummy`` makes it headless: the same code runs with no screen (events
posted with ``pygame.event.post`` still arrive), without waiting for the frame rate.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from world_models.core.errors import MissingDependencyError, WorldModelsError

HEADLESS_DRIVERS = ("dummy", "offscreen")


def require_pygame() -> Any:
    """Import pygame or raise a one-line :class:`MissingDependencyError` naming the extra."""
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # no banner on stdout
    try:
        import pygame  # optional: the play extra
    except ImportError:
        raise MissingDependencyError(
            'a window needs the optional package pygame: pip install "world_models[play]"'
        ) from None
    return pygame


def headless() -> bool:
    """True when SDL draws nowhere (``SDL_VIDEODRIVER=dummy`` or ``offscreen``)."""
    return os.environ.get("SDL_VIDEODRIVER", "").lower() in HEADLESS_DRIVERS


class Window:
    """A pygame window sized to the frames it is given (opened at the first one)."""

    def __init__(self, title: str = "world_models") -> None:
        self.pygame = pg = require_pygame()
        self.title = title
        self.headless = headless()
        try:
            pg.display.init()
        except pg.error as exc:
            raise WorldModelsError(
                f"cannot open a window ({exc}); set SDL_VIDEODRIVER=dummy to run headless"
            ) from None
        self.screen = None
        self.clock = pg.time.Clock()

    def show(self, frame: np.ndarray) -> None:
        """Draw an (H, W, 3) uint8 frame, resizing the window to it when needed."""
        pg = self.pygame
        h, w = frame.shape[:2]
        if self.screen is None or self.screen.get_size() != (w, h):
            try:
                self.screen = pg.display.set_mode((w, h))
            except pg.error as exc:
                raise WorldModelsError(
                    f"cannot open a window ({exc}); set SDL_VIDEODRIVER=dummy to run headless"
                ) from None
            pg.display.set_caption(self.title)
        surface = pg.surfarray.make_surface(np.ascontiguousarray(frame.swapaxes(0, 1)))
        self.screen.blit(surface, (0, 0))
        pg.display.flip()

    def events(self) -> list:
        return self.pygame.event.get()

    def wait(self, fps: float) -> None:
        """Hold the frame rate (not when headless: there is nobody to watch)."""
        if not self.headless and fps > 0:
            self.clock.tick(fps)

    def sleep(self, seconds: float) -> None:
        if not self.headless and seconds > 0:
            self.pygame.time.wait(int(seconds * 1000))

    def close(self) -> None:
        self.pygame.display.quit()
