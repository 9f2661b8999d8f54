"""Download one of the paper's datasets, verified and unpacked, with its list CSV.

    clipdet download synthbuster            # Synthbuster + RAISE-1k -> data/
    clipdet download synthwildx             # 2,000 in-the-wild images from their URLs
    clipdet download grip_test --dest /big/disk
    clipdet download grip_train --coco /datasets/coco/train2017   # real half from a copy

Archives are fetched resumably (run again after a broken connection), checked against their
md5 and unpacked; zip entries that would escape the folder are refused.
"""

import sys

from clipdet.cli.options import (
    add_quiet,
    fatal,
    make_parser,
    run_standalone,
    setup_logging,
)
from clipdet.constants import DATASET_NAMES


def add_parser(subparsers=None):
    p = make_parser(subparsers, "download", __doc__, "fetch a dataset (= data/download.py)", run)
    p.add_argument("name", choices=DATASET_NAMES)
    p.add_argument("--dest", default=None, help="folder to unpack into (default: data/)")
    p.add_argument("--mirror", default=None, help="base URL serving the same archive names")
    p.add_argument("--url_list", default=None, help="synthwildx: list with url,filename,typ")
    p.add_argument(
        "--coco",
        default=None,
        metavar="DIR|URL",
        help="grip_train: a local COCO train2017 folder or base URL for the real half "
        "(default: images.cocodataset.org, one image per --delay)",
    )
    p.add_argument("--delay", type=float, default=0.5, help="synthwildx: seconds between requests")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds without an answer")
    add_quiet(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """``python data/download.py ...``: the same as ``clipdet download ...``."""
    return run_standalone(add_parser, argv)


def run(args) -> int:
    setup_logging(args.quiet)
    from clipdet.datasets import DATA_DIR, RECIPES, download_dataset
    from clipdet.download import DownloadError, UnsafeArchiveError

    if args.name in RECIPES:
        print(f"note: {RECIPES[args.name].note}", file=sys.stderr)
    try:
        out = download_dataset(
            args.name,
            args.dest or DATA_DIR,
            mirror=args.mirror,
            url_list=args.url_list,
            coco=args.coco,
            delay=args.delay,
            timeout=args.timeout,
            progress=not args.quiet,
        )
    except (DownloadError, UnsafeArchiveError, OSError, ValueError) as e:
        return fatal(e)
    print(f"{args.name}: list written to {out}", file=sys.stderr)
    return 0
