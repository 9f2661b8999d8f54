"""Train a detector head on frozen CLIP features from a labelled image list (few-shot recipe of
Cozzolino et al., CVPRW 2024): a class-balanced linear SVM, C by cross-validation, its score
calibrated into an LLR. The model folder is written in the reference layout.

    python train.py --in_csv train.csv --weights_dir weights --model_name my_detector
The CSV has 'filename' and 'typ' ('real', or the generator's name for synthetic images).
"""

import argparse
import logging
import sys

from clipdet.scoring import default_batch_size, default_device, default_num_workers
from clipdet.training import DEFAULT_ARCH, train_detector


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--in_csv", "-i", required=True, help="training list: filename, typ")
    p.add_argument("--weights_dir", "-w", default="./weights", help="where to write the model")
    p.add_argument("--model_name", "-n", required=True, help="name of the new model folder")
    p.add_argument("--arch", default=DEFAULT_ARCH, help="opencliplinear[next]_<backbone>")
    p.add_argument("--C", type=float, default=None, help="SVM C (default: cross-validated)")
    p.add_argument("--val_csv", default=None, help="labelled list to report AUC/acc on")
    p.add_argument("--device", "-d", default=None, help="torch device (default: cuda:0 or cpu)")
    p.add_argument("--batch_size", type=int, default=None)
    p.add_argument("--num_workers", type=int, default=None)
    p.add_argument("--backbone_weights", default=None, help="local open_clip checkpoint")
    p.add_argument(
        "--feature_cache",
        default=None,
        metavar="DIR",
        help="reuse features across runs (keyed by file content and backbone)",
    )
    p.add_argument("--quiet", "-q", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    device = args.device or default_device()
    try:
        folder = train_detector(
            args.in_csv,
            args.weights_dir,
            args.model_name,
            arch=args.arch,
            C=args.C,
            val_csv=args.val_csv,
            device=device,
            backbone_weights=args.backbone_weights,
            batch_size=args.batch_size or default_batch_size(device),
            num_workers=default_num_workers() if args.num_workers is None else args.num_workers,
            feature_cache=args.feature_cache,
            progress=not args.quiet,
        )
    except (OSError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"model written to {folder}; use it with: python main.py --models {args.model_name} "
        f"--weights_dir {args.weights_dir} ...",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
