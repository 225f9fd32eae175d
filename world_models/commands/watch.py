"""``world-models watch``: C plays; beside it, V's reconstruction and M's next frame."""

from __future__ import annotations

import argparse

from world_models.core.config import add_config_args, config_from_args
from world_models.play.sessions import WatchConfig

HELP = "watch C play, beside V's reconstruction and M's prediction of the next frame"
DESCRIPTION = (
    "C plays the real game; side by side: the real frame, V's reconstruction of it and M's "
    "prediction of the next frame (its mixture's mean decoded by V, or a sample at --tau). "
    "--in dream: C plays inside M's dream, beside M's prediction. Live in a window (needs "
    'pygame: pip install "world_models[play]"; R restarts, Esc quits), or headless into a '
    "video with --out FILE.gif|mp4."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_args(parser, WatchConfig)
    parser.add_argument(
        "--in",
        dest="target",
        choices=("dream", "real"),
        default=None,
        help="same as --target: C plays in the real game or inside M's dream",
    )


def run(args: argparse.Namespace) -> int:
    from world_models.play.sessions import watch

    print(watch(config_from_args(WatchConfig, args)).summary())
    return 0
