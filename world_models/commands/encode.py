"""``world-models encode``: a dataset's frames through V into cached latent series."""

from __future__ import annotations

import argparse

from world_models.core.config import add_config_args, config_from_args
from world_models.data.encode import PRESETS, EncodeConfig

HELP = "encode a dataset with a trained VAE into latent series for M; re-running resumes"
DESCRIPTION = (
    "Encodes every episode with the ConvVAE into mu and logvar (float16) per frame, kept with "
    "the actions, rewards and terminated/truncated flags, one file per episode. M trains on "
    "these without touching a frame again. Each file is written (atomically) as soon as its "
    "episode is encoded, so a crash or Ctrl-C loses only the episodes in flight and "
    "re-running resumes."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_args(parser, EncodeConfig, PRESETS)


def run(args: argparse.Namespace) -> int:
    from world_models.data.encode import encode

    config = config_from_args(EncodeConfig, args, PRESETS, default_preset="carracing")
    out = encode(config)
    print(f"series: {out}")
    return 0
