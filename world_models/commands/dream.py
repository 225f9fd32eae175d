"""``world-models dream``: a real episode beside M's open-loop dream of it, as a video."""

from __future__ import annotations

import argparse

from world_models.config import add_config_args, config_from_args
from world_models.evaluation.open_loop import DreamVideoConfig

HELP = "roll M forward from a real frame and write the dream beside the real episode"
DESCRIPTION = (
    "From a real first frame, rolls the MDN-RNN forward under the recorded (or random) "
    "actions at a chosen temperature, decodes with the VAE, and writes a GIF or MP4 with the "
    "real episode on the left and the dream on the right. MP4 needs the video extra "
    '(pip install "world_models[video]"); bad settings fail before any model is loaded.'
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_args(parser, DreamVideoConfig)


def run(args: argparse.Namespace) -> int:
    from world_models.evaluation.open_loop import dream_video

    path = dream_video(config_from_args(DreamVideoConfig, args))
    print(f"video: {path}")
    return 0
