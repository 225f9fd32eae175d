"""Pictures: image grids, reconstruction and traversal grids, loss curves, animations."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from world_models.core.atomic import TMP_MARK, atomic_open, naming_disk_full
from world_models.core.errors import ConfigError, MissingDependencyError


def to_uint8_hwc(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """(N, C, H, W) floats in [0, 1] or uint8 -> (N, H, W, 3) uint8 numpy."""
    if isinstance(images, torch.Tensor):
        images = images.detach().float().cpu() if images.is_floating_point() else images.cpu()
        if images.is_floating_point():
            images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
        images = images.numpy()
    if images.dtype != np.uint8:
        images = (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
    arr = np.transpose(images, (0, 2, 3, 1))  # (N, H, W, C)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return np.ascontiguousarray(arr)


def grid(images: torch.Tensor | np.ndarray, nrow: int, pad: int = 2, scale: int = 1) -> np.ndarray:
    """Tile (N, C, H, W) images into one (H', W', 3) uint8 picture, ``nrow`` per row."""
    arr = to_uint8_hwc(images)
    n, h, w, _ = arr.shape
    rows = (n + nrow - 1) // nrow
    out = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        out[y : y + h, x : x + w] = arr[i]
    if scale > 1:
        out = out.repeat(scale, axis=0).repeat(scale, axis=1)
    return out


def save_png(picture: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an (H, W, 3) uint8 picture as PNG, atomically."""
    from PIL import Image  # late: pictures load their libraries when drawn

    path = Path(path)
    with atomic_open(path, "wb") as fh:
        Image.fromarray(picture).save(fh, format="PNG")
    return path


def save_reconstruction_grid(
    real: torch.Tensor, recon: torch.Tensor, path: str | os.PathLike, scale: int = 2
) -> Path:
    """Real frames in the top row(s), their reconstructions right below."""
    n = real.shape[0]
    real_f = real.float() / 255 if real.dtype == torch.uint8 else real
    both = torch.cat([real_f.cpu().float(), recon.detach().cpu().float()])  # (2N, C, H, W)
    return save_png(grid(both, nrow=n, scale=scale), path)


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int = 8, scale: int = 2) -> Path:
    return save_png(grid(images, nrow=nrow, scale=scale), path)


def plot_curves(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: str | os.PathLike,
    title: str = "",
    xlabel: str = "step",
    ylabel: str = "loss",
    logy: bool = True,
) -> Path:
    """Plot named (x, y) series to a PNG with matplotlib (headless), atomically."""
    import matplotlib  # late: pictures load their libraries when drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # late: pictures load their libraries when drawn

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for name, (xs, ys) in series.items():
        if len(xs):
            ax.plot(xs, ys, label=name, marker="o" if len(xs) < 30 else None)
    if logy and all(min(ys, default=1) > 0 for _, ys in series.values()):
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)
    return path


ANIMATION_SUFFIXES = (".gif", ".mp4")
"""The video formats :func:`save_animation` writes (.mp4 needs the ``video`` extra)."""


def check_animation_path(path: str | os.PathLike) -> Path:
    """Raise a one-line error unless :func:`save_animation` can write ``path``.

    The suffix must be .gif or .mp4; .mp4 needs ``imageio-ffmpeg`` (the ``video`` extra).
    Cheap (nothing imported or written), so commands call it before any real work.
    """

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ANIMATION_SUFFIXES:
        raise ConfigError(
            f"cannot write a video to {path}: the suffix must be one of "
            f"{', '.join(ANIMATION_SUFFIXES)}, not {suffix or 'none'!r}"
        )
    if suffix == ".mp4" and importlib.util.find_spec("imageio_ffmpeg") is None:
        raise MissingDependencyError(
            f"writing {path} (MP4) needs the optional package 'imageio-ffmpeg': "
            'pip install "world_models[video]" (or write a .gif)'
        )
    return path


def save_animation(frames: Sequence[np.ndarray], path: str | os.PathLike, fps: int = 30) -> Path:
    """Write (H, W, 3) uint8 frames as a GIF (or MP4 when the path says so), atomically.

    The frames go to a temp file beside ``path`` that keeps its suffix (imageio picks the
    writer by it), then replace ``path``; a failure leaves no partial file behind.
    """

    path = check_animation_path(path)
    if not (isinstance(fps, (int, float, np.number)) and 0 < fps < float("inf")):
        raise ConfigError(f"fps must be a positive number, got {fps!r}")
    if len(frames) == 0:
        raise ValueError(f"no frames to write to {path}")
    import imageio.v3 as iio  # late: optional ffmpeg plugin; loaded when a video is written

    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    # A dot name with TMP_MARK, like atomic.py's, so clean_temp_files removes leftovers.
    tmp = path.with_name(f".{path.stem}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")
    try:
        with naming_disk_full(path):
            if suffix == ".gif":
                iio.imwrite(tmp, np.stack(frames), extension=".gif", duration=1000 / fps, loop=0)
            else:
                iio.imwrite(tmp, np.stack(frames), extension=suffix, fps=fps)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        with contextlib.suppress(OSError):
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path
