"""``world-models demo``: the main job on a fresh machine, no arguments needed."""

from __future__ import annotations

import argparse

from world_models.core.config import add_config_args, config_from_args
from world_models.demo import PRESETS, DemoConfig

HELP = "collect CarRacing frames, train the VAE, write pictures (minutes on a CPU)"
DESCRIPTION = (
    "Collects a small CarRacing-v3 dataset, trains the ConvVAE (5 minutes on a CPU, or a "
    "few epochs on a GPU) and writes reconstructions, samples, a latent traversal and the "
    "loss curve. Re-running tops up the data and resumes training."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_args(parser, DemoConfig, PRESETS)


def run(args: argparse.Namespace) -> int:
    from world_models.demo import run_demo

    config = config_from_args(DemoConfig, args, PRESETS, default_preset="default")
    paths = run_demo(config)
    width = max(len(k) for k in paths) + 1
    print("outputs:")
    for name, path in paths.items():
        print(f"  {name + ':':<{width}} {path}")
    return 0
