"""Download one of the paper's datasets, verified and unpacked, with its list CSV.

    python data/download.py synthbuster            # Synthbuster + RAISE-1k -> data/
    python data/download.py synthwildx             # 2,000 in-the-wild images from their URLs
    python data/download.py grip_test --dest /big/disk
    python data/download.py grip_train --coco /datasets/coco/train2017   # real half from a copy

Archives are fetched resumably (run again after a broken connection), checked against their
md5 and unpacked; zip entries that would escape the folder are refused.
"""

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clipdet.datasets import DATA_DIR, DATASETS, RECIPES, download_dataset  # noqa: E402
from clipdet.download import DownloadError, UnsafeArchiveError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("name", choices=DATASETS)
    p.add_argument("--dest", default=str(DATA_DIR), help="folder to unpack into (default data/)")
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
    p.add_argument("--quiet", "-q", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if not args.quiet else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")  # fmt: skip
    if args.name in RECIPES:
        print(f"note: {RECIPES[args.name].note}", file=sys.stderr)
    try:
        out = download_dataset(
            args.name, args.dest, mirror=args.mirror, url_list=args.url_list, coco=args.coco,
            delay=args.delay, timeout=args.timeout, progress=not args.quiet,
        )  # fmt: skip
    except (DownloadError, UnsafeArchiveError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.name}: list written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
