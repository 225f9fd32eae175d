"""``world-models train-vae``: train (or resume) the ConvVAE on a collected dataset."""

from __future__ import annotations

import argparse

from world_models.core.config import add_config_args, config_from_args
from world_models.training.vae import PRESETS, TrainVAEConfig

HELP = "train the ConvVAE (V) on a dataset; re-running resumes"
DESCRIPTION = (
    "Train the ConvVAE on frames collected by `world-models collect`. Writes a run folder "
    "(checkpoints/last and best, metrics.csv, pictures, loss curve); re-running the same "
    "command resumes it. Several GPUs: torchrun --nproc_per_node N -m world_models.cli "
    "train-vae ... (same flags)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_args(parser, TrainVAEConfig, PRESETS)


def run(args: argparse.Namespace) -> int:
    from world_models.training.vae import summarize, train_vae

    config = config_from_args(TrainVAEConfig, args, PRESETS, default_preset="carracing")
    run_dir = train_vae(config)
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        print(summarize(run_dir))
    return 0
