"""``world-models reproduce <game>``: the whole pipeline with the original's settings."""

from __future__ import annotations

import argparse

from world_models.core.config import add_config_args, config_from_args
from world_models.recipes import ReproduceConfig

HELP = "run the whole pipeline (collect, V, encode, M, C in the dream, evaluate) for a game"
DESCRIPTION = (
    "doom: the paper's DoomTakeCover experiment, C evolved only inside M's dream and scored "
    "in the real game; debug: the same on the tiny fake env. --scale shrinks the amounts "
    "(episodes, generations, evaluation rollouts) but not the models. Every stage resumes, "
    "so re-running the same command continues."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("game", choices=("doom", "debug"), help="which recipe")
    add_config_args(parser, ReproduceConfig)


def run(args: argparse.Namespace) -> int:
    from world_models.recipes import reproduce

    reproduce(config_from_args(ReproduceConfig, args))
    return 0
