"""Throughput of rollout collection and of the frame loader, each against its baseline.

1. Collection: steps/s of ``collect`` with 1 worker and with ``--workers`` (default: all
   cores) on the same episodes; scaling efficiency = speed-up / workers. Times include
   starting the worker processes, as a user's run would.
2. Loading: frames/s of ``FrameSource.batches`` (CPU; on CUDA, when present, both the
   GPU-resident set and the forced pinned-memory path) against two
   ``torch.utils.data`` baselines at batch 32 with 2 DataLoader workers:
   * naive: each item opens its episode's ``.npz`` and decodes ``obs`` to take one frame;
   * buffered (ctallec's port): episodes decoded into memory once, then per-item uint8
     tensors collated by the DataLoader (without ctallec's PIL transforms, which would
     only slow it further).

The dataset is made in a temp dir: ``--episodes`` episodes are collected (the collection
benchmark's output), then copied under new indices up to ``--loader-frames`` frames.

    python benchmarks/data_throughput.py                       # CarRacing-v3, defaults
    python benchmarks/data_throughput.py --env fake --episodes 16 --max-steps 300
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# No torch at module level: spawned collection workers re-import this script, and importing
# torch there would add seconds to each worker's start.
from world_models.data import store
from world_models.data.collect import CollectConfig, collect


def bench_collect(args, root: Path) -> tuple[float, float, int, Path]:
    rates, out = [], root
    cores = args.workers or len(os.sched_getaffinity(0))
    for run, workers in enumerate((1, cores)):
        out = root / f"collect-{run}-{workers}w"  # apart: with --workers 1, no top-up run
        cfg = CollectConfig(
            out_dir=out,
            env=args.env,
            episodes=args.episodes,
            max_steps=args.max_steps,
            workers=workers,
            progress=False,
            env_kwargs={"min_len": args.max_steps, "max_len": args.max_steps}
            if args.env == "fake"
            else {},
        )
        t0 = time.perf_counter()
        collect(cfg)
        dt = time.perf_counter() - t0
        steps = store.read_manifest(out)["frames"]
        rates.append(steps / dt)
        print(
            f"collect {args.env}: {workers} worker(s): {steps} steps in {dt:.2f} s = "
            f"{steps / dt:,.0f} steps/s",
            flush=True,
        )
    speedup = rates[1] / rates[0]
    print(f"collect scaling: x{speedup:.2f} with {cores} workers, efficiency {speedup / cores:.0%}")
    return rates[0], rates[1], cores, out


def make_loader_dataset(src: Path, dst: Path, frames: int) -> int:
    """Copy src's episodes under new indices until ``frames`` frames."""
    dst.mkdir(parents=True, exist_ok=True)
    eps = store.list_episodes(src)
    lengths = [store.npz_header(p, "obs")[0][0] for p in eps]
    total, i = 0, 0
    while total < frames:
        shutil.copyfile(eps[i % len(eps)], dst / store.episode_name(i))
        total += lengths[i % len(eps)]
        i += 1
    return total


class NaiveFrames:
    """One item = open the episode's npz, decode its obs, take one frame."""

    def __init__(self, folder: Path) -> None:
        self.items = []
        for p in store.list_episodes(folder):
            T = store.npz_header(p, "obs")[0][0]
            self.items += [(str(p), t) for t in range(T)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        import torch

        path, t = self.items[i]
        with np.load(path) as z:
            frame = z["obs"][t]  # decodes the whole (T, 64, 64, 3) member for one frame
        return torch.from_numpy(frame).permute(2, 0, 1)


class BufferedFrames:
    """ctallec-style: episodes decoded into memory once, per-item tensors."""

    def __init__(self, folder: Path) -> None:
        self.obs = [np.load(p)["obs"] for p in store.list_episodes(folder)]
        self.index = [(e, t) for e, o in enumerate(self.obs) for t in range(len(o))]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        import torch

        e, t = self.index[i]
        return torch.from_numpy(self.obs[e][t]).permute(2, 0, 1)


def rate(make_batches, seconds: float, cuda: bool = False) -> float:
    """frames/s over ``seconds`` (epochs repeat as needed), after one warm-up batch; on CUDA
    the clock stops once the GPU has finished the queued copies."""
    import torch

    it = iter(make_batches())
    next(it)
    if cuda:
        torch.cuda.synchronize()  # the warm-up's copies are not timed
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for b in it:
            n += b.shape[0]
            if time.perf_counter() - t0 > seconds:
                break
        it = iter(make_batches())
    if cuda:
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def bench_loader(args, folder: Path) -> None:
    import torch

    from world_models.data.sources import FrameSource

    t0 = time.perf_counter()
    src = FrameSource(folder, split="all")
    print(
        f"FrameSource: {src.num_frames} frames, cache built in "
        f"{time.perf_counter() - t0:.2f} s (first use only)"
    )
    lim = dict(seconds=args.seconds)
    results = {}
    for bs in (32, 256):
        results[f"FrameSource cpu b{bs}"] = rate(lambda bs=bs: src.batches(bs, seed=0), **lim)
    if torch.cuda.is_available():
        # resident: batches are index_selects in GPU memory; pinned: gathered on the host
        # and copied in (the path for sets that do not fit), frames/s into GPU memory
        for kind, resident in (("resident", True), ("pinned", False)):
            gpu = FrameSource(folder, split="all", device="cuda", resident=resident)
            for bs in (32, 1024):
                results[f"FrameSource cuda {kind} b{bs}"] = rate(
                    lambda bs=bs, gpu=gpu: gpu.batches(bs, seed=0), cuda=True, **lim
                )
            del gpu
    else:
        print("CUDA: not available, GPU loader not measured")
    for name, ds in (
        ("naive per-item npz", NaiveFrames(folder)),
        ("buffered per-item (ctallec)", BufferedFrames(folder)),
    ):
        dl = torch.utils.data.DataLoader(
            ds, batch_size=32, shuffle=True, num_workers=2, persistent_workers=True
        )
        results[f"{name} b32 w2"] = rate(lambda dl=dl: dl, **lim)
    width = max(map(len, results))
    base = results["naive per-item npz b32 w2"]
    buf = results["buffered per-item (ctallec) b32 w2"]
    for name, r in results.items():
        print(
            f"{name:<{width}}  {r:>12,.0f} frames/s   x{r / base:8.1f} naive   "
            f"x{r / buf:6.1f} buffered"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="carracing", choices=["carracing", "fake", "doom"])
    p.add_argument("--episodes", type=int, default=8, help="episodes collected (per run)")
    p.add_argument("--max-steps", type=int, default=250, help="steps per episode")
    p.add_argument("--workers", type=int, default=0, help="parallel run's workers (0: cores)")
    frames = "frames in the loader dataset (and most frames timed per loader)"
    p.add_argument("--loader-frames", type=int, default=40_000, help=frames)
    p.add_argument("--seconds", type=float, default=10.0, help="seconds timed per loader")
    args = p.parse_args(argv)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}, load average {load}")
    with tempfile.TemporaryDirectory(prefix="wm-bench-") as tmp:
        root = Path(tmp)
        if args.env == "doom":
            os.chdir(root)  # VizDoom writes files into the cwd
        _, _, _, out = bench_collect(args, root)
        total = make_loader_dataset(out, root / "loader", args.loader_frames)
        print(f"loader dataset: {total} frames copied from {args.env} episodes")
        bench_loader(args, root / "loader")
    return 0


if __name__ == "__main__":
    sys.exit(main())
