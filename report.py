"""An HTML report of a scoring run, from existing files: a summary, one card per image
(thumbnail, verdict, each model's LLR on one scale, attribution, error, evidence maps), sorting,
filters and search; with a labelled list, AUC / accuracy per generator, ROC curves and LLR
histograms. Viewed offline: nothing is fetched from the network.

    python report.py --scores results.csv [--in_csv list.csv] [--maps maps/] --out report.html
"""

import argparse
import logging
import shlex
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--scores", "-s", required=True, help="main.py's output (.csv/.parquet/.jsonl)")
    p.add_argument(
        "--in_csv",
        "-i",
        default=None,
        help="the list that was scored: image paths relative to it, and labels (typ) for the "
        "per-generator metrics; without it, file names are read relative to this folder",
    )
    p.add_argument("--maps", default=None, metavar="DIR", help="main.py --maps folder")
    p.add_argument("--out", "-o", default="report.html", help="the HTML file to write")
    p.add_argument("--threshold", type=float, default=0.0, help="verdict threshold")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from clipdet import storage
    from clipdet.constants import FILENAME_COLUMN
    from clipdet.evaluation.html_report import ReportInputs, write_report
    from clipdet.files import read_list, read_table

    try:
        table = read_table(args.scores, [FILENAME_COLUMN, "error"])
        if FILENAME_COLUMN not in table.columns:
            raise ValueError(f"{args.scores} has no {FILENAME_COLUMN!r} column")
        labels, root = None, "."
        if args.in_csv:
            labels, _ = read_list(args.in_csv)
            root = storage.parent(args.in_csv)
        paths = [storage.join(root, str(name)) for name in table[FILENAME_COLUMN]]
        inputs = ReportInputs(
            table, paths, labels, args.maps, args.threshold,
            command=shlex.join(["python", "report.py", *argv]),
        )  # fmt: skip
        out = write_report(inputs, args.out)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"report of {len(table)} images -> {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
