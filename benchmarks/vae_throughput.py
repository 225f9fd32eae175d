"""End-to-end VAE training throughput: on-disk episodes to optimizer steps, img/s.

Both contenders train the same ConvVAE from the same episode files, in this process:

* baseline, as the issue defines it: a per-item ``Dataset`` that opens an episode's npz and
  decodes one frame per item, converted to a float tensor; ``DataLoader`` with batch 32 and
  2 workers; eager fp32. Decoding dominates it, so a second, stronger baseline buffers all
  frames in RAM first (as ctallec's buffered loader does) and is otherwise the same.
* ours: :func:`world_models.training.vae.train_vae` (FrameSource uint8 cache, autocast
  and channels_last where they pay, the trainer's own loop), its steady-state img/s read
  from the run's metrics, plus the wall time of the whole call (cache build included).

    python benchmarks/vae_throughput.py                        # CPU, CarRacing frames
    python benchmarks/vae_throughput.py --device cuda --batch 4096 --compile
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from world_models.data.collect import CollectConfig, collect
from world_models.data.store import list_episodes, split_episodes
from world_models.models.vae import ConvVAE
from world_models.training.vae import TrainVAEConfig, train_vae


class NaiveFrames(Dataset):
    """One frame per item, read from its episode's compressed npz on every access."""

    def __init__(self, files: list[Path]) -> None:
        self.index = []
        for f in files:
            with np.load(f) as z:
                n = z["obs"].shape[0]
            self.index += [(f, t) for t in range(n)]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> torch.Tensor:
        f, t = self.index[i]
        with np.load(f) as z:
            frame = z["obs"][t]  # (64, 64, 3) uint8; decompresses the episode's obs
        return torch.from_numpy(frame).permute(2, 0, 1).float().div(255)  # (3, 64, 64)


class BufferedFrames(Dataset):
    """ctallec's buffered variant: episodes loaded into RAM first, one frame per item."""

    def __init__(self, files: list[Path]) -> None:
        self.obs = np.concatenate([np.load(f)["obs"] for f in files])  # (N, 64, 64, 3)

    def __len__(self) -> int:
        return len(self.obs)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.obs[i]).permute(2, 0, 1).float().div(255)  # (3, 64, 64)


def baseline(dataset: Dataset, device: torch.device, steps: int, batch: int = 32) -> float:
    torch.manual_seed(0)
    vae = ConvVAE().to(device)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-4)
    loader = DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        num_workers=2,
        drop_last=True,
        persistent_workers=True,
    )
    seen, t0, done = 0, None, 0
    while done < steps + 3:
        for x in loader:
            x = x.to(device)
            total, _, _ = vae.compute_loss(x, *vae(x))
            opt.zero_grad()
            total.backward()
            opt.step()
            done += 1
            if done == 3:  # after warm-up (workers started, first batches)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            elif done > 3:
                seen += x.shape[0]
            if done >= steps + 3:
                break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - t0)


def ours(
    data_dir: Path, run_dir: Path, device: torch.device, steps: int, batch: int, compile_: bool
) -> tuple[float, float]:
    cfg = TrainVAEConfig(
        data_dir=data_dir,
        run_dir=run_dir,
        batch_size=batch,
        epochs=10_000,
        max_steps=steps,
        log_every=max(steps // 4, 1),
        device=str(device),
        compile=compile_,
        holdout_fraction=0.1,
        progress=False,
        tensorboard=False,
        checkpoint_every_s=1e9,
    )
    t0 = time.perf_counter()
    train_vae(cfg)
    wall = time.perf_counter() - t0
    rows = [json.loads(r) for r in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [r["img_per_s"] for r in rows if "img_per_s" in r]
    steady = rates[1:] or rates  # the first window holds the warm-up (and compilation)
    return float(np.median(steady)), wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--env", default="carracing", help="carracing (needs box2d) or fake")
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--episode-steps", type=int, default=250)
    p.add_argument("--data-dir", type=Path, default=None, help="reuse a collected dataset")
    p.add_argument("--batch", type=int, default=None, help="our batch (default 64 CPU, 1024 GPU)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default by device)")
    p.add_argument("--baseline-steps", type=int, default=None)
    p.add_argument("--compile", action="store_true")
    args = p.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    batch = args.batch or (1024 if gpu else 64)
    steps = args.steps or (400 if gpu else 60)
    base_steps = args.baseline_steps or (300 if gpu else 60)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or collect(
            CollectConfig(
                out_dir=Path(tmp) / "data",
                env=args.env,
                episodes=args.episodes,
                max_steps=args.episode_steps,
                progress=False,
            )
        )
        files = split_episodes(list_episodes(data_dir), "train", 0.1)
        n_frames = sum(np.load(f)["obs"].shape[0] for f in files)
        name = torch.cuda.get_device_name() if gpu else f"CPU x{torch.get_num_threads()}"
        print(
            f"device: {name}; torch {torch.__version__}; {len(files)} episodes, "
            f"{n_frames} training frames ({args.env})"
        )
        base = baseline(NaiveFrames(files), device, base_steps)
        print(
            f"baseline  (per-item npz Dataset, DataLoader 2 workers, batch 32, eager fp32): "
            f"{base:>10,.0f} img/s"
        )
        buffered = baseline(BufferedFrames(files), device, base_steps)
        print(
            f"baseline2 (the same with all frames buffered in RAM first):                  "
            f"{buffered:>10,.0f} img/s"
        )
        rate, wall = ours(data_dir, Path(tmp) / "run", device, steps, batch, args.compile)
        print(
            f"ours      (train_vae, batch {batch}{', compiled' if args.compile else ''}): "
            f"{rate:>10,.0f} img/s steady; whole call {wall:.1f} s for {steps} steps "
            f"({steps * batch / wall:,.0f} img/s incl. start-up)"
        )
        print(
            f"ratio: {rate / base:.2f}x the per-item baseline, {rate / buffered:.2f}x the "
            "buffered one"
        )


if __name__ == "__main__":
    main()
