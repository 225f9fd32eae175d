"""``world-models fidelity``: is this V + M worth evolving in? Fixed policies, dream vs game."""

from __future__ import annotations

import argparse

from world_models.core.config import add_config_args, config_from_args
from world_models.evaluation.fidelity import FidelityConfig

HELP = "score fixed policies in M's dream and in the real game, side by side, with a verdict"
DESCRIPTION = (
    "Before any CMA-ES: the random data policy, always-stay, always-left, always-right (and "
    "--controller-path if given) scored in the dream and in the real game: episode length and "
    "deaths per step side by side, whether the dream responds to the action (the same starts "
    "and noise under different actions), a verdict line, and strip.png (real frames, V's "
    "reconstructions, M's open-loop dream)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_args(parser, FidelityConfig, {})


def run(args: argparse.Namespace) -> int:
    from world_models.evaluation.fidelity import fidelity

    fidelity(config_from_args(FidelityConfig, args, {}))
    return 0
