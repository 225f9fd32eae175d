"""``world-models dream``: a real episode beside M's open-loop dream of it, as a video."""

from __future__ import annotations

import argparse
from pathlib import Path

from world_models.core.config import add_config_args, config_from_args
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
    from world_models.core.errors import ConfigError
    from world_models.core.locking import check_output_dir
    from world_models.evaluation.open_loop import dream_video

    config = config_from_args(DreamVideoConfig, args)
    if Path(config.out).is_dir():
        raise ConfigError(f"--out {config.out}: is a folder; name the video file to write")
    check_output_dir(Path(config.out).parent, "folder of --out", create=False)
    path = dream_video(config)
    print(f"video: {path}")
    return 0
