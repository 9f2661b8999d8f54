"""An HTML report of a scoring run, from existing files: a summary, one card per image
(thumbnail, verdict, each model's LLR on one scale, attribution, error, evidence maps), sorting,
filters and search; with a labelled list, AUC / accuracy per generator, ROC curves and LLR
histograms. Viewed offline: nothing is fetched from the network.

    clipdet report --scores results.csv [--in_csv list.csv] [--maps maps/] --out report.html
"""

import sys

from clipdet.cli.options import (
    fatal,
    make_parser,
    run_standalone,
    setup_logging,
    shown_command,
)
from clipdet.constants import default_weights_dir


def add_parser(subparsers=None):
    p = make_parser(subparsers, "report", __doc__, "HTML report of a run (= report.py)", run)
    p.add_argument("--scores", "-s", required=True, help="scores file (.csv/.parquet/.jsonl)")
    p.add_argument(
        "--in_csv",
        "-i",
        default=None,
        help="the list that was scored: image paths relative to it, and labels (typ) for the "
        "per-generator metrics; without it, file names are read relative to this folder",
    )
    p.add_argument("--maps", default=None, metavar="DIR", help="the scoring run's --maps folder")
    p.add_argument(
        "--frames", default=None, metavar="FILE",
        help="the scoring run's --frames_out file: each video's frame scores over time",
    )  # fmt: skip
    p.add_argument("--out", "-o", default="report.html", help="the HTML file to write")
    p.add_argument("--threshold", type=float, default=0.0, help="verdict threshold")
    p.add_argument(
        "--weights_dir", "-w", default=default_weights_dir(),
        help="where your own models' cards are (<name>/card.md); shipped models' cards are "
        "always linked",
    )  # fmt: skip
    p.add_argument(
        "--calibration", default=None, metavar="FILE",
        help="a `clipdet calibrate` file: synthetic / real / inconclusive verdicts at its "
        "false-positive rate, stated in the header (replaces --threshold)",
    )  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    """``python report.py ...``: the same as ``clipdet report ...``."""
    return run_standalone(add_parser, argv)


def run(args) -> int:
    setup_logging(quiet=True)
    from clipdet import storage
    from clipdet.constants import ERROR_COLUMN, FILENAME_COLUMN
    from clipdet.evaluation.html_report import ReportInputs, write_report
    from clipdet.files import read_list, read_table

    try:
        table = read_table(args.scores, [FILENAME_COLUMN, ERROR_COLUMN])
        if FILENAME_COLUMN not in table.columns:
            raise ValueError(f"{args.scores} has no {FILENAME_COLUMN!r} column")
        labels, root = None, "."
        if args.in_csv:
            labels, _ = read_list(args.in_csv)
            root = storage.parent(args.in_csv)
        paths = [storage.join(root, str(name)) for name in table[FILENAME_COLUMN]]
        calibration = None
        if args.calibration:
            from clipdet.evaluation.calibration import Calibration

            calibration = Calibration.load(args.calibration)
            calibration.check_columns(table)
        inputs = ReportInputs(
            table,
            paths,
            labels,
            args.maps,
            args.threshold,
            command=shown_command(args, args.argv),
            calibration=calibration,
            frames=read_table(args.frames, [FILENAME_COLUMN]) if args.frames else None,
            weights_dir=args.weights_dir,
        )
        out = write_report(inputs, args.out)
    except (OSError, ValueError) as e:
        return fatal(e)
    print(f"report of {len(table)} images -> {out}", file=sys.stderr)
    return 0
