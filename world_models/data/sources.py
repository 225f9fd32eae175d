"""Frames for training V (:class:`FrameSource`), split with :func:`store.split_episodes`.

M's windows come from the cached latent series (:mod:`world_models.data.series`), which
use the same split rule.

Frames stay uint8 until they are on the device; the model normalises them there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from world_models.core.atomic import TMP_MARK, atomic_open, atomic_write_json
from world_models.core.errors import DataError, DiskFullError
from world_models.data import store

CACHE_DIR = ".cache"
"""The frame cache's folder inside a dataset folder (the default place)."""
USER_CACHE = Path("world_models") / "frames"
"""Under ``$XDG_CACHE_HOME`` (default ``~/.cache``): where the caches of read-only datasets go."""
_said: set[Path] = set()  # the fallback folders already announced by this process
FRAME_SHAPE = (64, 64, 3)
FRAME_BYTES = 64 * 64 * 3
CACHE_WAIT_S = 4 * 3600.0
"""How long local ranks other than 0 wait for local rank 0 to build a frame cache."""
RESIDENT_OF_TOTAL, RESIDENT_OF_FREE = 0.4, 0.6
"""Auto residency: a split goes onto the GPU only if it takes less than 40% of the GPU's
memory and less than 60% of what is free, so train + held-out (~44% at most) leave room
for the model, activations and the allocator's slack."""


def _clean_dead_temps(folder: Path) -> None:
    """Delete temp files of killed writers, but not those of live ones (another job may
    build a cache in the same folder): temp names carry the writer's pid (see ``atomic``)."""
    for p in folder.glob(f".*{TMP_MARK}*"):
        try:
            pid = int(p.name.split(TMP_MARK, 1)[1].split("-", 1)[0])
            os.kill(pid, 0)  # raises if no such process
        except (ValueError, IndexError, ProcessLookupError):
            p.unlink(missing_ok=True)
        except PermissionError:
            pass  # alive, another user's


def _local_rank() -> int:
    """This process's rank on its node: 0 builds caches, the others wait for them."""
    if "LOCAL_RANK" in os.environ:
        return int(os.environ["LOCAL_RANK"])

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()  # no LOCAL_RANK: assume a single node
    return 0


