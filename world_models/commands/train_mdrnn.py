"""``world-models train-mdrnn``: train M (the MDN-RNN) on cached latent series."""

from __future__ import annotations

import argparse
import sys
import warnings

HELP = "train the MDN-RNN (M) on encoded latent series; re-run to resume"
DESCRIPTION = (
    "Trains the MDN-RNN with teacher forcing on windows of the per-episode latent series in "
    "--series-dir (z re-sampled from mu, logvar every batch), keeping held-out NLL, "
    "checkpoints (last, best), metrics.csv and TensorBoard events in --run-dir. Re-running "
    "the same command with the same --run-dir resumes; raise --epochs to train longer."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from world_models.core.config import add_config_args
    from world_models.training.mdrnn import TRAIN_MDNRNN_PRESETS, TrainMDNRNNConfig

    add_config_args(parser, TrainMDNRNNConfig, TRAIN_MDNRNN_PRESETS)


def run(args: argparse.Namespace) -> int:
    from world_models.core.config import config_from_args
    from world_models.training.mdrnn import TRAIN_MDNRNN_PRESETS, TrainMDNRNNConfig, train_mdrnn

    config = config_from_args(TrainMDNRNNConfig, args, TRAIN_MDNRNN_PRESETS, "carracing")
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        run_dir = train_mdrnn(config)
    print(f"done: {run_dir} (best weights in {run_dir / 'checkpoints' / 'best'})")
    return 0


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)  # no Python source-line decoration
