"""Encode throughput (frames/s): episodes on disk -> latent series on disk.

Three figures from one run, on one dataset:

(a) the encoder alone: :meth:`world_models.models.vae.ConvVAE.encode_frames` on a batch of frames
    already on the device (bf16 conv trunk and channels_last on CUDA, as ``encode`` runs it),
    the ceiling for (b);
(b) ours, end to end: :func:`world_models.data.encode.encode` (threaded npz reads and writes,
    fixed-size chunks double-buffered through pinned memory), timed from the first episode
    read to the last series file written, so VAE loading, hashing and start-up are excluded
    (the whole call is printed too, after a warm-up call on a 2-episode copy);
(c) the baseline a straightforward script is: for each episode, load it, encode it in
    batches of 32 frames in fp32, save it.

    python benchmarks/encode_throughput.py                 # CPU, fake-env dataset
    python benchmarks/encode_throughput.py --device cuda --episodes 200 --episode-steps 1000

The dataset was just written, so every reader finds it in the page cache.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from world_models.data import store
from world_models.data.collect import CollectConfig, collect
from world_models.data.encode import EncodeConfig, encode
from world_models.data.store import list_episodes
from world_models.models.vae import ConvVAE

FRAME_BYTES = 64 * 64 * 3


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def baseline(data_dir: Path, vae_dir: Path, out: Path, device: torch.device) -> float:
    vae = ConvVAE.from_pretrained(vae_dir, map_location=device).eval()
    out.mkdir(parents=True, exist_ok=True)
    frames = 0
    t0 = time.perf_counter()
    for path in list_episodes(data_dir):
        ep = np.load(path)
        obs = torch.from_numpy(ep["obs"]).permute(0, 3, 1, 2).float().div(255)
        mus, logvars = [], []
        for s in range(0, len(obs), 32):
            mu, logvar = vae.encode(obs[s : s + 32].to(device))
            mus.append(mu.cpu())
            logvars.append(logvar.cpu())
        np.savez_compressed(
            out / path.name,
            mu=torch.cat(mus).half().numpy(),
            logvar=torch.cat(logvars).half().numpy(),
            action=ep["action"],
        )
        frames += len(obs)
    sync(device)
    return frames / (time.perf_counter() - t0)


@torch.no_grad()
def encoder_alone(
    vae_dir: Path, data_dir: Path, batch: int, device: torch.device, seconds: float = 3.0
) -> float:
    """Frames/s of the forward pass alone, on ``batch`` frames already on the device."""
    vae = ConvVAE.from_pretrained(vae_dir, map_location=device).eval()
    vae.uint8_input, vae.check_inputs = True, False  # as encode() sets them
    if device.type == "cuda":
        vae.to(memory_format=torch.channels_last)
    obs = np.concatenate([np.load(p)["obs"] for p in list_episodes(data_dir)[:8]])
    obs = np.resize(obs, (batch, *obs.shape[1:]))  # (batch, 64, 64, 3): repeated as needed
    x = torch.from_numpy(obs).to(device)  # (B, 64, 64, 3) uint8
    amp = device.type == "cuda"  # encode()'s default
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        vae.encode_frames(x, amp)  # warm-up: cudnn picks its algorithm here
        sync(device)
        n, t0 = 0, time.perf_counter()
        while n < 3 * batch or time.perf_counter() - t0 < seconds:
            vae.encode_frames(x, amp)
            n += batch
            sync(device)
        return n / (time.perf_counter() - t0)
    finally:
        torch.backends.cudnn.benchmark = benchmark


@contextlib.contextmanager
def read_to_write_span() -> Iterator[list[float]]:
    """Wrap the store functions encode() calls to time its first read to its last write."""
    load, save, span = store.load_npz, store.save_npz, [float("inf"), 0.0]

    def timed_load(*args, **kwargs):
        span[0] = min(span[0], time.perf_counter())
        return load(*args, **kwargs)

    def timed_save(*args, **kwargs):
        save(*args, **kwargs)
        span[1] = max(span[1], time.perf_counter())  # a float store: atomic under the GIL

    store.load_npz, store.save_npz = timed_load, timed_save
    try:
        yield span
    finally:
        store.load_npz, store.save_npz = load, save


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--env", default="fake")
    p.add_argument("--episodes", type=int, default=16)
    p.add_argument("--episode-steps", type=int, default=250)
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--batch-size", type=int, default=0, help="0: encode()'s default")
    p.add_argument("--io-threads", type=int, default=0, help="0: encode()'s default")
    args = p.parse_args()
    device = torch.device(args.device)
    args.batch_size = args.batch_size or (4096 if device.type == "cuda" else 128)  # encode's
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = args.data_dir or collect(
            CollectConfig(
                out_dir=tmp / "data",
                env=args.env,
                episodes=args.episodes,
                max_steps=args.episode_steps,
                progress=False,
            )
        )
        ConvVAE().save_pretrained(tmp / "vae")
        episodes = list_episodes(data)
        n = sum(store.npz_header(f, "obs")[0][0] for f in episodes)
        name = (
            torch.cuda.get_device_name()
            if device.type == "cuda"
            else (f"CPU x{torch.get_num_threads()}")
        )
        print(
            f"device: {name}; {n:,} frames in {len(episodes)} episodes; "
            f"batch {args.batch_size}, io_threads {args.io_threads or 'default'}"
        )

        alone = encoder_alone(tmp / "vae", data, args.batch_size, device)
        print(f"(a) encoder alone, frames on the device:    {alone:>10,.0f} frames/s")

        def ours(data_dir: Path, out: str) -> None:
            encode(
                EncodeConfig(
                    data_dir=data_dir,
                    vae=tmp / "vae",
                    out_dir=tmp / out,
                    batch_size=args.batch_size,
                    device=str(device),
                    io_threads=args.io_threads,
                    progress=False,
                )
            )

        # Warm-up on a 2-episode copy: CUDA context, cudnn tuning of the chunk shape.
        (tmp / "warm").mkdir()
        for f in episodes[:2]:
            (tmp / "warm" / f.name).symlink_to(f.resolve())
        ours(tmp / "warm", "ours-warm")
        t0 = time.perf_counter()
        with read_to_write_span() as span:
            ours(data, "ours")
        whole = n / (time.perf_counter() - t0)
        e2e = n / (span[1] - span[0])
        print(
            f"(b) ours, first read to last write:         {e2e:>10,.0f} frames/s "
            f"({e2e * FRAME_BYTES / 1e9:.2f} GB/s of frames); whole call {whole:,.0f} frames/s"
        )

        base = baseline(data, tmp / "vae", tmp / "base", device)
        print(f"(c) baseline (per episode, batch 32, fp32): {base:>10,.0f} frames/s")
        print(f"ours / baseline: {e2e / base:.2f}x; ours / encoder alone: {e2e / alone:.0%}")


if __name__ == "__main__":
    main()