def _fits_on_gpu(nbytes: int, free: int, total: int) -> bool:
    """The auto residency rule (see ``RESIDENT_OF_TOTAL``)."""
    return nbytes < RESIDENT_OF_TOTAL * total and nbytes < RESIDENT_OF_FREE * free


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
    <hash>.npy`` plus a ``.json`` listing the episodes it holds (both written atomically;
    with ``cache_dir``, or when DIR cannot be written (a read-only mount, ``chattr +i``),
    in a folder for this dataset under ``cache_dir`` or ``$XDG_CACHE_HOME/world_models/
    frames``, which a warning names; a cache already in DIR is used where it is;
    the hash covers each episode's name, size, modification time (ns) and inode, and
    ``max_frames``, so a grown dataset or a rewritten episode gets a new cache and the old
    one of that split is deleted; a ``stat`` per episode, no reading). A cache that exists is used
    without reading the episodes. Under DDP (``LOCAL_RANK`` set or torch.distributed
    initialised) local rank 0 builds it and the other ranks wait for it.

    Batches are gathered from a memmap of the cache. On CUDA the whole split is copied to
    the GPU ("resident"; batches are then an ``index_select`` there) when ``resident`` is
    True, or when it is None and the split takes less than 40% of the GPU's memory and 60%
    of the free memory; otherwise each batch goes through pinned memory with a
    non-blocking copy. Other accelerators (mps, xpu) get each batch with ``.to(device)``.
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
        resident: bool | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        """``max_frames`` keeps the first frames of the split (in episode order);
        ``skip_bad`` decodes every episode (when building the cache) and skips bad ones
        with a warning instead of raising :class:`DataError`; ``resident`` (CUDA only):
        None decides by the rule above, False always uses the pinned path, True requires
        the split on the GPU (DataError if it does not fit); ``cache_dir``: where the
        frame cache goes (None: see above)."""
        self.data_dir = Path(data_dir)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.split = split
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            # an explicit index: streams, events and guards below must name one GPU
            self.device = torch.device("cuda", torch.cuda.current_device())
        if resident and self.device.type != "cuda":
            raise ValueError(f"resident=True needs a CUDA device, not {self.device}")
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
            self._gpu = self._maybe_to_gpu(resident)
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
        # one stat per episode, no read: an existing cache is found without opening any
        # episode, and an episode rewritten since (even at the same size) gets a new cache
        key = "\n".join(_episode_key(p) for p in paths)
        digest = hashlib.sha1(f"{key}\nmax_frames={max_frames}".encode()).hexdigest()[:16]
        cache = self._cache_folder() / f"frames-{self.split}-{digest}.npy"
        meta_path = cache.with_suffix(".json")
        if not cache.exists():
            if _local_rank() == 0:
                failed = _failed_marker(cache)
                failed.unlink(missing_ok=True)
                try:
                    self._build_cache(cache, paths, max_frames, skip_bad)
                except BaseException as exc:  # tell the waiting ranks, then fail here too
                    with contextlib.suppress(OSError):  # best effort: the error comes first
                        failed.parent.mkdir(parents=True, exist_ok=True)
                        failed.write_text(f"{type(exc).__name__}: {exc}")
                    raise
            else:
                _wait_for(cache)
        try:  # written before the .npy, so present once the .npy is
            meta = json.loads(meta_path.read_text())
            names, skipped, total = meta["episodes"], meta["skipped"], meta["frames"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{meta_path}: unreadable cache index ({exc}); delete it") from None
        for _, reason in skipped:
            if not skip_bad:  # what building it without skip_bad would have raised
                raise DataError(reason)
            warnings.warn(f"skipping {reason}", stacklevel=3)
        if not names:
            raise DataError(f"{self.data_dir}: no readable episodes in the {self.split!r} split")
        try:
            frames = np.load(cache, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise DataError(f"{cache}: unreadable frame cache ({exc}); delete it") from None
        if frames.shape != (total, *FRAME_SHAPE) or frames.dtype != np.uint8:
            raise DataError(f"{cache}: frame cache has shape {frames.shape}; delete it")
        return [self.data_dir / n for n in names], frames

    def _cache_folder(self) -> Path:
        """Where this dataset's frame caches live (see the class docstring)."""
        own = self.data_dir / CACHE_DIR
        if self.cache_dir is not None:
            return _dataset_folder(self.cache_dir, self.data_dir)
        if any(own.glob(f"frames-{self.split}-*.npy")) or _writable(own):
            return own  # an existing cache is used (re-checked by its hash) even if read-only
        home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        folder = _dataset_folder(Path(home) / USER_CACHE, self.data_dir)
        if folder not in _said:
            _said.add(folder)
            warnings.warn(
                f"{self.data_dir} cannot be written (read-only?): its frame cache goes to "
                f"{folder} instead (set --cache-dir to choose the place)",
                stacklevel=4,
            )
        return folder

    def _build_cache(
        self, cache: Path, paths: list[Path], max_frames: int | None, skip_bad: bool
    ) -> None:
        good: list[Path] = []
        lengths: list[int] = []
        skipped: list[tuple[str, str]] = []
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
                if dtype != np.uint8 or len(shape) != 4 or shape[1:] != FRAME_SHAPE:
                    raise DataError(f"{p}: obs must be uint8 (T, 64, 64, 3), got {dtype} {shape}")
            except DataError as exc:
                if not skip_bad:
                    raise
                skipped.append((p.name, str(exc)))  # warned about at each use of the cache
                continue
            good.append(p)
            lengths.append(shape[0])
            count += shape[0]
        total = sum(lengths) if max_frames is None else min(sum(lengths), max_frames)
        cache_dir = cache.parent
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(
                f"{cache_dir}: cannot create the frame cache's folder ({exc.strerror}); "
                f"set --cache-dir to a writable folder"
            ) from None
        _clean_dead_temps(cache_dir)
        for old in cache_dir.glob(f"frames-{self.split}-*"):
            if old.stem != cache.stem:  # a stale cache of this split: free its space first
                old.unlink(missing_ok=True)
        need, free = total * FRAME_BYTES, shutil.disk_usage(cache_dir).free
        if need > free:
            raise DataError(
                f"{cache}: the frame cache of the {self.split!r} split needs "
                f"{need / 2**30:.2f} GiB but {cache_dir} has {free / 2**30:.2f} GiB free; "
                f"free some space or pass max_frames"
            )
        try:
            atomic_write_json(
                cache.with_suffix(".json"),
                {"episodes": [p.name for p in good], "skipped": skipped, "frames": total},
            )
            with atomic_open(cache, "wb") as fh:  # the .npy last: waiting ranks poll for it
                header = {"descr": "|u1", "fortran_order": False, "shape": (total, *FRAME_SHAPE)}
                np.lib.format.write_array_header_2_0(fh, header)
                left = total
                for p, n in zip(good, lengths):
                    obs = store.load_npz(p, ["obs"])["obs"]  # (T, 64, 64, 3)
                    if obs.shape != (n, *FRAME_SHAPE):  # changed since its header was read
                        raise DataError(f"{p}: obs changed while caching; run again")
                    fh.write(np.ascontiguousarray(obs[:left]).tobytes())
                    left -= len(obs)
        except DiskFullError:
            raise  # names the cache and the space left already
        except OSError as exc:  # EIO and the like, named with the cache's path
            raise DataError(f"{cache}: cannot write the frame cache ({exc})") from None

    def _maybe_to_gpu(self, resident: bool | None) -> torch.Tensor | None:
        if resident is False:
            return None
        nbytes = self._frames.nbytes
        with torch.cuda.device(self.device):
            free, total = torch.cuda.mem_get_info(self.device)
            if resident is None and not _fits_on_gpu(nbytes, free, total):
                return None
            if nbytes > free:
                raise DataError(
                    f"{self.data_dir}: the {self.split!r} split takes {nbytes / 2**30:.2f} GiB, "
                    f"{self.device} has {free / 2**30:.2f} GiB free; pass resident=None or False"
                )
            try:
                gpu = torch.empty(self._frames.shape, dtype=torch.uint8, device=self.device)
            except torch.cuda.OutOfMemoryError:
                if resident:
                    raise DataError(
                        f"{self.data_dir}: the {self.split!r} split does not fit "
                        f"on {self.device}; pass resident=None or False"
                    ) from None
                return None  # fragmented: the pinned path needs no big block
            chunk = 16384  # ~200 MB of frames per copy: bounded host memory
            for s in range(0, self.num_frames, chunk):
                part = torch.from_numpy(np.array(self._frames[s : s + chunk]))  # writable copy
                gpu[s : s + chunk].copy_(part)
        return gpu  # (N, 64, 64, 3) uint8 on the GPU

    # ------------------------------------------------------------------ batches
    def _gather(self, idx: np.ndarray) -> torch.Tensor:
        """(B,) indices -> (B, 3, 64, 64) uint8 on the device, channels_last."""
        if self._gpu is not None:
            with torch.cuda.device(self.device):  # pinned + non_blocking: no host sync
                host = torch.from_numpy(np.ascontiguousarray(idx)).pin_memory()  # (B,) int64
                t = host.to(self.device, non_blocking=True)
            nhwc = self._gpu.index_select(0, t)  # (B, 64, 64, 3)
        elif self.device.type == "cuda":
            nhwc = self._via_pinned(idx)
        else:
            nhwc = torch.from_numpy(np.take(self._frames, idx, axis=0))  # (B, 64, 64, 3)
            if self.device.type != "cpu":  # mps, xpu, ...: a plain copy
                nhwc = nhwc.to(self.device)
        return nhwc.permute(0, 3, 1, 2)  # (B, 3, 64, 64) view: channels_last memory format

    def _via_pinned(self, idx: np.ndarray) -> torch.Tensor:
        # Two pinned buffers used in turn; an event recorded on the stream that runs the copy
        # says when a buffer's copy has finished, so it is not refilled while the GPU reads it.
        # Everything runs under self.device's guard: with cuda:1 while cuda:0 is current, the
        # copy and its event must both be on cuda:1's current stream.
        b = len(idx)
        with torch.cuda.device(self.device):
            stream = torch.cuda.current_stream(self.device)
            slot, self._slot = self._slot, 1 - self._slot
            if len(self._pinned) <= slot:
                self._pinned.append(torch.empty((b, *FRAME_SHAPE), dtype=torch.uint8).pin_memory())
                self._events.append(torch.cuda.Event())
            buf, event = self._pinned[slot], self._events[slot]
            event.synchronize()  # the copy that last read this buffer has finished
            if buf.shape[0] < b:
                buf = torch.empty((b, *FRAME_SHAPE), dtype=torch.uint8).pin_memory()
                self._pinned[slot] = buf
            host = buf[:b]  # (B, 64, 64, 3)
            np.take(self._frames, idx, axis=0, out=host.numpy())
            out = host.to(self.device, non_blocking=True)  # on `stream` (the guard's current)
            event.record(stream)
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
        start: int = 0,
    ) -> Iterator[torch.Tensor]:
        """Yield uint8 batches of shape (B, 3, 64, 64) on ``device`` (a permuted view of NHWC
        data, i.e. channels_last memory format). One pass = one epoch; ``seed`` (e.g. base
        seed + epoch) fixes the order; rank/world_size shard each epoch's order for DDP
        (every rank gets the same number of batches); ``start`` skips that many batches
        without gathering them (a mid-epoch resume)."""
        order = _epoch_order(
            self.num_frames, batch_size, shuffle, seed, drop_last, rank, world_size
        )[start * batch_size :]
        if self._gpu is None:
            for s in range(0, len(order), batch_size):
                yield self._gather(order[s : s + batch_size])
            return
        # Resident: one pinned non-blocking upload of the epoch's order, then each batch is
        # a slice of it on the device (no host sync per step).
        with torch.cuda.device(self.device):
            host = torch.from_numpy(np.ascontiguousarray(order)).pin_memory()  # (n,) int64
            dev_order = host.to(self.device, non_blocking=True)
        for s in range(0, len(order), batch_size):
            nhwc = self._gpu.index_select(0, dev_order[s : s + batch_size])  # (B, 64, 64, 3)
            yield nhwc.permute(0, 3, 1, 2)  # (B, 3, 64, 64), channels_last

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


def _episode_key(path: Path) -> str:
    """What identifies an episode file's content, from one ``stat``: size, mtime in ns, and
    the inode (episodes are written by rename, so a rewrite always gets a new one)."""
    st = path.stat()
    return f"{path.name}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def _dataset_folder(root: Path, data_dir: Path) -> Path:
    """One folder per dataset under a shared cache ``root`` (by name and resolved path), so
    one dataset's stale-cache cleanup never deletes another's cache."""
    tag = hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:10]
    return root / f"{data_dir.resolve().name or 'data'}-{tag}"


