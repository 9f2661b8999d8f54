"""Train a head on frozen CLIP features from a labelled image list.

Detection (default; few-shot recipe of Cozzolino et al., CVPRW 2024): a class-balanced linear
SVM, C by cross-validation, its score calibrated into an LLR, written in the reference layout.
    python train.py --in_csv train.csv --weights_dir weights --model_name my_detector
Open-set attribution: one class per typ ('real' included) and an 'unknown' rule.
    python train.py --task attribution --in_csv train.csv --weights_dir weights \\
        --model_name my_attributor [--block 12] [--val_csv val.csv]
The CSV has 'filename' and 'typ' ('real', or the generator's name for synthetic images).
"""

import argparse
import logging
import sys

from clipdet.constants import DEFAULT_ARCH, default_weights_dir
from clipdet.models.attribution import DEFAULT_ACCEPT_RATE, DEFAULT_UNKNOWN_SCORE, UNKNOWN_SCORES
from clipdet.options import RunOptions


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--in_csv", "-i", required=True, help="training list: filename, typ")
    p.add_argument(
        "--weights_dir", "-w", default=default_weights_dir(), help="where to write the model"
    )
    p.add_argument("--model_name", "-n", required=True, help="name of the new model folder")
    p.add_argument(
        "--task",
        choices=("detection", "attribution"),
        default="detection",
        help="detection: real vs synthetic LLR; attribution: which typ made it, or unknown",
    )
    p.add_argument("--arch", default=DEFAULT_ARCH, help="opencliplinear[next]_<backbone>")
    p.add_argument(
        "--C", type=float, default=None, help="regularisation C (default: cross-validated)"
    )
    p.add_argument(
        "--val_csv",
        default=None,
        help="labelled list: detection reports AUC/acc on it; attribution fits its unknown "
        "threshold on its known-class images (default: out-of-fold training images)",
    )
    p.add_argument(
        "--block",
        type=int,
        default=None,
        help="attribution: CLS token of this transformer block, 0-based, negative from the end "
        "(default: the arch's next-to-last features)",
    )
    p.add_argument(
        "--unknown_score",
        choices=tuple(UNKNOWN_SCORES),
        default=DEFAULT_UNKNOWN_SCORE,
        help="attribution: open-set score (energy: -logsumexp of the logits; msp: 1 - max "
        "softmax probability)",
    )
    p.add_argument(
        "--accept_rate",
        type=float,
        default=DEFAULT_ACCEPT_RATE,
        help="attribution: share of known-class images the unknown threshold accepts",
    )
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
    from clipdet.training.attributor import train_attributor
    from clipdet.training.detector import train_detector

    try:
        options = RunOptions.from_args(args).resolved()
        common = dict(arch=args.arch, C=args.C, val_csv=args.val_csv, options=options)
        if args.task == "attribution":
            folder = train_attributor(
                args.in_csv,
                args.weights_dir,
                args.model_name,
                block=args.block,
                unknown_score=args.unknown_score,
                accept_rate=args.accept_rate,
                **common,
            )
        elif args.block is not None:
            raise ValueError("--block applies to --task attribution")
        else:
            folder = train_detector(args.in_csv, args.weights_dir, args.model_name, **common)
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
