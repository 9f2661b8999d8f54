"""Score a list of images with one or more detectors: one LLR per model (> 0 means synthetic).

Same flags as the reference code (grip-unina/ClipBased-SyntheticImageDetection):
    python main.py --in_csv data/demo/demo.csv --out_csv results.csv
"""

import argparse
import logging
import sys

import numpy as np

from clipdet.constants import DEFAULT_FUSION, DEFAULT_MODELS, ERROR_COLUMN
from clipdet.feature_cache import FeatureCache
from clipdet.fusion import FUSIONS, NO_FUSION
from clipdet.scoring import (
    default_batch_size,
    default_device,
    default_num_workers,
    iter_scores,
    load_models,
)
from clipdet.tables import build_table, read_image_list, write_csv_atomic
from clipdet.weights import available_models

logger = logging.getLogger("clipdet")

EXIT_FAILED_ROWS = 1
EXIT_FATAL = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--in_csv", "-i", required=True, help="CSV with a 'filename' column")
    p.add_argument("--out_csv", "-o", default="./results.csv", help="output CSV")
    p.add_argument("--weights_dir", "-w", default="./weights", help="folder of model folders")
    p.add_argument(
        "--models", "-m", default=",".join(DEFAULT_MODELS), help="comma-separated model names"
    )
    p.add_argument(
        "--fusion",
        "-f",
        default=DEFAULT_FUSION,
        choices=[*FUSIONS, NO_FUSION],
        help="how to fuse the models' LLRs into the 'fusion' column",
    )
    p.add_argument("--device", "-d", default=None, help="torch device (default: cuda:0 or cpu)")
    p.add_argument(
        "--batch_size",
        type=int,
        default=None,
        help="images per forward pass (default: 4 on CPU, 32 on CUDA)",
    )
    p.add_argument(
        "--num_workers",
        type=int,
        default=None,
        help=f"image-decoding worker processes (default: {default_num_workers()})",
    )
    p.add_argument(
        "--backbone_weights",
        default=None,
        help="local open_clip checkpoint for every CLIP-based model (default: hub cache/download)",
    )
    p.add_argument(
        "--feature_cache",
        default=None,
        metavar="DIR",
        help="reuse CLIP features across runs (keyed by file content and backbone)",
    )
    p.add_argument("--strict", action="store_true", help="exit 1 if any image failed")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar, warnings only")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    device = args.device or default_device()
    try:
        if not names:
            raise ValueError(
                f"no model given; valid choices: {', '.join(available_models(args.weights_dir))}"
            )
        filenames, paths = read_image_list(args.in_csv)
        models = load_models(names, args.weights_dir, args.backbone_weights, device)
    except (OSError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FATAL

    scores = np.full((len(paths), len(models)), np.nan)
    errors = ["not scored: run interrupted"] * len(paths)
    interrupted = False
    try:
        for result in iter_scores(
            models,
            paths,
            device=device,
            batch_size=args.batch_size or default_batch_size(device),
            num_workers=default_num_workers() if args.num_workers is None else args.num_workers,
            progress=not args.quiet,
            feature_cache=FeatureCache(args.feature_cache) if args.feature_cache else None,
        ):
            scores[result.index] = result.scores
            errors[result.index] = result.error
    except KeyboardInterrupt:
        interrupted = True
    finally:  # whatever happens, what is done is written
        fusion = None if args.fusion == NO_FUSION else args.fusion
        table = build_table(filenames, names, scores, errors, fusion)
        out = write_csv_atomic(table, args.out_csv)
    failed = table[table[ERROR_COLUMN] != ""]
    _report(table, failed, out)
    if interrupted:
        print("interrupted: rows not scored are marked in the error column", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_FAILED_ROWS if args.strict and len(failed) else 0


def _report(table, failed, out) -> None:
    print(f"scored {len(table) - len(failed)} of {len(table)} images -> {out}", file=sys.stderr)
    if len(failed):
        print(f"{len(failed)} failed:", file=sys.stderr)
        for name, error in list(zip(failed.iloc[:, 0], failed[ERROR_COLUMN], strict=True))[:20]:
            print(f"  {name}: {error}", file=sys.stderr)
        if len(failed) > 20:
            print(f"  ... and {len(failed) - 20} more (see the error column)", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
