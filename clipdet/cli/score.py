"""Score images and videos with one or more detectors: one LLR per model (> 0 means synthetic).
Attribution models (clipdet train --task attribution) add the generator's name, or 'unknown',
with probabilities. A video is one row, scored on --video_frames frames (docs/video.md).

Quick forms:
    clipdet score suspicious.jpg             # one image: a readable table on the terminal
    clipdet score photos/ "shots/*.png"       # folders (recursive) and glob patterns
    clipdet score clip.mp4 --frames_out frames.csv   # a video: one row, its frames apart
Datasets, with the reference code's flags (grip-unina/ClipBased-SyntheticImageDetection):
    clipdet score --in_csv list.csv --out_csv results.csv [--resume]
On a Ray cluster, lists and images anywhere (local, s3://, gs://, http(s)://):
    clipdet score --engine ray --in_csv s3://bucket/list.csv --out_csv s3://bucket/scores.parquet
The output's format follows its extension: .csv, .parquet or .jsonl. `python main.py` takes the
same flags.
"""

import logging
import sys

from clipdet.cli.options import (
    EXIT_FAILED_ROWS,
    EXIT_FATAL,
    EXIT_INTERRUPTED,
    add_compute_options,
    add_engine_options,
    add_model_options,
    add_provenance_options,
    add_quiet,
    add_video_options,
    fatal,
    make_parser,
    model_names,
    run_standalone,
    setup_logging,
    shown_command,
)
from clipdet.constants import ERROR_COLUMN, FILENAME_COLUMN

# Heavy modules (torch, open_clip, pandas) are imported once the arguments are read, so that
# --help and argument errors answer at once.

logger = logging.getLogger("clipdet")

DEFAULT_OUT_CSV = "./results.csv"
SCREEN_ROWS = 20  # up to this many images given as paths print a table by default
SHOWN_FAILURES = 20


