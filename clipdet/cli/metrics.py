"""Per-generator metric tables from a labelled list and a scores file.

Same flags and tables as the reference code's compute_metrics.py:
    clipdet metrics --in_csv data/demo/demo.csv --out_csv results.csv --metrics auc
More metrics, confidence intervals, plots and formats:
    clipdet metrics -i list.csv -o results.csv --metrics auc,ap,eer,pd_fpr5,cllr \\
        --ci 0.95 --plot plots/ --save_tab table.md --format md
Clean vs laundered (see clipdet launder):
    clipdet metrics -i test.csv -o scores.csv --compare laundered/list.csv,l_scores.csv
Open-set attribution models (clipdet train --task attribution), generators held out:
    clipdet metrics --task attribution -i test.csv -o scores.csv \\
        --unknown midjourney-v5,firefly --plot plots/
`python compute_metrics.py` takes the same flags.
"""

import sys
from pathlib import Path

from clipdet.cli.options import (
    fatal,
    make_parser,
    run_standalone,
    setup_logging,
)
from clipdet.constants import METRIC_NAMES, TABLE_FORMATS


def add_parser(subparsers=None):
    p = make_parser(
        subparsers, "metrics", __doc__, "AUC / accuracy tables (= compute_metrics.py)", run
    )
    p.add_argument(
        "--task",
        choices=("detection", "attribution"),
        default="detection",
        help="detection: metric tables per generator; attribution: closed- and open-set "
        "figures of attribution models",
    )
    p.add_argument("--in_csv", "-i", required=True, help="CSV with 'filename' and 'typ' columns")
    p.add_argument("--out_csv", "-o", default="./results.csv", help="scores file from scoring")
    p.add_argument(
        "--metrics", "-w", default="auc", help=f"comma-separated list of: {', '.join(METRIC_NAMES)}"
    )
    p.add_argument("--save_tab", "-t", default=None, help="where to save the table(s)")
    p.add_argument("--format", default="csv", choices=TABLE_FORMATS, help="format of --save_tab")
    p.add_argument(
        "--ci", type=float, default=None, help="bootstrap confidence level, e.g. 0.95 (fixed seed)"
    )
    p.add_argument("--n_boot", type=int, default=1000, help="bootstrap resamples for --ci")
    p.add_argument(
        "--compare",
        default=None,
        metavar="IN2,SCORES2",
        help="a second labelled list and its scores (e.g. laundered copies): tables side by "
        "side with the drop",
    )
    p.add_argument(
        "--plot",
        default=None,
        metavar="DIR",
        help="write ROC curves per typ and score histograms per model here (attribution: "
        "confusion matrices, PNG and CSV)",
    )
    p.add_argument(
        "--calibration", default=None, metavar="FILE",
        help="a `clipdet calibrate` file: TPR and FPR at its thresholds per generator and the "
        "share of inconclusive verdicts, beside the tables",
    )  # fmt: skip
    p.add_argument(
        "--unknown",
        default="",
        metavar="TYP,...",
        help="attribution: generators held out of training (their images should be 'unknown')",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """``python compute_metrics.py ...``: the same as ``clipdet metrics ...``."""
    return run_standalone(add_parser, argv)


def run(args) -> int:
    setup_logging(quiet=True, verbose_name=False)
    if args.task == "attribution":
        return _attribution(args)
    from clipdet.evaluation.metrics import (
        compare_tables,
        compute_metric_table,
        evaluation_data,
        parse_metric_names,
        read_labels_and_scores,
    )
    from clipdet.evaluation.reports import save_tables, to_text
    from clipdet.pipeline.results import missing_images_hint_for_file

    try:
        if args.unknown:
            raise ValueError("--unknown applies to --task attribution")
        names = parse_metric_names(args.metrics)
        if args.ci is not None and not 0 < args.ci < 1:
            raise ValueError(f"--ci must be in (0, 1), got {args.ci}")
        labels, scores = read_labels_and_scores(args.in_csv, args.out_csv)
        data = evaluation_data(labels, scores, f"scores CSV {args.out_csv}")
        other = _load_comparison(args.compare) if args.compare else None
        calibrated = _calibrated_tables(args.calibration, labels, scores)
    except (OSError, ValueError) as e:
        return fatal(e)
    hint = missing_images_hint_for_file(args.out_csv)
    if hint:
        print(hint, file=sys.stderr)
    tables = {name: compute_metric_table(data, name, args.ci, args.n_boot) for name in names}
    if other is not None:
        tables = {
            name: compare_tables(table, compute_metric_table(other, name))
            for name, table in tables.items()
        }
    tables.update(calibrated)
    print("\n\n".join(to_text(table) for table in tables.values()))
    if args.save_tab:
        save_tables(tables, args.save_tab, args.format)
    if args.plot:
        from clipdet.evaluation.plots import plot_roc_curves, plot_score_histograms

        written = plot_roc_curves(data, args.plot) + plot_score_histograms(data, args.plot)
        print(f"wrote {len(written)} plots to {args.plot}", file=sys.stderr)
    return 0


def _calibrated_tables(path, labels, scores) -> dict:
    """The rates at a calibration's thresholds (none without ``path``)."""
    if not path:
        return {}
    from clipdet.evaluation.calibrated_metrics import calibrated_rates
    from clipdet.evaluation.calibration import Calibration

    return calibrated_rates(labels, scores, Calibration.load(path))


def _load_comparison(spec: str):
    from clipdet.evaluation.metrics import load_evaluation_data

    parts = spec.split(",")
    if len(parts) != 2:
        raise ValueError(f"--compare takes IN2,SCORES2 (two CSV files), got {spec!r}")
    return load_evaluation_data(*parts)


def _attribution(args) -> int:
    from clipdet.evaluation.attribution_metrics import evaluate_attribution
    from clipdet.evaluation.reports import save_attribution_table, to_text

    unknown = [t.strip() for t in args.unknown.split(",") if t.strip()]
    try:
        if args.compare or args.ci is not None or args.metrics != "auc":
            raise ValueError("--compare, --ci and --metrics apply to --task detection")
        result = evaluate_attribution(args.in_csv, args.out_csv, unknown)
    except (OSError, ValueError) as e:
        return fatal(e)
    print(to_text(result.table))
    for name, matrix in result.confusion.items():
        print(f"\nconfusion matrix of {name} (rows: true typ, columns: decision)")
        print(matrix.to_string())
    if args.save_tab:
        save_attribution_table(result.table, args.save_tab, args.format)
    if args.plot:
        from clipdet.evaluation.plots import plot_confusion, safe_name
        from clipdet.files import write_csv_atomic

        for name, matrix in result.confusion.items():
            stem = Path(args.plot) / f"confusion_{safe_name(name)}"  # names may hold dots
            write_csv_atomic(f"{stem}.csv", matrix.reset_index())
            plot_confusion(matrix, f"{stem}.png", f"Attribution by {name}")
        print(f"wrote {len(result.confusion)} confusion matrices to {args.plot}", file=sys.stderr)
    return 0
