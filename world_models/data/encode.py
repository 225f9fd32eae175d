"""``encode(config) -> Path``: a dataset's frames through V, once, into latent series.

Each episode ``ep_XXXXXX.npz`` of the dataset becomes a file of the same name in the series
folder holding ``mu``, ``logvar`` (T, Z) float16 and the episode's ``action``, ``reward``,
``terminated``, ``truncated`` (see :mod:`world_models.data.series`). M then trains on these
without touching a frame again (the popular port re-encodes every frame of every batch).

The pipeline, every stage bounded so memory stays flat and a killed run loses little:

* a reader pool decompresses episodes (zlib releases the GIL), at most ``2 x io_threads``
  ahead of the device;
* frames are copied straight into one of two staging buffers of exactly ``batch_size``
  frames (pinned on CUDA; episodes straddle chunks), copied to the device asynchronously and
  encoded while the host fills the other buffer; a chunk's latents are read back one chunk
  later, so host and device work overlap;
* a writer pool writes each episode (atomically) as soon as its last frame is encoded.

Existing valid outputs are skipped, so a killed run resumes; the series folder records which
VAE made it (a hash of its weights) and refuses to mix in latents of another.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

from world_models import __version__
from world_models.core.atomic import atomic_write_json, clean_temp_files
from world_models.core.checkpoint import weights_digest
from world_models.core.config import to_dict
from world_models.core.device import pick_device
from world_models.core.errors import DataError
from world_models.core.locking import lock_folder
from world_models.data import store
from world_models.data.configs import EncodeConfig
from world_models.models.vae import IMAGE_SIZE, ConvVAE
from world_models.models.world_model import check_env_matches

SERIES_MANIFEST = "series.json"
T = TypeVar("T")
R = TypeVar("R")


def _check_manifest(out: Path, manifest: dict) -> None:
    path = out / SERIES_MANIFEST
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("vae_sha256") != manifest["vae_sha256"]:
            raise DataError(
                f"{out} holds latents of another VAE ({old.get('vae')}, sha256 "
                f"{str(old.get('vae_sha256'))[:12]}); this VAE is {manifest['vae']} "
                f"({manifest['vae_sha256'][:12]}): use another --out-dir"
            )
        if old.get("data_dir") != manifest["data_dir"]:
            raise DataError(
                f"{out} holds latents of dataset {old.get('data_dir')}, not "
                f"{manifest['data_dir']}: use another --out-dir"
            )
    atomic_write_json(path, manifest)


def _is_done(path: Path) -> bool:
    try:
        return set(store.npz_keys(path)) >= {
            "mu",
            "logvar",
            "action",
            "reward",
            "terminated",
            "truncated",
        }
    except DataError:
        return False


@dataclass
class _Series:
    """An episode in flight: its latents fill in chunk by chunk, then it is written."""

    path: Path
    rest: dict[str, np.ndarray]  # action, reward, terminated, truncated
    out: np.ndarray  # (T, 2Z) float16: mu then logvar
    left: int  # frames not yet encoded


class _NoEvent:
    """Stands in for a CUDA event on the CPU, where every copy is finished when it returns."""

    def record(self) -> None:
        pass

    def synchronize(self) -> None:
        pass


def _host_buffer(shape: tuple[int, ...], dtype: torch.dtype, cuda: bool) -> torch.Tensor:
    # Pinned memory makes copies to and from the GPU asynchronous (and faster).
    return torch.empty(shape, dtype=dtype, pin_memory=cuda)


def _event(cuda: bool) -> torch.cuda.Event | _NoEvent:
    return torch.cuda.Event() if cuda else _NoEvent()


@torch.no_grad()
def _encode_stream(
    vae, episodes: Iterable[tuple[_Series, np.ndarray]], batch: int, amp: bool
) -> Iterator[_Series]:
    """Encode ``(series, obs (T, 64, 64, C) uint8)`` pairs; yield each series once complete.

    Frames are copied into a staging buffer of exactly ``batch`` frames, an episode's rest
    going to the next chunk. Two staging and two result buffers alternate: while the device
    encodes chunk k, the host collects chunk k - 1's latents and fills chunk k + 1.
    """
    device = vae.fc_mu.weight.device
    cuda = device.type == "cuda"
    frame = (IMAGE_SIZE, IMAGE_SIZE, vae.input_channels)
    staging = [_host_buffer((batch, *frame), torch.uint8, cuda) for _ in range(2)]  # (B, 64, 64, C)
    results = [_host_buffer((batch, 2 * vae.latent_size), torch.float16, cuda) for _ in range(2)]
    copied = [_event(cuda) for _ in range(2)]  # the device has read staging[s]
    ready = [_event(cuda) for _ in range(2)]  # results[s] holds its chunk's latents
    # Per slot, what its chunk holds: (series, first frame in the episode, first row, rows).
    parts: list[list[tuple[_Series, int, int, int]]] = [[], []]

    def launch(s: int, n: int) -> None:
        # On CUDA always the whole buffer (rows past n: stale frames, ignored), so every
        # forward has one shape and cudnn.benchmark tunes it once.
        rows = batch if cuda else n
        x = staging[s][:rows].to(device, non_blocking=True)  # (rows, 64, 64, C) uint8
        copied[s].record()
        mu, logvar = vae.encode_frames(x, amp)  # (rows, Z) each
        results[s][:rows].copy_(torch.cat([mu, logvar], 1).half(), non_blocking=True)
        ready[s].record()

    def collect(s: int) -> Iterator[_Series]:
        ready[s].synchronize()
        res = results[s].numpy()  # (B, 2Z) float16
        for series, start, row, n in parts[s]:
            series.out[start : start + n] = res[row : row + n]
            series.left -= n
            if series.left == 0:
                yield series
        parts[s] = []

    slot, fill, last = 0, 0, None  # last: the slot launched last and not yet collected
    for series, obs in episodes:
        pos = 0
        while pos < len(obs):
            if fill == 0:
                copied[slot].synchronize()  # never overwrite frames not yet on the device
            n = min(len(obs) - pos, batch - fill)
            staging[slot][fill : fill + n].copy_(torch.from_numpy(obs[pos : pos + n]))
            parts[slot].append((series, pos, fill, n))
            pos, fill = pos + n, fill + n
            if fill == batch:
                launch(slot, fill)
                if last is not None:
                    yield from collect(last)
                last, slot, fill = slot, 1 - slot, 0
    if fill:
        launch(slot, fill)
    for s in (last, slot if fill else None):
        if s is not None:
            yield from collect(s)


def _prefetch(
    pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Iterable[T], depth: int
) -> Iterator[R]:
    """``fn(item)`` for each item, in order, run by ``pool`` at most ``depth`` items ahead."""
    items = iter(items)
    ahead = deque(pool.submit(fn, x) for x in itertools.islice(items, depth))
    while ahead:
        future = ahead.popleft()
        ahead.extend(pool.submit(fn, x) for x in itertools.islice(items, 1))
        yield future.result()


def _check_finite(series: _Series, vae: Path) -> None:
    """Refuse NaN or Inf latents (a damaged V, or values beyond float16's 65504) before
    they are written: M would train on them, and a series file with them looks whole."""
    finite = np.isfinite(series.out).all(axis=1)  # (T,)
    if not finite.all():
        t = int(np.flatnonzero(~finite)[0])
        raise DataError(
            f"{series.path}: V ({vae}) encodes frame {t} of {len(finite)} (and "
            f"{int((~finite).sum()) - 1} more) to NaN or Inf latents; nothing is written for "
            f"it. Check that checkpoint (damaged, or trained into a divergence)"
        )


def _write(out: Path, series: _Series) -> None:
    z = series.out.shape[1] // 2
    arrays = {"mu": series.out[:, :z], "logvar": series.out[:, z:], **series.rest}
    store.save_npz(out / series.path.name, arrays, 1)  # atomic: temp file, then rename


def encode(config: EncodeConfig) -> Path:
    """Encode every episode of ``config.data_dir`` not yet in ``config.out_dir``."""

    # Every check before anything is written.
    episodes = store.list_episodes(config.data_dir)
    if not episodes:
        raise DataError(f"{config.data_dir}: no episode files (ep_*.npz)")
    device = pick_device(config.device)
    amp = device.type == "cuda" if config.amp is None else config.amp
    vae = ConvVAE.from_pretrained(config.vae, map_location=device).eval()
    env = _dataset_env(config.data_dir)
    check_env_matches(
        env,
        getattr(vae, "checkpoint_meta", None),
        "V",
        config.vae,
        advice=f"{config.data_dir} holds {env} episodes; encode them with a V trained on {env}",
    )
    vae.uint8_input = True
    vae.check_inputs = False  # uint8 frames are valid by construction
    if device.type == "cuda":
        vae.to(memory_format=torch.channels_last)
    with lock_folder(config.out_dir, "series folder") as out:  # one writer per folder
        return _encode_locked(config, episodes, vae, device, amp, out, env)


def _dataset_env(data_dir: Path) -> str | None:
    """The env preset a dataset's manifest names (None: no manifest, or it names none)."""
    env = (store.read_manifest(data_dir) or {}).get("env")
    return env if isinstance(env, str) else None


def _encode_locked(
    config: EncodeConfig,
    episodes: list[Path],
    vae,
    device: torch.device,
    amp: bool,
    out: Path,
    env: str | None,
) -> Path:

    clean_temp_files(out)
    _check_manifest(
        out,
        {
            "vae": str(config.vae),
            "vae_sha256": weights_digest(config.vae),
            "latent_size": vae.latent_size,
            "data_dir": str(Path(config.data_dir).resolve()),
            "env": env,  # recorded in M by train-mdrnn: later commands refuse another env
            "dtype": "float16",
            "library_version": __version__,
            "config": to_dict(config),
        },
    )
    todo = [p for p in episodes if not _is_done(out / p.name)]
    threads = config.io_threads or max(2, os.cpu_count() or 2)
    frame = (IMAGE_SIZE, IMAGE_SIZE, vae.input_channels)

    def load(path: Path) -> tuple[Path, dict | None]:
        try:
            arrays = store.load_npz(path, store.EPISODE_KEYS)
            store.validate_episode(arrays, path)
            if arrays["obs"].shape[1:] != frame:
                raise DataError(f"{path}: frames are {arrays['obs'].shape[1:]}, V takes {frame}")
            return path, arrays
        except DataError as exc:
            if not config.skip_bad:
                raise
            warnings.warn(f"skipping {exc}", stacklevel=2)
            return path, None

    bar = tqdm(total=len(todo), unit="ep", disable=not config.progress, dynamic_ncols=True)
    readers = ThreadPoolExecutor(threads, thread_name_prefix="encode-read")
    n_writers = max(2, threads // 2)  # a series file is small: writing is cheaper than reading
    writers = ThreadPoolExecutor(n_writers, thread_name_prefix="encode-write")
    writes: deque[tuple[Future, int]] = deque()  # oldest first, with the episode's frames
    max_writes = 4 * n_writers  # beyond this the device waits for the oldest write
    frames_done = 0

    def loaded() -> Iterator[tuple[_Series, np.ndarray]]:
        for path, arrays in _prefetch(readers, load, todo, 2 * threads):
            if arrays is None:
                bar.update(1)  # skipped (skip_bad)
                continue
            obs = arrays.pop("obs")  # (T, 64, 64, C) uint8
            latents = np.empty((len(obs), 2 * vae.latent_size), np.float16)  # (T, 2Z)
            yield _Series(path, arrays, latents, len(obs)), obs

    def finish_oldest() -> None:
        nonlocal frames_done
        future, frames = writes.popleft()
        future.result()  # a write error stops the run here
        frames_done += frames
        bar.update(1)
        bar.set_postfix(frames=frames_done, refresh=False)

    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True  # chunks have one fixed shape: tune it once
    # Events record on the current device's stream: make it the encoder's (e.g. cuda:1).
    on_device = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    try:
        batch = config.batch_size or (4096 if device.type == "cuda" else 128)
        with on_device:
            for series in _encode_stream(vae, loaded(), batch, amp):
                _check_finite(series, config.vae)
                writes.append((writers.submit(_write, out, series), len(series.out)))
                while writes and (len(writes) > max_writes or writes[0][0].done()):
                    finish_oldest()
        while writes:
            finish_oldest()
    finally:
        # On an error or Ctrl-C, queued reads and writes are dropped (a re-run redoes them);
        # the few running finish quickly, and every file is written atomically.
        torch.backends.cudnn.benchmark = benchmark
        for pool in (readers, writers):
            pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return out


def describe(out: Path) -> str:
    return f"series: {out}"
