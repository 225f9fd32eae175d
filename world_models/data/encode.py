"""``encode(config) -> Path``: a dataset's frames through V, once, into latent series.

Each episode ``ep_XXXXXX.npz`` of the dataset becomes a file of the same name in the series
folder holding ``mu``, ``logvar`` (T, Z) float16 and the episode's ``action``, ``reward``,
``terminated``, ``truncated`` (see :mod:`world_models.data.series`). M then trains on these
without touching a frame again (the popular port re-encodes every frame of every batch).

Episodes are read and decompressed by a thread pool (zlib releases the GIL) while the device
encodes; several episodes are packed into each forward pass. Existing valid outputs are
skipped, so a killed run resumes; the series folder records which VAE made it (a hash of
its weights) and refuses to mix in latents of another.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from world_models import __version__
from world_models.atomic import atomic_write_json, clean_temp_files
from world_models.config import to_dict
from world_models.data import store
from world_models.errors import DataError

SERIES_MANIFEST = "series.json"


@dataclass(frozen=True)
class EncodeConfig:
    """Options of ``world-models encode``."""

    data_dir: Path = Path("data/carracing")
    """Dataset folder of episodes (ep_*.npz)."""
    vae: Path = Path("runs/vae/checkpoints/best")
    """ConvVAE checkpoint folder."""
    out_dir: Path = Path("data/carracing-series")
    """Series folder to write (re-running resumes it)."""
    batch_size: int = 4096
    """Frames per forward pass (several episodes are packed into one)."""
    device: str | None = None
    """cpu or cuda (None: CUDA when present)."""
    amp: bool | None = None
    """bf16 autocast for the encoder (None: on for CUDA); mu/logvar are stored as float16."""
    io_threads: int = 0
    """Threads reading and writing npz files (0: one per core, at least 2)."""
    skip_bad: bool = False
    """Skip unreadable episodes with a warning instead of stopping."""
    progress: bool = True
    """Show a progress bar (episodes, frames/s)."""


PRESETS = {
    "carracing": EncodeConfig(),
    "doom": EncodeConfig(
        data_dir=Path("data/doom"),
        vae=Path("runs/vae-doom/checkpoints/best"),
        out_dir=Path("data/doom-series"),
    ),
    "debug": EncodeConfig(
        data_dir=Path("data/debug"),
        vae=Path("runs/vae-debug/checkpoints/best"),
        out_dir=Path("data/debug-series"),
        batch_size=256,
    ),
}


def weights_digest(checkpoint: Path) -> str:
    """SHA-256 of a checkpoint's weights file: which VAE made a series folder."""
    h = hashlib.sha256()
    with open(Path(checkpoint) / "model.safetensors", "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_manifest(out: Path, manifest: dict) -> None:
    path = out / SERIES_MANIFEST
    if path.exists():
        import json

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


def _packs(
    episodes: Iterator[tuple[Path, dict | None]], batch: int
) -> Iterator[list[tuple[Path, dict]]]:
    """Group loaded episodes into packs of at least ``batch`` frames (one forward each)."""
    pack, frames = [], 0
    for path, arrays in episodes:
        if arrays is None:
            continue
        pack.append((path, arrays))
        frames += len(arrays["obs"])
        if frames >= batch:
            yield pack
            pack, frames = [], 0
    if pack:
        yield pack


@torch.no_grad()
def encode_frames(
    vae, obs: np.ndarray, device: torch.device, batch: int, amp: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 64, 64, 3) uint8 -> mu, logvar (N, Z) float16, in chunks of ``batch``."""
    mus, logvars = [], []
    src = torch.from_numpy(obs)
    if device.type == "cuda":
        src = src.pin_memory()
    for s in range(0, len(obs), batch):
        x = src[s : s + batch].to(device, non_blocking=True).permute(0, 3, 1, 2)  # (B, 3, 64, 64)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            mu, logvar = vae.encode(x)
        mus.append(mu.half())
        logvars.append(logvar.half())
    return torch.cat(mus).cpu().numpy(), torch.cat(logvars).cpu().numpy()


def encode(config: EncodeConfig) -> Path:
    """Encode every episode of ``config.data_dir`` not yet in ``config.out_dir``."""
    from tqdm.auto import tqdm

    from world_models.models.vae import ConvVAE
    from world_models.training.runs import pick_device

    device = pick_device(config.device)
    amp = device.type == "cuda" if config.amp is None else config.amp
    vae = ConvVAE.from_pretrained(config.vae, map_location=device).eval()
    vae.uint8_input = True
    vae.check_inputs = False  # uint8 frames are valid by construction
    if device.type == "cuda":
        vae.to(memory_format=torch.channels_last)
    episodes = store.list_episodes(config.data_dir)
    if not episodes:
        raise DataError(f"{config.data_dir}: no episode files (ep_*.npz)")
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean_temp_files(out)
    _check_manifest(
        out,
        {
            "vae": str(config.vae),
            "vae_sha256": weights_digest(config.vae),
            "latent_size": vae.latent_size,
            "data_dir": str(Path(config.data_dir).resolve()),
            "dtype": "float16",
            "library_version": __version__,
            "config": to_dict(config),
        },
    )
    todo = [p for p in episodes if not _is_done(out / p.name)]
    threads = config.io_threads or max(2, os.cpu_count() or 2)

    def load(path: Path) -> tuple[Path, dict | None]:
        try:
            arrays = store.load_npz(path, store.EPISODE_KEYS)
            store.validate_episode(arrays, path)
            return path, arrays
        except DataError as exc:
            if not config.skip_bad:
                raise
            import warnings

            warnings.warn(f"skipping {exc}", stacklevel=2)
            return path, None

    bar = tqdm(total=len(todo), unit="ep", disable=not config.progress, dynamic_ncols=True)
    frames_done = 0
    with ThreadPoolExecutor(threads) as pool:
        writes = []
        # map() keeps reads a few episodes ahead of the device, in order.
        for pack in _packs(pool.map(load, todo), config.batch_size):
            obs = np.concatenate([a["obs"] for _, a in pack])  # (N, 64, 64, 3)
            mu, logvar = encode_frames(vae, obs, device, config.batch_size, amp)
            start = 0
            for path, a in pack:
                t = len(a["obs"])
                series = {
                    "mu": mu[start : start + t],
                    "logvar": logvar[start : start + t],
                    **{k: a[k] for k in ("action", "reward", "terminated", "truncated")},
                }
                writes.append(pool.submit(store.save_npz, out / path.name, series, 1))
                start += t
            frames_done += len(obs)
            bar.update(len(pack))
            bar.set_postfix(frames=frames_done)
        for w in writes:
            w.result()
    bar.close()
    return out
