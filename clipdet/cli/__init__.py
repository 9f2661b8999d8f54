"""The `clipdet` command: one subcommand per front door, each the same as its script.

    clipdet score     = main.py             clipdet launder   = launder.py
    clipdet metrics   = compute_metrics.py  clipdet split     = split.py
    clipdet train     = train.py            clipdet download  = data/download.py
    clipdet report    = report.py           clipdet reproduce = reproduce.py
    clipdet models    the known detectors and backbones, and their download state
    clipdet sweep     linear probes on several backbones and layers, compared
    clipdet calibrate thresholds set on your own real photos at a false-positive rate
    clipdet decide    calibrated verdicts for a scores file (clipdet's or another tool's)

Each subcommand module has ``add_parser(subparsers=None)`` (a sub-parser, or the standalone
parser of its script) and ``run(args) -> int``; nothing heavy is imported before the arguments
are read, so ``--help`` answers at once.
"""

import argparse
import sys

from clipdet import __version__
from clipdet.cli import (
    calibrate,
    decide,
    download,
    launder,
    metrics,
    models,
    report,
    reproduce,
    score,
    split,
    sweep,
    train,
)

COMMANDS = (
    score, metrics, train, sweep, calibrate, decide, report, launder, split, download,
    reproduce, models,
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipdet",
        description="Batch detection of AI-generated images (LLR > 0 means synthetic).",
        epilog="`clipdet COMMAND --help` for a command's flags; docs/ for the details.",
    )
    parser.add_argument("--version", action="version", version=f"clipdet {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv[argv.index(args.command) + 1 :]
    return args.func(args)
