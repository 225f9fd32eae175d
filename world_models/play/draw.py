"""Drawing: panels and text composed into one RGB array, and a strip of a few of them.

Everything here is numpy and Pillow: the window shows these arrays, recordings are made of
them, and tests read their pixels without any window.

Layout of :func:`compose` (``scale`` upscales each 64x64 panel, nearest neighbour)::

    +--------------------------------------------+
    | label 1          label 2          label 3  |
    | +--------+       +--------+       +------+ |
    | | panel 1|       | panel 2|       |  ... | |
    | +--------+       +--------+       +------+ |
    | status line 1 (score, step, episode)       |
    | status line 2 (keys)                       |
    +--------------------------------------------+
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (24, 24, 28)
TEXT = (235, 235, 235)
DIM = (150, 150, 160)
GAP = 8


@functools.cache
def font(size: int):
    """Pillow's built-in font at ``size`` pixels (its small bitmap font on old Pillow)."""

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one fixed size
        return ImageFont.load_default()


def text_size(scale: int) -> int:
    return max(10, 4 * scale)


def blank_panel(size: int = 64, value: int = 60) -> np.ndarray:
    """A grey (size, size, 3) panel: what a panel shows when it has nothing yet."""
    return np.full((size, size, 3), value, np.uint8)


def upscale(image: np.ndarray, scale: int) -> np.ndarray:
    return image if scale == 1 else image.repeat(scale, axis=0).repeat(scale, axis=1)


def compose(
    panels: Sequence[np.ndarray],
    labels: Sequence[str] = (),
    lines: Sequence[str] = (),
    scale: int = 4,
    min_width: int = 0,
) -> np.ndarray:
    """Panels (each (h, w, 3) uint8) side by side, a label above each, text lines below.

    Returns one (H, W, 3) uint8 picture, as wide as the panels or ``min_width`` (see
    :func:`text_width`; the size depends on nothing else, so frames of a video agree).
    Text that does not fit is cut; the last panel's label may run to the right edge. The
    panel ``i`` occupies rows ``panel_origin(...)[0]`` on, columns
    ``GAP + i * (w * scale + GAP)`` on.
    """

    if not panels:
        raise ValueError("compose needs at least one panel")
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    big = [upscale(_rgb(p), scale) for p in panels]
    ph = max(p.shape[0] for p in big)
    size = text_size(scale)
    f = font(size)
    label_h = size + GAP if any(labels) else 0
    lines_h = len(lines) * (size + GAP // 2) + (GAP // 2 if lines else 0)
    width = max(GAP + sum(p.shape[1] + GAP for p in big), int(min_width))
    height = GAP + label_h + ph + GAP + lines_h
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = BACKGROUND
    x = GAP
    top = GAP + label_h
    for p in big:
        canvas[top : top + p.shape[0], x : x + p.shape[1]] = p
        x += p.shape[1] + GAP
    if not any(labels) and not lines:
        return canvas
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    x = GAP
    for i, (p, label) in enumerate(zip(big, list(labels) + [""] * len(big))):
        room = width - x - GAP if i == len(big) - 1 else p.shape[1]
        if label:
            draw.text((x, GAP // 2), _fit(draw, label, f, room), fill=DIM, font=f)
        x += p.shape[1] + GAP
    y = top + ph + GAP
    for line in lines:
        draw.text((GAP, y), _fit(draw, line, f, width - 2 * GAP), fill=TEXT, font=f)
        y += size + GAP // 2
    return np.asarray(img).copy()


def text_width(texts: Sequence[str], scale: int = 4) -> int:
    """The picture width :func:`compose` needs (``min_width``) to show ``texts`` uncut as
    text lines at ``scale``."""
    f = font(text_size(scale))
    return int(max((f.getlength(t) for t in texts), default=0)) + 2 * GAP + 1


def panel_origin(labels: Sequence[str] = (), scale: int = 4) -> tuple[int, int]:
    """(row, column) of the first panel's top-left pixel in :func:`compose`'s picture."""
    label_h = text_size(scale) + GAP if any(labels) else 0
    return GAP + label_h, GAP


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"panels must be (h, w, 3) uint8, got {image.shape} {image.dtype}")
    return image


def _fit(draw, text: str, f, width: int) -> str:
    """``text`` cut (with '...') to fit ``width`` pixels."""
    if draw.textlength(text, font=f) <= width:
        return text
    while text and draw.textlength(text + "...", font=f) > width:
        text = text[:-1]
    return text + "..."


def strip(frames: Sequence[np.ndarray], gap: int = GAP) -> np.ndarray:
    """Frames (each (H, W, 3) uint8, the same size) side by side with ``gap`` between."""
    if not frames:
        raise ValueError("no frames for a strip")
    h = max(f.shape[0] for f in frames)
    width = sum(f.shape[1] for f in frames) + gap * (len(frames) - 1)
    out = np.empty((h, width, 3), np.uint8)
    out[:] = BACKGROUND
    x = 0
    for f in frames:
        out[: f.shape[0], x : x + f.shape[1]] = f
        x += f.shape[1] + gap
    return out


class EvenSampler:
    """Keeps about ``n`` evenly spaced frames of a stream of unknown length, in bounded
    memory: every ``stride``-th frame is kept, and when more than ``4 n`` are held, every
    other one is dropped and the stride doubles. :meth:`pick` returns ``n`` of them,
    evenly spaced, from the first frame to the last.
    """

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"need n >= 1 frames, got {n}")
        self.n = n
        self.capacity = max(4 * n, 8)
        self.stride = 1
        self.count = 0
        self.kept: list[tuple[int, np.ndarray]] = []
        self.last: tuple[int, np.ndarray] | None = None

    def add(self, frame: np.ndarray) -> None:
        if self.count % self.stride == 0:
            self.kept.append((self.count, frame))
            if len(self.kept) > self.capacity:
                self.kept = self.kept[::2]
                self.stride *= 2
        self.last = (self.count, frame)
        self.count += 1

    def pick(self) -> list[np.ndarray]:
        """Up to ``n`` frames (fewer when fewer were added), first and last included."""
        if self.last is None:
            return []
        kept = list(self.kept)
        if kept[-1][0] != self.last[0]:
            kept.append(self.last)
        if len(kept) <= self.n:
            return [f for _, f in kept]
        if self.n == 1:
            return [kept[0][1]]
        # evenly spaced in frame index, each the nearest kept frame
        index = np.array([i for i, _ in kept], np.float64)
        targets = np.linspace(0, self.last[0], self.n)
        picks = [int(np.abs(index - t).argmin()) for t in targets]
        return [kept[i][1] for i in picks]
