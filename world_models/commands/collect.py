"""``world-models collect``: random-policy rollouts into an episode store."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

HELP = "collect random-policy rollouts (CarRacing, Doom) into an episode store"
DESCRIPTION = (
    "Collect episodes with a random data policy into OUT_DIR (one .npz per episode plus "
    "manifest.json), in parallel worker processes. Episode i depends only on the seed and i; "
    "re-running the same command resumes or tops the dataset up to --episodes. Without "
    "--preset, the defaults are those of the preset named after --env (carracing, doom)."
)


def base_config(env: str | None, preset: str | None = None):
    """The config flags override: --preset's, else the one named after --env (its folder,
    its episode count, Doom's 2,100-step cap), else the defaults with folder data/ENV."""
    from world_models.data.collect import PRESETS, CollectConfig

    env = env or "carracing"
    if preset or env in PRESETS:
        return PRESETS[preset or env]
    return CollectConfig(env=env, out_dir=Path("data") / env)  # type: ignore[arg-type]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from world_models.core.config import add_config_args
    from world_models.data.collect import PRESETS, CollectConfig
    from world_models.envs.presets import ENV_PRESETS

    add_config_args(parser, CollectConfig, PRESETS)
    # add_config_args shows the dataclass's defaults; this command's depend on --env
    for action in parser._actions:
        if action.dest == "preset":
            action.help = "named set of defaults; flags below override it (default: --env's)"
            continue
        if action.dest == "env" or action.dest not in CollectConfig.__dataclass_fields__:
            continue
        by_value: dict[str, list[str]] = {}
        for env in ENV_PRESETS:
            by_value.setdefault(str(getattr(base_config(env), action.dest)), []).append(env)
        if len(by_value) > 1 and action.help:
            shown = "; ".join(f"{v} for {', '.join(envs)}" for v, envs in by_value.items())
            if action.dest == "out_dir":
                shown = "data/ENV"
            action.help = f"{action.help.rsplit(' (default:', 1)[0]} (default: {shown})"


def run(args: argparse.Namespace) -> int:
    from world_models.core.config import config_from_args
    from world_models.data.collect import CollectConfig, collect
    from world_models.data.store import dataset_info, format_info

    # config_from_args over a one-preset dict: flags override base_config's values
    given = argparse.Namespace(**{**vars(args), "preset": None})
    base = {"base": base_config(args.env, args.preset)}
    config = config_from_args(CollectConfig, given, base, default_preset="base")
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        out = collect(config)
    print(format_info(dataset_info(out, verify=False)))
    return 0


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)  # no Python source-line decoration
