"""End-to-end VAE training throughput: on-disk episodes to optimizer steps, img/s.

Both contenders train the same ConvVAE from the same episode files, in this process:

* baseline, as the issue defines it: a per-item ``Dataset`` that opens an episode's npz and
  decodes one frame per item, converted to a float tensor; ``DataLoader`` with batch 32 and
  2 workers; eager fp32. Decoding dominates it, so a second, stronger baseline buffers all
  frames in RAM first (as ctallec's buffered loader does) and is otherwise the same.
* ours: :func:`world_models.training.vae.train_vae` over whole epochs (FrameSource uint8
  cache, autocast and channels_last where they pay, the trainer's own loop). Reported end
  to end: images / wall time over every epoch after the first (the first holds compilation
  and warm-up), each epoch's held-out pass, checkpoints, pictures and loss plot included;
  beside it the steady in-epoch rate from the run's metrics, and the whole call's time.

Data: on the CPU, 8 collected CarRacing episodes by default. On a GPU that is less than one
batch of 4096, so the default there is >= 100k synthetic frames (blocky random images
written as our npz episodes: the VAE's speed does not depend on what frames show, and they
decode faster than real ones, which favours the per-item baseline).

    python benchmarks/vae_throughput.py                        # CPU, CarRacing frames
    python benchmarks/vae_throughput.py --device cuda --batch 4096 --compile
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from world_models.data import store
from world_models.data.collect import CollectConfig, collect
from world_models.models.vae import ConvVAE
from world_models.training import vae as vae_training
from world_models.training.vae import TrainVAEConfig, train_vae

HOLDOUT = 0.1
# ctallec/world-models end to end on one H100 (world-models-facts.md): its npz loader, PIL
# transforms and smaller VAE.
PUBLISHED = "ctallec's PyTorch port on one H100: ~4.8k img/s at its defaults (batch 32, "
PUBLISHED += "2 workers), ~21.7k img/s at batch 256 with 8 workers (published, not run here)"


def synthetic(out: Path, frames: int, episode_len: int) -> Path:
    """At least ``frames`` frames as npz episodes of ``episode_len`` steps."""
    out.mkdir(parents=True)
    T = episode_len
    for i in range(-(-frames // T)):
        rng = np.random.default_rng(i)
        obs = rng.integers(0, 256, (T, 16, 16, 3), dtype=np.uint8).repeat(4, 1).repeat(4, 2)
        episode = store.Episode(
            obs=obs,  # (T, 64, 64, 3) uint8
            action=np.zeros((T, 3), np.float32),
            reward=np.zeros(T, np.float32),
            terminated=np.arange(T) == T - 1,
            truncated=np.zeros(T, bool),
        )
        store.write_episode(out / store.episode_name(i), episode)
    return out


class NaiveFrames(Dataset):
    """One frame per item, read from its episode's compressed npz on every access."""

    def __init__(self, files: list[Path]) -> None:
        self.index = [(f, t) for f in files for t in range(store.npz_header(f, "obs")[0][0])]

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
    vae.check_inputs = device.type != "cuda"  # its range check syncs every step on a GPU
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
    data_dir: Path, run_dir: Path, device: torch.device, epochs: int, batch: int, compile_: bool
) -> dict[str, float]:
    """Train ``epochs`` whole epochs; img/s end to end after epoch 1, steady, and the call."""
    marks: list[tuple[float, int]] = []  # (clock, images seen) once each epoch has ended
    real_end = vae_training._Trainer._end_of_epoch

    def timed_end(self, epoch_done: bool) -> None:  # held-out pass, checkpoints, pictures
        real_end(self, epoch_done)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        marks.append((time.perf_counter(), self.state.images_seen))

    per_epoch = sum(store.npz_header(f, "obs")[0][0] for f in _train_files(data_dir)) // batch
    cfg = TrainVAEConfig(
        data_dir=data_dir,
        run_dir=run_dir,
        batch_size=batch,
        epochs=epochs,
        log_every=max(per_epoch // 4, 1),
        device=str(device),
        compile=compile_,
        holdout_fraction=HOLDOUT,
        progress=False,
        tensorboard=False,
    )
    vae_training._Trainer._end_of_epoch = timed_end  # type: ignore[method-assign]
    try:
        t0 = time.perf_counter()
        train_vae(cfg)
        wall = time.perf_counter() - t0
    finally:
        vae_training._Trainer._end_of_epoch = real_end  # type: ignore[method-assign]
    rows = [json.loads(r) for r in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steady = [r["img_per_s"] for r in rows if "img_per_s" in r and r["epoch"] >= 1]
    (t1, n1), (t_end, n_end) = marks[0], marks[-1]
    return {
        "end_to_end": (n_end - n1) / (t_end - t1),
        "images": n_end - n1,
        "seconds": t_end - t1,
        "steady": float(np.median(steady)),
        "wall": wall,
        "per_epoch": per_epoch,
    }


def _train_files(data_dir: Path) -> list[Path]:
    return store.split_episodes(store.list_episodes(data_dir), "train", HOLDOUT)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--env", default="carracing", help="carracing (needs box2d) or fake")
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--episode-steps", type=int, default=250)
    p.add_argument("--data-dir", type=Path, default=None, help="reuse a collected dataset")
    p.add_argument(
        "--frames",
        type=int,
        default=None,
        help="synthetic frames instead of collecting (default 150,000 on a GPU, none on CPU)",
    )
    p.add_argument("--batch", type=int, default=None, help="our batch (default 64 CPU, 1024 GPU)")
    p.add_argument(
        "--steps", type=int, default=None, help="our steps at least, as whole epochs (>= 3)"
    )
    p.add_argument("--baseline-steps", type=int, default=None)
    p.add_argument("--compile", action="store_true")
    args = p.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    batch = args.batch or (1024 if gpu else 64)
    steps = args.steps or (400 if gpu else 60)
    base_steps = args.baseline_steps or (300 if gpu else 60)
    frames = args.frames if args.frames is not None else (150_000 if gpu else 0)
    with tempfile.TemporaryDirectory() as tmp:
        if args.data_dir:
            data_dir, source = args.data_dir, str(args.data_dir)
        elif frames:
            data_dir = synthetic(Path(tmp) / "data", frames, args.episode_steps)
            source = "synthetic"
        else:
            config = CollectConfig(
                out_dir=Path(tmp) / "data",
                env=args.env,
                episodes=args.episodes,
                max_steps=args.episode_steps,
                progress=False,
            )
            data_dir, source = collect(config), args.env
        files = _train_files(data_dir)
        n_frames = sum(store.npz_header(f, "obs")[0][0] for f in files)
        if n_frames < batch:
            raise SystemExit(f"{n_frames} training frames are fewer than one batch of {batch}")
        epochs = max(3, math.ceil(steps / (n_frames // batch)))
        name = torch.cuda.get_device_name() if gpu else f"CPU x{torch.get_num_threads()}"
        print(
            f"device: {name}; torch {torch.__version__}; {len(files)} episodes, "
            f"{n_frames:,} training frames ({source})"
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
        print(f"context:  {PUBLISHED}")
        r = ours(data_dir, Path(tmp) / "run", device, epochs, batch, args.compile)
        print(
            f"ours      (train_vae, batch {batch}{', compiled' if args.compile else ''}): "
            f"{r['end_to_end']:>10,.0f} img/s end to end over epochs 2-{epochs} of "
            f"{r['per_epoch']} steps ({r['images']:,} images in {r['seconds']:.1f} s, held-out "
            f"passes, checkpoints and pictures included)\n"
            f"          {r['steady']:,.0f} img/s steady within epochs; the whole call took "
            f"{r['wall']:.1f} s (start-up, cache build and any compilation included)"
        )
        print(
            f"ratio (end to end): {r['end_to_end'] / base:.2f}x the per-item baseline, "
            f"{r['end_to_end'] / buffered:.2f}x the buffered one"
        )


if __name__ == "__main__":
    main()
