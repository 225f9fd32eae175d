"""``world-models play``: play Doom TakeCover or CarRacing inside M's dream, or for real."""

from __future__ import annotations

import argparse

from world_models.core.config import add_config_args, config_from_args
from world_models.play.sessions import PlayConfig

HELP = "play inside M's dream (or the real game) with the arrow keys, in a window"
DESCRIPTION = (
    "A window in which you play Doom TakeCover (left / right / stay) or CarRacing (arrows: "
    "steer, gas, brake) inside M's dream, each dreamed z decoded by V (--in dream), or in "
    "the real game (--in real). The score and the step count are shown; R restarts, Esc "
    "quits. --agent lets C play instead. --record writes what the window showed; "
    "SDL_VIDEODRIVER=dummy runs it headless. Needs pygame: "
    'pip install "world_models[play]".'
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_args(parser, PlayConfig)
    parser.add_argument(
        "--in",
        dest="target",
        choices=("dream", "real"),
        default=None,
        help="same as --target: play inside M's dream or in the real game",
    )


def run(args: argparse.Namespace) -> int:
    from world_models.play.sessions import play

    print(play(config_from_args(PlayConfig, args)).summary())
    return 0
