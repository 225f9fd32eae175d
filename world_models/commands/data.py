"""``world-models data info|import``: inspect, verify and import episode stores."""

from __future__ import annotations

import argparse
import sys
import warnings

HELP = "inspect and verify an episode store (info), or import public rollouts (import)"
DESCRIPTION = (
    "info DIR: episodes, frames, size on disk and return statistics; decodes and checks "
    "every file and names the bad ones (exit 1 if any). import SRC DIR: convert .npz "
    "rollouts of hardmaru's code (obs/action[/reward/done]) or ctallec's port "
    "(observations/actions/rewards/terminals; 64x64 or raw 96x96 frames) into a store; "
    "each episode's source is recorded in DIR/imports.jsonl, so re-running imports only "
    "new sources, under new names."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="<info|import>", required=True)
    info = sub.add_parser("info", help="summarise and verify an episode store")
    info.add_argument("data_dir", metavar="DIR", help="folder of ep_*.npz files")
    info.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="check only the file headers: fast, no return statistics, no CRC check",
    )
    imp = sub.add_parser("import", help="import rollouts of hardmaru's or ctallec's code")
    imp.add_argument("src", metavar="SRC", help="an .npz file or a folder searched recursively")
    imp.add_argument("data_dir", metavar="DIR", help="episode store to write")
    imp.add_argument(
        "--env",
        default="carracing",
        choices=["carracing", "doom"],
        help="preset whose crop and resize apply to frames not already 64x64 "
        "(default: %(default)s)",
    )
    imp.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip source files that cannot be read or converted, with a warning, "
        "instead of failing",
    )


def run(args: argparse.Namespace) -> int:
    from world_models.data.store import dataset_info, format_info

    if args.data_command == "info":
        info = dataset_info(args.data_dir, verify=args.verify)
        print(format_info(info))
        return 1 if info.bad else 0
    from world_models.data.importers import import_rollouts

    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        report = import_rollouts(args.src, args.data_dir, env=args.env, skip_bad=args.skip_bad)
    print(
        f"imported {report.imported}, kept {report.skipped_existing} already there, "
        f"skipped {report.bad} bad"
        + (f"; missing keys filled in: {', '.join(report.missing)}" if report.missing else "")
        + (
            f"; {report.sources_gone} episode(s) kept whose source is gone"
            if report.sources_gone
            else ""
        )
    )
    print(format_info(dataset_info(args.data_dir, verify=False)))
    return 0


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)  # no Python source-line decoration
