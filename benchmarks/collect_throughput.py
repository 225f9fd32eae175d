"""Doom collection speed: today's settings against the earlier ones, in one run.

* ``before``: VizDoom's own 320x240 screen without damage flashes, episodes deflated at
  level 6 (the settings of 2026-12-03's issue: ~1,560 frames/s on 2 workers);
* ``now``: the preset's 160x120 screen with flashes (the same 64x64 frames after the
  resize, but half the render and resize work) and level 1.

Both run the current code (batched torch resize; ISA-L deflate at levels 1-3, where ``isal`` is
installed), so the ratio is the settings' alone. To compare code, run this script in two
checkouts one after the other (docs/results-doom.md, session 7, quotes such figures).

Both run ``world_models.data.collect.collect`` with the same seeds, workers and episode
count, alternating ``--rounds`` times so a drifting machine load hits both alike; frames/s
counts start-up as a user's run would.

    python benchmarks/collect_throughput.py --episodes 60 --workers 2 --rounds 2
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from world_models.core.config import override
from world_models.data import store
from world_models.data.collect import collect
from world_models.data.configs import COLLECT_PRESETS

BEFORE = {"screen_resolution": "RES_320X240", "render_screen_flashes": False}


def run(out: Path, episodes: int, workers: int, before: bool) -> float:
    config = override(
        COLLECT_PRESETS["doom"],
        out_dir=out,
        episodes=episodes,
        workers=workers,
        seed=123,
        progress=False,
        compress_level=6 if before else 1,
        env_kwargs=BEFORE if before else {},
    )
    t0 = time.perf_counter()
    collect(config)
    secs = time.perf_counter() - t0
    frames = sum(store.check_episode(f) for f in store.list_episodes(out))
    shutil.rmtree(out)
    return frames / secs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=60)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()
    speeds: dict[str, list[float]] = {"before": [], "now": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            for name in ("before", "now"):
                fps = run(Path(tmp) / f"{name}{r}", a.episodes, a.workers, name == "before")
                speeds[name].append(fps)
                print(f"round {r + 1} {name:>6}: {fps:8.0f} frames/s")
    b, n = statistics.median(speeds["before"]), statistics.median(speeds["now"])
    print(f"median: before {b:.0f} frames/s, now {n:.0f} frames/s, ratio {n / b:.2f}x")


if __name__ == "__main__":
    main()
