"""Calibrated verdicts for a scores file, without scoring again: clipdet's own scores or
another tool's (its columns calibrated as external detectors with `clipdet calibrate --scores`).

    clipdet decide --scores scores.csv --calibration calibration.yaml -o verdicts.csv
    clipdet decide --scores other_tool.parquet --calibration theirs.yaml -o verdicts.jsonl
    clipdet decide -s scores.csv -c calibration.yaml --group group -o v.csv --groups_out g.csv

The output (CSV, Parquet or JSON lines, by its extension) is the scores file with `verdict`,
`verdict_reason` and, with several detectors, each one's own `verdict_<model>`, as `clipdet
score --calibration` writes them; the image rules apply where the file has the columns they
read (width, height, jpeg_quality, calibration_distance). --group names the scores' column of
copies of one picture (`group` as `clipdet score --group` writes it, or another), and
--groups_out writes one row per group, its copies' evidence added up (docs/thresholds.md).
"""

import sys

from clipdet.cli.options import add_quiet, fatal, make_parser, setup_logging


def add_parser(subparsers=None):
    p = make_parser(subparsers, "decide", __doc__, "calibrated verdicts for a scores file", run)
    p.add_argument("--scores", "-s", required=True, help="a scores file (CSV, Parquet, JSONL)")
    p.add_argument("--calibration", "-c", required=True, help="a `clipdet calibrate` file")
    p.add_argument("--out", "-o", required=True, help="the output file (format by extension)")
    p.add_argument(
        "--fpr", type=float, default=None,
        help="which calibrated false-positive rate decides (default: the first)",
    )  # fmt: skip
    p.add_argument("--group", default=None, metavar="COLUMN",
                   help="the column of the scores holding each row's group of copies")  # fmt: skip
    p.add_argument(
        "--groups_out", default=None, metavar="FILE",
        help="with --group: one row per group, its copies' evidence added up",
    )  # fmt: skip
    add_quiet(p)
    return p


def run(args) -> int:
    setup_logging(args.quiet)
    from clipdet.constants import FILENAME_COLUMN
    from clipdet.evaluation.calibration import Calibration
    from clipdet.evaluation.groups import group_evidence, with_group_column
    from clipdet.evaluation.verdicts import decide_table, verdict_summary
    from clipdet.files import read_table, write_table

    try:
        calibration = Calibration.load(args.calibration)
        table = read_table(args.scores, [FILENAME_COLUMN])
        if args.groups_out and not args.group:
            raise ValueError("--groups_out needs --group (the column of copies)")
        out = decide_table(table, calibration, args.fpr)
        if args.group:
            out = with_group_column(out, args.group)
        write_table(out, args.out)
        if args.groups_out:
            write_table(group_evidence(out, calibration, args.fpr), args.groups_out)
    except (OSError, ValueError) as e:
        return fatal(e)
    print(f"{verdict_summary(out)} ({calibration.describe(args.fpr)}) -> {args.out}",
          file=sys.stderr)  # fmt: skip
    return 0
