"""``world-models <command>``: a thin shell over the library.

Each command lives in ``world_models/commands/<name>.py`` and provides ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``; the module imports heavy things inside
``run`` so ``--help`` stays fast. Errors a user can cause (:class:`WorldModelsError`) print
one line and exit 2; anything else prints one line too, with the traceback behind
``WM_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from world_models import __version__
from world_models.core.errors import WorldModelsError

# name -> module; the order is the pipeline's, and is the order of ``--help``.
COMMANDS: dict[str, str] = {
    "demo": "world_models.commands.demo",
    "validate": "world_models.commands.validate",
    "collect": "world_models.commands.collect",
    "data": "world_models.commands.data",
    "train-vae": "world_models.commands.train_vae",
    "encode": "world_models.commands.encode",
    "train-mdrnn": "world_models.commands.train_mdrnn",
    "dream": "world_models.commands.dream",
    "train-controller": "world_models.commands.train_controller",
    "evaluate": "world_models.commands.evaluate",
    "fidelity": "world_models.commands.fidelity",
    "reproduce": "world_models.commands.reproduce",
    "play": "world_models.commands.play",
    "watch": "world_models.commands.watch",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="world-models",
        description="World Models in PyTorch: collect, train V, encode, train M, evolve C.",
    )
    parser.add_argument("--version", action="version", version=f"world_models {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.ArgumentDefaultsHelpFormatter
            if getattr(module, "SHOW_DEFAULTS", False)
            else argparse.HelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except WorldModelsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: re-run the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place that turns bugs into one line
        if os.environ.get("WM_DEBUG"):
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(
            f"error: {type(exc).__name__}: {msg} (WM_DEBUG=1 shows the traceback)", file=sys.stderr
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
