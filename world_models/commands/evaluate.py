"""``world-models evaluate``: score a controller over N real episodes."""

from __future__ import annotations

import argparse

from world_models.core.config import add_config_args, config_from_args
from world_models.evaluation.evaluate import PRESETS, EvaluateConfig

HELP = "score V+M+C (or a random policy) over N episodes, real or dreamed: mean +- std, GIFs"
DESCRIPTION = (
    "Play --trials episodes (default 100) in the real env with the controller, envs in "
    "worker processes and V, M, C batched in this process. Writes results.json (mean, std, "
    "every return), returns.csv, histogram.png and animations of the best and worst episode."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_args(parser, EvaluateConfig, PRESETS)
    parser.add_argument(
        "--in",
        dest="target",
        choices=("real", "dream"),
        default=None,
        help="same as --target: score in the real env or inside M's dream",
    )


def run(args: argparse.Namespace) -> int:
    from world_models.core.locking import check_output_dir
    from world_models.evaluation.evaluate import evaluate, summarize

    config = config_from_args(EvaluateConfig, args, PRESETS, default_preset="carracing")
    check_output_dir(config.out_dir, "output folder", create=False)  # before hours of play
    print(summarize(evaluate(config)))
    return 0
