"""Frames for training V (:class:`FrameSource`), split with :func:`store.split_episodes`.

M's windows come from the cached latent series (:mod:`world_models.data.series`), which
use the same split rule.

Frames stay uint8 until they are on the device; the model normalises them there.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from world_models.atomic import TMP_MARK, atomic_open
from world_models.data import store
from world_models.errors import DataError

CACHE_DIR = ".cache"


def _clean_dead_temps(folder: Path) -> None:
    """Delete temp files of killed writers, but not those of live ones (DDP ranks build the
    same cache at the same time): temp names carry the writer's pid (see ``atomic``)."""
    for p in folder.glob(f".*{TMP_MARK}*"):
        try:
            pid = int(p.name.split(TMP_MARK, 1)[1].split("-", 1)[0])
            os.kill(pid, 0)  # raises if no such process
        except (ValueError, IndexError, ProcessLookupError):
            p.unlink(missing_ok=True)
        except PermissionError:
            pass  # alive, another user's


def _epoch_order(
    n: int, batch_size: int, shuffle: bool, seed: int, drop_last: bool, rank: int, world_size: int
) -> np.ndarray:
    """This rank's item indices for one epoch, as (num_batches, ...) slices of one array.

    Every rank gets the same number of items: with ``drop_last`` the order is cut to a
    multiple of ``batch_size * world_size``; without it, it is padded by wrapping around
    (as torch's DistributedSampler does) to a multiple of ``world_size``.
    """
    if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"bad batch_size/rank/world_size: {batch_size}, {rank}, {world_size}")
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    if drop_last:
        total = n // (batch_size * world_size) * batch_size * world_size
        if total == 0:
            raise DataError(
                f"{n} items are fewer than one batch of {batch_size} x "
                f"{world_size} rank(s); lower batch_size or pass drop_last=False"
            )
        order = order[:total]
    elif n % world_size:
        order = np.concatenate([order, order[: world_size - n % world_size]])
    return order[rank::world_size]


