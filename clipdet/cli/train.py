"""Train a head on frozen features from a labelled image list.

Detection (default; few-shot recipe of Cozzolino et al., CVPRW 2024): a class-balanced linear
SVM, C by cross-validation, its score calibrated into an LLR, written in the reference layout.
    clipdet train --in_csv train.csv --weights_dir weights --model_name my_detector
A linear probe on a foundation backbone (an alias of configs/backbones.yaml or the library's
own names, LIB:MODEL[:PRETRAINED or weights file]), at its embedding or a block's token:
    clipdet train -i train.csv -n my_probe --backbone pe-core-l14-336 [--layer -4]
    clipdet train -i train.csv -n my_probe --backbone timm:vit_large_patch16_dinov3:lvd1689m
Open-set attribution: one class per typ ('real' included) and an 'unknown' rule.
    clipdet train --task attribution --in_csv train.csv --weights_dir weights \\
        --model_name my_attributor [--block 12] [--val_csv val.csv]
The CSV has 'filename' and 'typ' ('real', or the generator's name for synthetic images).
`python train.py` takes the same flags.
"""

import sys

from clipdet.cli.options import (
    add_compute_options,
    add_quiet,
    fatal,
    make_parser,
    run_standalone,
    setup_logging,
    shown_command,
)
from clipdet.constants import (
    DEFAULT_ACCEPT_RATE,
    DEFAULT_ARCH,
    DEFAULT_UNKNOWN_SCORE,
    UNKNOWN_SCORE_NAMES,
    default_weights_dir,
)


def add_parser(subparsers=None):
    p = make_parser(
        subparsers, "train", __doc__, "train a detector or attributor (= train.py)", run
    )
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
        "--backbone", default=None, metavar="LIB:MODEL[:PRETRAINED]",
        help="train a linear probe on this backbone instead of --arch: an alias (see `clipdet "
        "models --backbones`) or open_clip:/timm: with the library's model name and its "
        "pretrained tag or a local weights file; the library's own preprocessing",
    )  # fmt: skip
    p.add_argument(
        "--layer", default=None, metavar="embed|K",
        help="with --backbone: 'embed' (the library's image embedding, the default) or the "
        "class token of block K (0-based, negative from the end)",
    )  # fmt: skip
    p.add_argument(
        "--C", type=float, default=None, help="regularisation C (default: cross-validated)"
    )
    p.add_argument(
        "--val_csv",
        default=None,
        help="labelled list: detection reports AUC/acc on it; attribution fits its unknown "
        "threshold on its known-class images (default: out-of-fold training images)",
    )
    attribution = p.add_argument_group("attribution")
    attribution.add_argument(
        "--block",
        type=int,
        default=None,
        help="CLS token of this transformer block, 0-based, negative from the end (default: "
        "the arch's next-to-last features)",
    )
    attribution.add_argument(
        "--unknown_score",
        choices=UNKNOWN_SCORE_NAMES,
        default=DEFAULT_UNKNOWN_SCORE,
        help="open-set score (energy: -logsumexp of the logits; msp: 1 - max softmax probability)",
    )
    attribution.add_argument(
        "--accept_rate",
        type=float,
        default=DEFAULT_ACCEPT_RATE,
        help="share of known-class images the unknown threshold accepts",
    )
    add_compute_options(p, speed=False)
    add_quiet(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """``python train.py ...``: the same as ``clipdet train ...``."""
    return run_standalone(add_parser, argv)


def run(args) -> int:
    setup_logging(args.quiet)
    from clipdet.options import RunOptions
    from clipdet.training.attributor import train_attributor
    from clipdet.training.detector import train_detector

    try:
        options = RunOptions.from_args(args).resolved()
        from clipdet.models.families.probe import parse_layer

        layer = None if args.layer is None else parse_layer(args.layer)
        common = dict(
            arch=args.arch, C=args.C, val_csv=args.val_csv, options=options,
            backbone=args.backbone, layer=layer,
        )  # fmt: skip
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
        return fatal(e)
    use = shown_command(
        args, ["--models", args.model_name, "--weights_dir", args.weights_dir], "score"
    )
    print(f"model written to {folder}; use it with: {use} ...", file=sys.stderr)
    return 0
