"""Write laundered (impaired) copies of a labelled test set, to measure robustness.

    clipdet launder --in_csv test.csv --out_dir laundered/ --ops postprocessed --seed 0
    clipdet score --in_csv laundered/list.csv --out_csv laundered_scores.csv
    clipdet metrics -i test.csv -o scores.csv --compare laundered/list.csv,laundered_scores.csv

--ops is a chain such as "crop:0.5..1,resize:0.5..1.5/bilinear,jpeg:65..100" or a preset
(postprocessed: the paper's random crop + resize + JPEG; social). Operations: jpeg:QUALITY,
webp:QUALITY, resize:SCALE[/nearest|bilinear|bicubic|lanczos|area], crop:FRACTION|PIXELS
(random position), ccrop:FRACTION|PIXELS (centre), blur:SIGMA, noise:STD (0-255); LOW..HIGH
draws per image.
"""

import sys

from clipdet.cli.options import (
    add_quiet,
    fatal,
    make_parser,
    run_standalone,
    setup_logging,
)


def add_parser(subparsers=None):
    p = make_parser(subparsers, "launder", __doc__, "impaired copies of a list (= launder.py)", run)
    p.add_argument("--in_csv", "-i", required=True, help="list with filename (and typ)")
    p.add_argument("--out_dir", "-o", required=True, help="folder for the images and list.csv")
    p.add_argument("--ops", default="postprocessed", help="operation chain or preset")
    p.add_argument("--seed", type=int, default=0, help="parameters are drawn per image from it")
    add_quiet(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """``python launder.py ...``: the same as ``clipdet launder ...``."""
    return run_standalone(add_parser, argv)


def run(args) -> int:
    setup_logging(quiet=True, verbose_name=False)
    from clipdet.evaluation.laundering import launder_list

    try:
        out = launder_list(args.in_csv, args.out_dir, args.ops, args.seed, progress=not args.quiet)
    except (OSError, ValueError) as e:
        return fatal(e)
    print(f"laundered list written to {out}", file=sys.stderr)
    return 0
