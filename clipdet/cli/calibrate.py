"""Set the verdict threshold on your own real photos at a chosen false-positive rate.

    clipdet calibrate --real my_real_photos.csv [--fake generated.csv] \\
        --models clipdet_latent10k_plus,Corvi2023 --fpr 0.01,0.001 -o calibration.yaml
    clipdet score -i suspects.csv -o verdicts.csv --calibration calibration.yaml

For each model and the fusion: the threshold whose false-positive rate on the real list is at
most the target (exactly), the observed rate and its exact 95 % (Clopper-Pearson) bound, a
warning when the list is too small for the target (fewer than 3 / fpr images), and with
--fake the true-positive rate at that threshold with its interval and the lower threshold
under which a verdict is 'real'. --quality (with --fake) first calibrates each score for the
image's size and JPEG quality (QuAD), --degrade K adding K in-memory degraded copies of each
image to that fit. The file also describes the images in one detector's
features (where the calibration holds: `clipdet score` calls an image unlike all of them
inconclusive); --no_domain leaves it out. --scores reads a scores file instead of scoring
again: of these models, or another tool's columns (--models names them; they are kept as
external detectors, applied with `clipdet decide`). The file refuses to apply to models whose
weights changed since.
"""

import sys

from clipdet.cli.options import (
    add_compute_options,
    add_model_options,
    add_quiet,
    fatal,
    make_parser,
    model_names,
    setup_logging,
)


def add_parser(subparsers=None):
    from clipdet.constants import DEFAULT_MODELS

    p = make_parser(subparsers, "calibrate", __doc__, "thresholds at a false-positive rate", run)
    p.add_argument("--real", required=True, help="list of your own real images (filename)")
    p.add_argument("--fake", default=None, help="list of synthetic images (optional)")
    p.add_argument(
        "--fpr", default="0.01",
        help="target false-positive rates, comma-separated (default 0.01); the first is the "
        "one verdicts use",
    )  # fmt: skip
    p.add_argument("--out", "-o", default="calibration.yaml", help="the calibration file")
    p.add_argument(
        "--scores", default=None,
        help="a scores file of these models holding every listed image (read, not scored)",
    )  # fmt: skip
    p.add_argument(
        "--miss_rate", type=float, default=None,
        help="with --fake: share of synthetic images allowed under the 'real' threshold "
        "(default 0.05)",
    )  # fmt: skip
    p.add_argument(
        "--min_jpeg_quality", type=float, default=None,
        help="JPEGs below this quality (from their quantisation tables) are inconclusive "
        "(default 65)",
    )  # fmt: skip
    p.add_argument(
        "--quality", action="store_true",
        help="quality-aware (QuAD): each score calibrated for the image's size and JPEG "
        "quality, fitted on --real and --fake (a 'group' column weighs each source once)",
    )  # fmt: skip
    p.add_argument(
        "--degrade", type=int, default=0, metavar="K",
        help="with --quality: add K in-memory degraded copies of every listed image to the fit "
        "(JPEG 50-95, scale 0.3-1, WebP, crops, chained; nothing written)",
    )  # fmt: skip
    p.add_argument(
        "--no_domain", action="store_true",
        help="do not describe where the calibration holds (no 'unlike the calibration "
        "images' verdicts)",
    )  # fmt: skip
    add_model_options(p, models=",".join(DEFAULT_MODELS))
    add_compute_options(p, speed=False)
    add_quiet(p)
    return p


def run(args) -> int:
    setup_logging(args.quiet)
    from clipdet.evaluation.calibration import DEFAULT_MIN_JPEG_QUALITY, DEFAULT_MISS_RATE
    from clipdet.evaluation.calibration_run import calibrate
    from clipdet.options import RunOptions

    try:
        fprs = [float(text) for text in args.fpr.split(",") if text.strip()]
        if not fprs:
            raise ValueError("--fpr needs at least one rate")
        if args.miss_rate is not None and not args.fake:
            raise ValueError("--miss_rate applies with --fake")
        calibration = calibrate(
            args.real, model_names(args.models), args.weights_dir, fprs,
            fake_csv=args.fake, scores=args.scores, fusion=args.fusion,
            miss_rate=DEFAULT_MISS_RATE if args.miss_rate is None else args.miss_rate,
            min_jpeg_quality=(DEFAULT_MIN_JPEG_QUALITY if args.min_jpeg_quality is None
                              else args.min_jpeg_quality),
            options=RunOptions.from_args(args), domain=not args.no_domain,
            quality=args.quality, degrade=args.degrade,
        )  # fmt: skip
        path = calibration.save(args.out)
    except (OSError, ValueError, RuntimeError) as e:
        return fatal(e)
    print(format_calibration(calibration))
    print(f"calibration -> {path}; apply it with: clipdet score ... --calibration {path}",
          file=sys.stderr)  # fmt: skip
    return 0


def format_calibration(calibration) -> str:
    """One line per score column and target: threshold, observed rate, bound, TPR."""
    lines = [
        f"{'column':>24} {'target':>7} {'threshold':>9} {'n real':>6} {'FP':>4} "
        f"{'FPR':>7} {'95% bound':>9} {'TPR [95% CI]':>22} {'real below':>10}"
    ]
    for name, column in calibration.columns.items():
        for p in column.points:
            tpr = "" if p.tpr is None else f"{p.tpr:.3f} [{p.tpr_low:.3f}, {p.tpr_high:.3f}]"
            flag = "  (list too small)" if p.small_list else ""
            mark = "*" if name == calibration.decision else " "
            lines.append(
                f"{mark}{name:>23} {p.target_fpr:>7g} {p.threshold:>+9.3f} {p.n_real:>6} "
                f"{p.false_positives:>4} {p.observed_fpr:>7.4f} {p.fpr_upper:>9.4f} {tpr:>22} "
                f"{calibration.real_threshold(name, p.target_fpr):>+10.3f}{flag}"
            )
    lines.append(f"* verdicts read {calibration.decision}; {calibration.describe()}")
    decided = [f"{kind} {record['coverage']:.2f}" for kind, record in calibration.lists.items()
               if record.get("coverage") is not None]  # fmt: skip
    if decided:
        lines.append("coverage (share decided) on the calibration lists: " + ", ".join(decided))
    if calibration.quality:
        copies = calibration.quality.get("degraded_copies", {}).get("per_image", 0)
        lines.append(
            "quality-aware: each detector's score calibrated for log pixel count and JPEG "
            "quality (QuAD), fitted on both lists"
            + (f" and {copies} degraded copies of each image" if copies else "")
            + "; the thresholds are on the calibrated LLRs"
        )
    if calibration.domain:
        d = calibration.domain
        lines.append(
            f"where it holds: {d['n_images']} images in {d['model']}'s features; an image "
            f"farther than {d['cutoff']:.3f} from all of them is inconclusive ({d['quantile']:.0%} "
            "of held-out calibration images lie within it)"
        )
    return "\n".join(lines)
