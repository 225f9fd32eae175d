"""Encode throughput (frames/s): episodes on disk -> latent series on disk.

Ours is :func:`world_models.data.encode.encode` (threaded npz reads and writes, episodes
packed into large forward passes, bf16 and channels_last on CUDA). The baseline, in the
same run, does what a straightforward script does: for each episode, load it, encode it in
batches of 32 frames in fp32, save it.

    python benchmarks/encode_throughput.py                 # CPU, fake-env dataset
    python benchmarks/encode_throughput.py --device cuda --episodes 200 --episode-steps 1000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from world_models.data.collect import CollectConfig, collect
from world_models.data.encode import EncodeConfig, encode
from world_models.data.store import list_episodes
from world_models.models.vae import ConvVAE


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
    if device.type == "cuda":
        torch.cuda.synchronize()
    return frames / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--env", default="fake")
    p.add_argument("--episodes", type=int, default=16)
    p.add_argument("--episode-steps", type=int, default=250)
    p.add_argument("--data-dir", type=Path, default=None)
    args = p.parse_args()
    device = torch.device(args.device)
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
        n = sum(np.load(f)["obs"].shape[0] for f in list_episodes(data))
        name = (
            torch.cuda.get_device_name()
            if device.type == "cuda"
            else (f"CPU x{torch.get_num_threads()}")
        )
        print(f"device: {name}; {n} frames in {len(list_episodes(data))} episodes")
        base = baseline(data, tmp / "vae", tmp / "base", device)
        print(f"baseline (per episode, batch 32, fp32): {base:>10,.0f} frames/s")
        t0 = time.perf_counter()
        encode(
            EncodeConfig(
                data_dir=data,
                vae=tmp / "vae",
                out_dir=tmp / "ours",
                device=str(device),
                progress=False,
            )
        )
        ours = n / (time.perf_counter() - t0)
        print(f"ours     (world_models encode):         {ours:>10,.0f} frames/s")
        print(f"ratio: {ours / base:.2f}x the baseline")


if __name__ == "__main__":
    main()