def add_parser(subparsers=None):
    p = make_parser(subparsers, "score", __doc__, "score images (= main.py)", run)
    p.add_argument("paths", nargs="*", help="image files, folders (recursive) or glob patterns")
    io = p.add_argument_group("input and output")
    io.add_argument(
        "--in_csv",
        "-i",
        default=None,
        help="CSV (or Parquet) list with a 'filename' column; with --engine ray and an output "
        "folder also a folder or glob of such lists, read by the cluster",
    )
    io.add_argument(
        "--in_wds",
        default=None,
        metavar="PATTERN",
        help="WebDataset tar shards, e.g. 'shards/{00000..00999}.tar' or an s3:// pattern "
        "(--engine ray, output folder): each sample's image scored, its key the file name",
    )
    io.add_argument(
        "--out_csv",
        "-o",
        default=None,
        help=f"output file or URL, '-' for stdout (default: {DEFAULT_OUT_CSV}, or a table on "
        f"the terminal for up to {SCREEN_ROWS} images given as paths)",
    )
    io.add_argument(
        "--format",
        choices=("csv", "jsonl", "parquet", "table"),
        default=None,
        help="output format (default: by the output's extension, .csv / .jsonl / .parquet; "
        "csv for other names; a table on the terminal)",
    )
    io.add_argument(
        "--threshold",
        type=float,
        default=0.0,
        help="verdict 'synthetic' above this score (fusion, else the largest LLR)",
    )
    io.add_argument(
        "--calibration",
        default=None,
        metavar="FILE",
        help="a `clipdet calibrate` file: verdicts synthetic / real / inconclusive at its "
        "false-positive rate, with a verdict_reason column, in every output format",
    )
    io.add_argument(
        "--group", default=None, metavar="COLUMN|auto",
        help="the copies of one picture: a column of the input list, or auto (found among the "
        "images by perceptual hash and features); adds group and group_size",
    )  # fmt: skip
    io.add_argument(
        "--groups_out", default=None, metavar="FILE",
        help="with --group and --calibration: one row per group, its copies' evidence added "
        "up (CSV, Parquet or JSON lines by extension)",
    )  # fmt: skip
    io.add_argument(
        "--facts", action="store_true",
        help="write each image's width, height and jpeg_quality (read from its header; on "
        "with --calibration), e.g. for `clipdet calibrate --quality --scores`",
    )  # fmt: skip
    io.add_argument(
        "--views", default=None, metavar="CHAIN[;CHAIN]",
        help="also score each image as in-memory views, e.g. 'jpeg:75;resize:0.5;social' "
        "(--perturb's chains, ';'-separated): llr@<view> columns; with --calibration a verdict "
        "that flips under a view is inconclusive ('flips under jpeg:75')",
    )  # fmt: skip
    io.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run to the same --out_csv, skipping rows already scored",
    )
    io.add_argument(
        "--report",
        default=None,
        metavar="HTML",
        help="write an HTML report of the run (see clipdet report), with the maps of --maps",
    )
    io.add_argument("--strict", action="store_true", help="exit 1 if any image failed")
    add_model_options(p)
    add_compute_options(p)
    add_video_options(p)
    add_provenance_options(p)
    add_engine_options(p)
    add_quiet(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """``python main.py ...``: the same as ``clipdet score ...``."""
    return run_standalone(add_parser, argv)


def run(args) -> int:
    setup_logging(args.quiet)
    from clipdet.files import is_folder_output

    args.provenance = args.provenance or bool(args.report)  # the report shows the evidence
    if args.in_wds or is_folder_output(args.out_csv):
        return _run_streamed(args)
    from clipdet.options import RunOptions
    from clipdet.pipeline.routes import EngineOptions
    from clipdet.scoring_job import ScoreRequest, render_output, run_score_job

    try:
        listed, filenames, paths = _read_inputs(args)
        out_path, fmt = _choose_output(args, len(paths))
        request = ScoreRequest(
            tuple(_model_names(args)), args.weights_dir, RunOptions.from_args(args),
            EngineOptions.from_args(args), args.fusion, out_path, fmt, args.resume,
            args.threshold, args.frames_out, args.report, shown_command(args, args.argv),
            args.group, args.groups_out,
        )  # fmt: skip
        job = run_score_job(request, filenames, paths, listed)
    except (OSError, ValueError, RuntimeError, ImportError) as e:
        return fatal(e)
    if out_path is None:  # the terminal or a pipe
        data = render_output(job.table, job.detector_names, fmt, args.threshold)
        if fmt == "parquet":
            sys.stdout.buffer.write(data)
        else:
            sys.stdout.write(data.decode("utf-8"))
            sys.stdout.flush()
    if args.frames_out:
        print(f"{len(job.frames)} video frames -> {args.frames_out}", file=sys.stderr)
    if job.profile:
        print(job.profile, file=sys.stderr)
    if args.report:
        print(f"report -> {args.report}", file=sys.stderr)
    if args.group:
        sizes = job.table.groupby("group").size()
        line = f"{len(sizes)} groups, {int((sizes > 1).sum())} of 2 copies or more"
        if job.groups is not None:
            counts = job.groups["verdict"].replace("", "not scored").value_counts()
            line += ": " + ", ".join(f"{n} {v}" for v, n in counts.items())
            line += f" -> {args.groups_out}"
        print(line, file=sys.stderr)
    _summary(job.table, job.outcome.results, out_path, args.threshold, job.calibration)
    return _exit_status(args, job.outcome, len(paths))


def _run_streamed(args) -> int:
    """Ray Data from input shards to an output folder: nothing but counters in this process."""
    from dataclasses import replace

    from clipdet.options import RunOptions
    from clipdet.pipeline.routes import EngineOptions, stream_to_folder

    try:
        if args.calibration or args.frames_out:
            raise ValueError("--calibration and --frames_out write into output files, not an "
                             "output folder")  # fmt: skip
        if args.paths or args.report or args.format:
            raise ValueError("an output folder takes --in_csv or --in_wds, and no --report or "
                             "--format (it is Parquet parts)")  # fmt: skip
        if not args.out_csv or not (args.in_csv or args.in_wds):
            raise ValueError("--in_wds needs an output folder (-o scores/) and --engine ray")
        if args.groups_out or (args.group and args.group != "auto"):
            raise ValueError(
                "an output folder takes --group auto only (its groups are written beside the "
                "parts); --groups_out needs --calibration"
            )
        options = RunOptions.from_args(args)
        if args.group:
            options = replace(options, copy_keys=True)
        outcome = stream_to_folder(
            _model_names(args),
            args.weights_dir,
            options,
            EngineOptions.from_args(args),
            args.out_csv,
            args.fusion,
            in_list=args.in_csv,
            in_wds=args.in_wds,
            resume=args.resume,
        )
    except (OSError, ValueError, RuntimeError, ImportError) as e:
        return fatal(e)
    if args.group:  # a pass over the written parts
        from clipdet.evaluation.copies import group_folder

        try:
            written, groups = group_folder(args.out_csv)
        except (OSError, ValueError) as e:
            return fatal(e)
        print(f"{groups} groups of copies among {written} rows -> "
              f"{args.out_csv.rstrip('/')}/_groups.parquet", file=sys.stderr)  # fmt: skip
    before = f", {outcome.skipped_shards} complete before" if outcome.skipped_shards else ""
    print(f"{outcome.rows - outcome.failed} scored, {outcome.failed} failed -> {args.out_csv} "
          f"({outcome.shards} shards{before})", file=sys.stderr)  # fmt: skip
    return EXIT_FAILED_ROWS if args.strict and outcome.failed else 0


def _exit_status(args, outcome, n_images: int) -> int:
    if outcome.failure is not None:
        print(f"error: run stopped after {outcome.scored} of {n_images} images: "
              f"{outcome.failure}; add --resume to continue", file=sys.stderr)  # fmt: skip
        return EXIT_FATAL
    if outcome.interrupted:
        again = [*args.argv, *([] if args.resume else ["--resume"])]
        print(
            f"interrupted after {outcome.scored} of {n_images} images; unscored rows are "
            f"marked in the error column. Continue with:\n  {shown_command(args, again)}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    failed = sum(bool(e) for e in outcome.results.errors)
    return EXIT_FAILED_ROWS if args.strict and failed else 0


def _model_names(args) -> list[str]:
    names = model_names(args.models)
    if not names:
        from clipdet.models.weights import available_models

        valid = ", ".join(available_models(args.weights_dir))
        raise ValueError(f"no model given; valid choices: {valid}")
    return names


def _read_inputs(args):
    """(the list's table or None, file names as written, paths) from exactly one of --in_csv
    or positional paths."""
    from clipdet.files import read_list
    from clipdet.pipeline.inputs import collect_images

    if bool(args.in_csv) == bool(args.paths):
        raise ValueError(
            "give either --in_csv LIST.csv or image files/folders/patterns, not "
            + ("both" if args.in_csv else "neither")
        )
    if args.in_csv:
        table, paths = read_list(args.in_csv)
        return table, table[FILENAME_COLUMN].tolist(), paths
    paths = collect_images(args.paths)
    if not paths:
        raise ValueError(f"no image found in {' '.join(args.paths)}")
    return None, paths, paths


def _choose_output(args, n_images: int) -> tuple[str | None, str]:
    """(file or None for stdout, format). Few images named on the command line with no
    --out_csv print a table; otherwise results go to --out_csv (default ./results.csv), as
    CSV unless --format says otherwise (``-o -``: CSV on stdout, for pipes)."""
    out = args.out_csv
    on_screen = out is None and bool(args.paths) and n_images <= SCREEN_ROWS
    if out is None:
        out = "-" if on_screen else DEFAULT_OUT_CSV
    from clipdet.files import table_format

    path = None if out == "-" else out
    fmt = args.format or ("table" if on_screen else "csv" if path is None else table_format(path))
    if args.resume and path is None:
        raise ValueError("--resume needs an output file (--out_csv)")
    return path, fmt


def _summary(table, results, out_path, threshold, calibration=None) -> None:
    """Counts on stderr: scored, failed, flagged (with a calibration: synthetic, real and
    inconclusive, and the calibration); attribution decisions; the first failures."""
    from clipdet.pipeline.results import decision_scores, missing_images_hint

    failed = table[table[ERROR_COLUMN] != ""]
    score = decision_scores(table, results.detector_names)
    flagged = (
        ""
        if score is None
        else f", {int((score > threshold).sum())} flagged as synthetic (score > {threshold:g})"
    )
    if calibration is not None:  # the table holds its verdicts
        from clipdet.evaluation.verdicts import verdict_summary

        flagged = f": {verdict_summary(table)} ({calibration.describe()})"
    where = f" -> {out_path}" if out_path else ""
    print(
        f"{len(table) - len(failed)} scored, {len(failed)} failed{flagged}{where}",
        file=sys.stderr,
    )
    for name, _, _ in results.layout.attributors:  # "attributed by m: dalle3 4, real 2, ..."
        counts = table.loc[table[name] != "", name].value_counts()
        listed = ", ".join(f"{label} {n}" for label, n in counts.items())
        print(f"attributed by {name}: {listed or 'none'}", file=sys.stderr)
    hint = missing_images_hint(table[ERROR_COLUMN])
    if hint:
        print(hint, file=sys.stderr)
        return
    rows = list(zip(failed.iloc[:, 0], failed[ERROR_COLUMN], strict=True))
    for name, error in rows[:SHOWN_FAILURES]:
        print(f"  {name}: {error}", file=sys.stderr)
    if len(failed) > SHOWN_FAILURES:
        print(f"  ... and {len(failed) - SHOWN_FAILURES} more (see the error column)",
              file=sys.stderr)  # fmt: skip
