"""Which backbone and layer detect best on your own labelled images: linear probes on several
backbones and layers, compared by K-fold cross-validation, and the best saved as a model.

    clipdet sweep -i train.csv --backbone pe-core-l14-336,dinov3-vitl16,clipL14commonpool \\
        --layers embed,-2,-4 --folds 5 -o sweep.csv --save my_probe
    clipdet score -i test.csv --models my_probe

Features are extracted once per backbone for all its layers (one pass per image), into a
feature cache (default: the table's name + .features/): an interrupted sweep run again
continues where it stopped. The table (best cross-validated AUC first: AUC, balanced
accuracy and TPR at 1 % FPR with bootstrap intervals, ECE, images/s and peak memory of the
backbone here) is printed, written to --out_csv and drawn (AUC by layer) beside it.
"""

import re
import sys
from dataclasses import replace
from pathlib import Path

from clipdet.cli.options import (
    EXIT_INTERRUPTED,
    add_compute_options,
    add_quiet,
    fatal,
    make_parser,
    setup_logging,
    shown_command,
)
from clipdet.constants import default_weights_dir


def add_parser(subparsers=None):
    p = make_parser(
        subparsers, "sweep", __doc__, "compare linear probes on backbones and layers", run
    )
    p.add_argument("--in_csv", "-i", required=True, help="labelled list: filename, typ")
    p.add_argument(
        "--backbone", "-b", required=True, metavar="A,B,...",
        help="comma-separated backbones: aliases (`clipdet models --backbones`) or "
        "LIB:MODEL[:PRETRAINED]",
    )  # fmt: skip
    p.add_argument(
        "--layers", default="embed", metavar="embed,-2,-4,...",
        help="feature layers: embed (the library's image embedding), next_to_last (open_clip "
        "ViTs), or a block K (0-based, negative from the end); default embed",
    )  # fmt: skip
    # "--layers -2,-4" is a value, not an option: argparse reads a word that starts with "-"
    # and a digit as a value only when it matches this (its own: "-2" alone).
    p._negative_number_matcher = re.compile(r"^-\d+(,[^,]+)*$")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    p.add_argument(
        "--out_csv", "-o", default="sweep.csv", help="the table (default sweep.csv); its plot "
        "is written beside it as .png",
    )  # fmt: skip
    p.add_argument("--save", default=None, metavar="NAME", help="save the best row as model NAME")
    p.add_argument(
        "--pick", default=None, metavar="BACKBONE:LAYER",
        help="with --save: this row instead of the best one",
    )  # fmt: skip
    p.add_argument("--weights_dir", "-w", default=default_weights_dir(), help="where --save writes")
    p.add_argument("--C", type=float, default=None, help="SVM C (default: cross-validated)")
    p.add_argument("--ci", type=float, default=0.95, help="bootstrap interval level")
    p.add_argument("--n_boot", type=int, default=1000, help="bootstrap resamples (0: none)")
    add_compute_options(p, speed=False)
    add_quiet(p)
    return p


def run(args) -> int:
    setup_logging(args.quiet)
    from clipdet.evaluation.plots import plot_sweep
    from clipdet.files import write_csv_atomic
    from clipdet.models.families.probe import parse_layer
    from clipdet.options import RunOptions
    from clipdet.training.sweep import pick_row, sweep

    out = Path(args.out_csv)
    cache = args.feature_cache or str(out.with_suffix(".features"))
    layers = [parse_layer(text) for text in args.layers.split(",") if text.strip()]
    backbones = [name.strip() for name in args.backbone.split(",") if name.strip()]
    try:
        if args.pick and not args.save:
            raise ValueError("--pick chooses the row --save writes: give --save NAME too")
        options = replace(RunOptions.from_args(args), feature_cache=cache).resolved()
        report = sweep(args.in_csv, backbones, layers, args.folds, options, C=args.C,
                       ci=args.ci, n_boot=args.n_boot)  # fmt: skip
        table = report.table
        write_csv_atomic(out, table)
        plot = plot_sweep(table, [str(layer) for layer in layers], out.with_suffix(".png"))
        print(format_table(table))
        print(f"table: {out}; plot: {plot}; features cached in {cache}", file=sys.stderr)
        if args.save:
            row = pick_row(table, args.pick)
            folder = save_row(args, row, options)
            use = shown_command(
                args, ["--models", args.save, "--weights_dir", args.weights_dir], "score"
            )
            saved = f"{row['backbone']} at layer {row['layer']} (cv AUC {row['auc']:.4f})"
            print(f"saved {saved} to {folder}; use it with: {use} ...", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"interrupted: the features computed so far are kept in {cache}; run the same "
              "command to continue", file=sys.stderr)  # fmt: skip
        return EXIT_INTERRUPTED
    except (OSError, ValueError, RuntimeError) as e:
        return fatal(e)
    return 0


def save_row(args, row, options) -> Path:
    """The row's head fitted on every usable image (features from the sweep's cache)."""
    from clipdet.models.families.probe import parse_layer
    from clipdet.training.detector import train_detector

    record = {"sweep": {"table": str(args.out_csv), "folds": args.folds,
                        "cv_auc": round(float(row["auc"]), 6)}}  # fmt: skip
    return train_detector(
        args.in_csv, args.weights_dir, args.save, C=args.C, options=options,
        backbone=row["backbone"], layer=parse_layer(row["layer"]), record=record,
    )  # fmt: skip


def format_table(table) -> str:
    """The table for a terminal: 4 decimals for figures, 1 for speed and memory."""
    shown = table.copy()
    for column in shown.columns:
        if column in ("images_per_s", "peak_rss_mb"):
            shown[column] = shown[column].map(lambda v: f"{v:.1f}")
        elif shown[column].dtype.kind == "f":
            shown[column] = shown[column].map(lambda v: f"{v:.4f}")
    if not shown["error"].astype(bool).any():
        shown = shown.drop(columns="error")
    return shown.to_string(index=False)
