"""``world-models validate``: check the ConvVAE against the seed's specification."""

from __future__ import annotations

import argparse

HELP = "check the ConvVAE's architecture, signatures and docs against the spec"
DESCRIPTION = (
    "Checks the ConvVAE (a fresh one, or a saved checkpoint) against the seed's layer table, "
    "method signatures and documentation. Prints each check and 'N/N checks passed'; "
    "exits 1 if any fails."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        default=None,
        metavar="DIR",
        help="validate the ConvVAE saved in this checkpoint folder instead of a fresh one",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only failures")


def run(args: argparse.Namespace) -> int:
    from world_models.models.vae import ConvVAE
    from world_models.validate import run_checks

    vae = ConvVAE.from_pretrained(args.checkpoint) if args.checkpoint else None
    results = run_checks(vae)
    group = None
    for r in results:
        if args.quiet and r.passed:
            continue
        if r.group != group:
            group = r.group
            print(f"[{group}]")
        mark = "PASS" if r.passed else "FAIL"
        print(f"  {mark}  {r.name}" + ("" if r.passed else f": {r.error}"))
    passed = sum(r.passed for r in results)
    print(f"{passed}/{len(results)} checks passed")
    return 0 if passed == len(results) else 1
