"""``world-models collect``: random-policy rollouts into an episode store."""

from __future__ import annotations

import argparse
import sys
import warnings

HELP = "collect random-policy rollouts (CarRacing, Doom) into an episode store"
DESCRIPTION = (
    "Collect episodes with a random data policy into OUT_DIR (one .npz per episode plus "
    "manifest.json), in parallel worker processes. Episode i depends only on seed + i; "
    "re-running the same command resumes or tops the dataset up to --episodes."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from world_models.config import add_config_args
    from world_models.data.collect import PRESETS, CollectConfig

    add_config_args(parser, CollectConfig, PRESETS)


def run(args: argparse.Namespace) -> int:
    from world_models.config import config_from_args
    from world_models.data.collect import PRESETS, CollectConfig, collect
    from world_models.data.store import dataset_info, format_info

    config = config_from_args(CollectConfig, args, PRESETS, default_preset="carracing")
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        out = collect(config)
    print(format_info(dataset_info(out, verify=False)))
    return 0


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)  # no Python source-line decoration
