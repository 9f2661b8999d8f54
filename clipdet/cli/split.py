"""Split one labelled list into train/val/test lists for open-set attribution: the generators
named with --unknown appear only in the test list (fixed seed, reproducible).

    clipdet split --in_csv all.csv --out_dir splits --unknown midjourney-v5,firefly
    clipdet train --task attribution --in_csv splits/train.csv --val_csv splits/val.csv ...
    clipdet score --in_csv splits/test.csv --out_csv scores.csv --models my_attributor
    clipdet metrics --task attribution -i splits/test.csv -o scores.csv \\
        --unknown midjourney-v5,firefly
"""

import sys

from clipdet.cli.options import (
    fatal,
    make_parser,
    run_standalone,
    setup_logging,
)


def add_parser(subparsers=None):
    p = make_parser(subparsers, "split", __doc__, "open-set train/val/test lists (= split.py)", run)
    p.add_argument("--in_csv", "-i", required=True, help="labelled list: filename, typ")
    p.add_argument("--out_dir", "-o", required=True, help="where train/val/test.csv are written")
    p.add_argument("--unknown", default="", metavar="TYP,...", help="typs kept for test only")
    p.add_argument("--val", type=float, default=0.2, help="share of each known typ for val")
    p.add_argument("--test", type=float, default=0.2, help="share of each known typ for test")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    """``python split.py ...``: the same as ``clipdet split ...``."""
    return run_standalone(add_parser, argv)


def run(args) -> int:
    setup_logging(quiet=True, verbose_name=False)
    from clipdet.training.splits import split_open_set

    unknown = [t.strip() for t in args.unknown.split(",") if t.strip()]
    try:
        counts = split_open_set(args.in_csv, args.out_dir, unknown, args.val, args.test, args.seed)
    except (OSError, ValueError) as e:
        return fatal(e)
    print(counts.to_string())
    print(f"wrote train.csv, val.csv and test.csv to {args.out_dir}", file=sys.stderr)
    return 0
