"""``world-models train-controller``: evolve C with CMA-ES in the dream or the real env."""

from __future__ import annotations

import argparse

from world_models.core.config import add_config_args, config_from_args
from world_models.training.controller import PRESETS, TrainControllerConfig

HELP = "evolve the controller (C) with CMA-ES, in M's dream or the real env; re-running resumes"
DESCRIPTION = (
    "Evolve the linear controller with CMA-ES (pycma): popsize 64 x 16 rollouts per "
    "generation, the mean scored every 25 generations. --in dream scores all rollouts of a "
    "generation as one batch of dreams (needs M and a series or dataset folder for the "
    "initial states); --in real plays the env in worker processes with V, M and C batched "
    "here. Writes a run folder (checkpoints/best, last, best_candidate, cma_state.npz, "
    "metrics.csv); re-running the same command resumes it."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_args(parser, TrainControllerConfig, PRESETS)
    parser.add_argument(
        "--in",
        dest="target",
        choices=("dream", "real"),
        default=None,
        help="same as --target: where candidates are scored",
    )


def run(args: argparse.Namespace) -> int:
    from world_models.training.controller import summarize, train_controller

    config = config_from_args(TrainControllerConfig, args, PRESETS, default_preset="doom")
    print(summarize(train_controller(config)))
    return 0