def _writable(folder: Path) -> bool:
    """Whether files can be created in ``folder`` (or, while it is missing, in its parent,
    where it would be made): tried with a probe file, not inferred from permission bits,
    which say nothing of ``chattr +i``, read-only mounts or root."""
    where = folder if folder.is_dir() else folder.parent
    try:
        fd, probe = tempfile.mkstemp(prefix=f".probe{TMP_MARK}{os.getpid()}-", dir=where)
    except OSError:
        return False
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return True


def _failed_marker(cache: Path) -> Path:
    return cache.with_name(f".{cache.stem}.failed")


def _wait_for(cache: Path) -> None:
    """Wait (polling) until local rank 0 has renamed the finished cache into place."""
    t0, started = time.monotonic(), time.time()
    failed = _failed_marker(cache)
    while not cache.exists():
        # rank 0's build failed: say so now, not after CACHE_WAIT_S (a marker from well
        # before this launch is a stale one, which rank 0 is about to delete)
        if failed.exists() and failed.stat().st_mtime > started - 600:
            raise DataError(
                f"{cache}: local rank 0 failed to build this frame cache "
                f"({failed.read_text(errors='replace').strip()})"
            )
        if time.monotonic() - t0 > CACHE_WAIT_S:
            raise DataError(
                f"{cache}: local rank {_local_rank()} waited {CACHE_WAIT_S:.0f} s for local "
                f"rank 0 to build this frame cache; see rank 0's log, or build it once "
                f"without DDP"
            )
        time.sleep(0.5)
