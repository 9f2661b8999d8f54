"""Write laundered (impaired) copies of a labelled test set, to measure robustness.

    python launder.py --in_csv test.csv --out_dir laundered/ --ops postprocessed --seed 0
    python main.py --in_csv laundered/list.csv --out_csv laundered_scores.csv
    python compute_metrics.py -i test.csv -o scores.csv \\
        --compare laundered/list.csv,laundered_scores.csv

--ops is a chain such as "crop:0.5..1,resize:0.5..1.5/bilinear,jpeg:65..100" or a preset
(postprocessed: the paper's random crop + resize + JPEG; social). Operations: jpeg:QUALITY,
resize:SCALE[/nearest|bilinear|bicubic|lanczos|area], crop:FRACTION|PIXELS (random position),
ccrop:FRACTION|PIXELS (centre), blur:SIGMA, noise:STD (0-255); LOW..HIGH draws per image.
"""

import argparse
import logging
import sys

from clipdet.evaluation.laundering import launder_list


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--in_csv", "-i", required=True, help="list with filename (and typ)")
    p.add_argument("--out_dir", "-o", required=True, help="folder for the images and list.csv")
    p.add_argument("--ops", default="postprocessed", help="operation chain or preset")
    p.add_argument("--seed", type=int, default=0, help="parameters are drawn per image from it")
    p.add_argument("--quiet", "-q", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        out = launder_list(args.in_csv, args.out_dir, args.ops, args.seed, progress=not args.quiet)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"laundered list written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