class FrameSource:
    """All frames of a split as one uint8 array, served as (B, 3, 64, 64) batches.

    The first use of a split consolidates its episodes into ``DIR/.cache/frames-<split>-
    <hash>.npy`` (written atomically; the hash covers the episode names and sizes, so a
    grown dataset gets a new cache and the old one of that split is deleted). Batches are
    gathered from a memmap of it; on CUDA, the whole set is copied to the GPU when it takes
    less than half the free memory (batches are then an ``index_select`` there), otherwise
    each batch goes through pinned memory with a non-blocking copy.
    """

    def __init__(
        self,
        data_dir: str | Path,
        split: str = "train",
        holdout_fraction: float = 0.1,
        device: str | torch.device = "cpu",
        max_frames: int | None = None,
        *,
        skip_bad: bool = False,
    ) -> None:
        """``max_frames`` keeps the first frames of the split (in episode order);
        ``skip_bad`` decodes every episode first and skips bad ones with a warning instead
        of raising :class:`DataError`."""
        self.data_dir = Path(data_dir)
        self.split = split
        self.device = torch.device(device)
        paths = store.list_episodes(self.data_dir)
        if not paths:
            raise DataError(f"{self.data_dir}: no episode files (ep_*.npz)")
        paths = store.split_episodes(paths, split, holdout_fraction)  # type: ignore[arg-type]
        if not paths:
            raise DataError(
                f"{self.data_dir}: the {split!r} split is empty "
                f"(holdout_fraction={holdout_fraction})"
            )
        paths, self._frames = self._load_cache(paths, max_frames, skip_bad)
        self.episodes: list[str] = [p.name for p in paths]  # sorted; those that gave frames
        self.num_frames: int = len(self._frames)
        self._gpu: torch.Tensor | None = None
        if self.device.type == "cuda":
            self._gpu = self._maybe_to_gpu()
            self._pinned: list[torch.Tensor] = []
            self._events: list[torch.cuda.Event] = []
            self._slot = 0

    def __len__(self) -> int:
        return self.num_frames

    # ------------------------------------------------------------------ cache
    def _load_cache(
        self, paths: list[Path], max_frames: int | None, skip_bad: bool
    ) -> tuple[list[Path], np.ndarray]:
        """(episodes used, (N, 64, 64, 3) uint8 memmap of their frames)."""
        good: list[Path] = []
        lengths: list[int] = []
        frame_shape = (64, 64, 3)
        count = 0
        for p in paths:
            if max_frames is not None and count >= max_frames:
                break
            try:
                if skip_bad:  # decode fully: a corrupt file must be found before writing
                    obs = store.load_npz(p, ["obs"])["obs"]
                    shape, dtype = obs.shape, obs.dtype
                else:  # headers only; a corrupt body still fails below, naming the file
                    shape, dtype = store.npz_header(p, "obs")
                if dtype != np.uint8 or len(shape) != 4 or shape[1:] != frame_shape:
                    raise DataError(f"{p}: obs must be uint8 (T, 64, 64, 3), got {dtype} {shape}")
            except DataError as exc:
                if not skip_bad:
                    raise
                warnings.warn(f"skipping {exc}", stacklevel=3)
                continue
            good.append(p)
            lengths.append(shape[0])
            count += shape[0]
        if not good:
            raise DataError(f"{self.data_dir}: no readable episodes in the {self.split!r} split")
        paths = good
        total = sum(lengths) if max_frames is None else min(sum(lengths), max_frames)
        key = "\n".join(f"{p.name}:{p.stat().st_size}:{n}" for p, n in zip(paths, lengths))
        digest = hashlib.sha1(f"{key}\n{total}".encode()).hexdigest()[:16]
        cache_dir = self.data_dir / CACHE_DIR
        cache = cache_dir / f"frames-{self.split}-{digest}.npy"
        if not cache.exists():
            cache_dir.mkdir(exist_ok=True)
            _clean_dead_temps(cache_dir)
            with atomic_open(cache, "wb") as fh:
                header = {"descr": "|u1", "fortran_order": False, "shape": (total, *frame_shape)}
                np.lib.format.write_array_header_2_0(fh, header)
                left = total
                for p, n in zip(paths, lengths):
                    obs = store.load_npz(p, ["obs"])["obs"]  # (T, 64, 64, 3)
                    if obs.shape != (n, *frame_shape):  # changed since its header was read
                        raise DataError(f"{p}: obs changed while caching; run again")
                    fh.write(np.ascontiguousarray(obs[:left]).tobytes())
                    left -= len(obs)
            for old in cache_dir.glob(f"frames-{self.split}-*.npy"):
                if old != cache:  # a stale cache of this split (the dataset changed)
                    old.unlink(missing_ok=True)
        try:
            frames = np.load(cache, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise DataError(f"{cache}: unreadable frame cache ({exc}); delete it") from None
        if frames.shape != (total, *frame_shape) or frames.dtype != np.uint8:
            raise DataError(f"{cache}: frame cache has shape {frames.shape}; delete it")
        return paths, frames

    def _maybe_to_gpu(self) -> torch.Tensor | None:
        free, _ = torch.cuda.mem_get_info(self.device)
        if self._frames.nbytes > 0.5 * free:
            return None
        gpu = torch.empty(self._frames.shape, dtype=torch.uint8, device=self.device)
        chunk = 16384  # ~200 MB of frames per copy: bounded host memory
        for s in range(0, self.num_frames, chunk):
            part = torch.from_numpy(np.array(self._frames[s : s + chunk]))  # a writable copy
            gpu[s : s + chunk].copy_(part)
        return gpu  # (N, 64, 64, 3) uint8 on the GPU

    # ------------------------------------------------------------------ batches
    def _gather(self, idx: np.ndarray) -> torch.Tensor:
        """(B,) indices -> (B, 3, 64, 64) uint8 on the device, channels_last."""
        if self._gpu is not None:
            t = torch.from_numpy(idx).to(self.device, non_blocking=True)
            nhwc = self._gpu.index_select(0, t)  # (B, 64, 64, 3)
        elif self.device.type == "cuda":
            nhwc = self._via_pinned(idx)
        else:
            nhwc = torch.from_numpy(np.take(self._frames, idx, axis=0))  # (B, 64, 64, 3)
        return nhwc.permute(0, 3, 1, 2)  # (B, 3, 64, 64) view: channels_last memory format

    def _via_pinned(self, idx: np.ndarray) -> torch.Tensor:
        # Two pinned buffers used in turn; an event says when a buffer's copy has finished
        # so it is not overwritten while the GPU still reads it.
        b = len(idx)
        slot, self._slot = self._slot, 1 - self._slot
        if len(self._pinned) <= slot:
            self._pinned.append(torch.empty((b, 64, 64, 3), dtype=torch.uint8).pin_memory())
            self._events.append(torch.cuda.Event())
        buf, event = self._pinned[slot], self._events[slot]
        event.synchronize()  # the copy that last read this buffer has finished
        if buf.shape[0] < b:
            buf = self._pinned[slot] = torch.empty((b, 64, 64, 3), dtype=torch.uint8).pin_memory()
        host = buf[:b]
        np.take(self._frames, idx, axis=0, out=host.numpy())
        out = host.to(self.device, non_blocking=True)
        event.record()
        return out

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> Iterator[torch.Tensor]:
        """Yield uint8 batches of shape (B, 3, 64, 64) on ``device`` (a permuted view of NHWC
        data, i.e. channels_last memory format). One pass = one epoch; ``seed`` (e.g. base
        seed + epoch) fixes the order; rank/world_size shard each epoch's order for DDP
        (every rank gets the same number of batches)."""
        order = _epoch_order(
            self.num_frames, batch_size, shuffle, seed, drop_last, rank, world_size
        )
        for s in range(0, len(order), batch_size):
            yield self._gather(order[s : s + batch_size])

    def num_batches(self, batch_size: int, *, drop_last: bool = True, world_size: int = 1) -> int:
        """Batches per epoch per rank, as :meth:`batches` yields them."""
        if drop_last:
            return self.num_frames // (batch_size * world_size)
        per_rank = -(-self.num_frames // world_size)
        return -(-per_rank // batch_size)

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """A fixed (n, 3, 64, 64) uint8 set of frames for image grids (same seed, same set)."""
        rng = np.random.default_rng(seed)
        idx = rng.choice(self.num_frames, size=n, replace=n > self.num_frames)
        return self._gather(np.sort(idx)).contiguous(memory_format=torch.channels_last)
