"""Score images with one or more detectors: one LLR per model (> 0 means synthetic). Attribution
models (train.py --task attribution) add the generator's name, or 'unknown', with probabilities.

Quick forms:
    python main.py suspicious.jpg            # one image: a readable table on the terminal
    python main.py photos/ "shots/*.png"      # folders (recursive) and glob patterns
Datasets, with the reference code's flags (grip-unina/ClipBased-SyntheticImageDetection):
    python main.py --in_csv list.csv --out_csv results.csv [--resume]
On a Ray cluster, lists and images anywhere (local, s3://, gs://, http(s)://):
    python main.py --engine ray --in_csv s3://bucket/list.csv --out_csv s3://bucket/scores.parquet
The output's format follows its extension: .csv, .parquet or .jsonl.
"""

import argparse
import logging
import shlex
import sys
import time

from clipdet.constants import (
    DEFAULT_FUSION,
    DEFAULT_MODELS,
    ERROR_COLUMN,
    FILENAME_COLUMN,
    FUSION_NAMES,
    NO_FUSION,
    default_weights_dir,
)
from clipdet.options import RunOptions, default_num_workers

# Heavy modules (torch, open_clip, pandas) are imported once the arguments are read, so that
# --help and argument errors answer at once.

logger = logging.getLogger("clipdet")

EXIT_FAILED_ROWS = 1
EXIT_FATAL = 2
EXIT_INTERRUPTED = 130
DEFAULT_OUT_CSV = "./results.csv"
SCREEN_ROWS = 20  # up to this many images given as paths print a table by default


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("paths", nargs="*", help="image files, folders (recursive) or glob patterns")
    p.add_argument("--in_csv", "-i", default=None, help="CSV with a 'filename' column")
    p.add_argument(
        "--out_csv",
        "-o",
        default=None,
        help=f"output file or URL, '-' for stdout (default: {DEFAULT_OUT_CSV}, or a table on "
        f"the terminal for up to {SCREEN_ROWS} images given as paths)",
    )
    p.add_argument(
        "--format",
        choices=("csv", "jsonl", "parquet", "table"),
        default=None,
        help="output format (default: by the output's extension, .csv / .jsonl / .parquet; "
        "csv for other names; a table on the terminal)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=0.0,
        help="verdict 'synthetic' above this score (fusion, else the largest LLR)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run to the same --out_csv, skipping rows already scored",
    )
    p.add_argument(
        "--weights_dir", "-w", default=default_weights_dir(), help="folder of model folders"
    )
    p.add_argument(
        "--models", "-m", default=",".join(DEFAULT_MODELS), help="comma-separated model names"
    )
    p.add_argument(
        "--fusion",
        "-f",
        default=DEFAULT_FUSION,
        choices=[*FUSION_NAMES, NO_FUSION],
        help="how to fuse the models' LLRs into the 'fusion' column",
    )
    p.add_argument("--device", "-d", default=None, help="torch device (default: cuda:0 or cpu)")
    p.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "bf16", "fp16", "auto"),
        help="backbone weights' precision (auto: bf16 on CUDA or a CPU with native bf16)",
    )
    p.add_argument(
        "--tile_size",
        type=int,
        default=None,
        help="full-resolution models run on overlapping tiles of this core size in pixels "
        "(default 512; 0: whole image), giving the same LLR with bounded memory",
    )
    p.add_argument(
        "--compile", action="store_true", help="torch.compile the backbones (long GPU runs)"
    )
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
    p.add_argument(
        "--perturb",
        default=None,
        metavar="CHAIN",
        help='impair images in memory before scoring, e.g. "jpeg:75,resize:0.5" or a preset '
        "(see launder.py)",
    )
    p.add_argument("--perturb_seed", type=int, default=0, help="seed of --perturb's draws")
    ray = p.add_argument_group("engine", "where the stages run (see README, 'Scaling out')")
    ray.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: this process and its decoding workers; ray: Ray Data, decoding in CPU "
        "tasks and inference in an actor pool (needs `pip install ray[data]`)",
    )
    ray.add_argument(
        "--ray_address",
        default=None,
        help="Ray cluster to join ('auto', 'ray://HOST:10001'; default: a local Ray instance)",
    )
    ray.add_argument(
        "--workers", type=int, default=None, help="infer actors (default: one per GPU, or 1)"
    )
    ray.add_argument(
        "--gpus_per_worker",
        type=float,
        default=None,
        help="GPUs per infer actor (default: 1 if the cluster has GPUs, else 0)",
    )
    ray.add_argument(
        "--cpus_per_worker",
        type=float,
        default=1.0,
        help="Ray CPUs per infer actor (on CPU also its torch threads, rounded up)",
    )
    ray.add_argument(
        "--block_rows",
        type=int,
        default=None,
        help="rows per resumable block, each written whole as it completes (the Ray engine "
        "and outputs at a URL keep blocks; default 1000)",
    )
    p.add_argument(
        "--decode",
        choices=("exact", "fast", "gpu"),
        default="exact",
        help="fast: JPEGs decoded at a reduced DCT scale (>= 448 px on the shorter side) when "
        "every model reads a 224-px input: several times faster on large photos, LLRs close "
        "but not identical; gpu: JPEGs decoded and preprocessed on the device (nvJPEG on "
        "CUDA), same condition; exact (the default) matches the reference",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="print where the time went: reading + decoding, preprocessing, host->device "
        "copies, backbones, heads, writing (local engine)",
    )
    p.add_argument(
        "--maps",
        default=None,
        metavar="DIR",
        help="save each full-resolution detector's evidence map (.npy, its mean is the LLR) "
        "and a heat-map overlay (.png) per image into DIR (local engine)",
    )
    p.add_argument(
        "--report",
        default=None,
        metavar="HTML",
        help="write an HTML report of the run (see report.py), with the maps of --maps",
    )
    p.add_argument("--strict", action="store_true", help="exit 1 if any image failed")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar, warnings only")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from clipdet.pipeline.run import open_partial, run_scoring

    try:
        names = _model_names(args)
        listed, filenames, paths = _read_inputs(args)
        out_path, fmt = _choose_output(args, len(paths))
        models, options, scores = _engine(args, names, paths)
        map_writer, profile = None, None
        if args.maps or args.profile:
            from clipdet.evaluation.evidence_maps import MapWriter
            from clipdet.pipeline.profile import Profile
            from clipdet.pipeline.scoring import iter_scores

            if args.engine != "local":
                raise ValueError("--maps and --profile work with the local engine only")
            map_writer = MapWriter(args.maps) if args.maps else None
            profile = Profile(options.device) if args.profile else None

            def scores(rows):
                found = iter_scores(models, paths, options, rows, bool(map_writer), profile)
                return map_writer.wrap(found, paths) if map_writer else found

        blocks = args.block_rows if args.block_rows else 0 if args.engine == "ray" else None
        done, writer = open_partial(out_path, paths, models, options, args.resume, blocks)
    except (OSError, ValueError, RuntimeError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FATAL

    outcome = run_scoring(
        models, filenames, paths, options, args.fusion, done, writer, scores, profile
    )
    started = time.perf_counter()
    _write_output(outcome.table, outcome.results.detector_names, out_path, fmt, args.threshold)
    if profile is not None:
        profile.add("writing", time.perf_counter() - started)
        print(profile.report(), file=sys.stderr)
    if map_writer is not None:
        map_writer.write_manifest(filenames)
    if args.report:
        _html_report(args, argv, outcome.table, listed, paths)
    _report(outcome.table, outcome.results, out_path, args.threshold)
    if outcome.failure is not None:
        print(f"error: run stopped after {outcome.scored} of {len(paths)} images: "
              f"{outcome.failure}; add --resume to continue", file=sys.stderr)  # fmt: skip
        return EXIT_FATAL
    if outcome.interrupted:
        print(
            f"interrupted after {outcome.scored} of {len(paths)} images; unscored rows are "
            "marked in the error column. Continue with:\n  "
            + shlex.join(["python", "main.py", *argv])
            + ("" if args.resume else " --resume"),
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    failed = sum(bool(e) for e in outcome.results.errors)
    return EXIT_FAILED_ROWS if args.strict and failed else 0


def _engine(args, names, paths):
    """(models, resolved options, scores or None for the local engine). With Ray the driver
    loads the models on CPU (the prepare stage and the run's signature need them); the infer
    actors load their own."""
    from clipdet.pipeline.scoring import load_models

    options = RunOptions.from_args(args)
    if args.engine == "local":
        options = options.resolved()
        return load_models(names, args.weights_dir, options), options, None
    from dataclasses import replace

    from clipdet.pipeline.engine import with_progress
    from clipdet.pipeline.ray_engine import RayEngine, RayOptions
    from clipdet.pipeline.scoring import scoring_stages

    ray_options = RayOptions(
        args.ray_address, args.workers, args.gpus_per_worker, args.cpus_per_worker
    )
    engine = RayEngine(ray_options, args.device)
    options = engine.run_options(options)
    models = load_models(names, args.weights_dir, replace(options, device="cpu", compile=False))
    preparer, _ = scoring_stages(models, options)

    def scores(rows):
        results = engine.iter_scores(preparer, models, args.weights_dir, paths, rows, options)
        return with_progress(results, len(rows), options.progress)

    return models, options, scores


def _html_report(args, argv, table, listed, paths) -> None:
    """The report of this run; ``listed``: the input list's table (its labels), or None."""
    from clipdet.evaluation.html_report import ReportInputs, write_report

    inputs = ReportInputs(
        table, paths, listed, args.maps, args.threshold,
        command=shlex.join(["python", "main.py", *argv]), fusion=args.fusion,
    )  # fmt: skip
    write_report(inputs, args.report)
    print(f"report -> {args.report}", file=sys.stderr)


def _model_names(args) -> list[str]:
    names = [n.strip() for n in args.models.split(",") if n.strip()]
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


def _write_output(table, names, out_path, fmt, threshold) -> None:
    """CSV and Parquet hold the table as it is; JSON lines and the terminal table add the
    verdict. A local file is replaced atomically, an object uploaded at once."""
    from clipdet import storage
    from clipdet.files import table_bytes
    from clipdet.pipeline.results import add_verdicts, format_for_terminal

    if fmt == "table":
        data = (format_for_terminal(add_verdicts(table, names, threshold)) + "\n").encode()
    elif fmt == "jsonl":
        data = table_bytes(add_verdicts(table, names, threshold), fmt)
    else:
        data = table_bytes(table, fmt)
    if out_path is None and fmt == "parquet":
        sys.stdout.buffer.write(data)
    elif out_path is None:
        sys.stdout.write(data.decode("utf-8"))
        sys.stdout.flush()
    else:
        storage.write_bytes(out_path, data)


def _report(table, results, out_path, threshold) -> None:
    from clipdet.pipeline.results import decision_scores, missing_images_hint

    failed = table[table[ERROR_COLUMN] != ""]
    score = decision_scores(table, results.detector_names)
    flagged = (
        ""
        if score is None
        else f", {int((score > threshold).sum())} flagged as synthetic (score > {threshold:g})"
    )
    where = f" -> {out_path}" if out_path else ""
    print(
        f"{len(table) - len(failed)} scored, {len(failed)} failed{flagged}{where}",
        file=sys.stderr,
    )
    for model in results.attributors:  # e.g. "attributed by m: dalle3 4, real 2, unknown 1"
        counts = table.loc[table[model.name] != "", model.name].value_counts()
        listed = ", ".join(f"{label} {n}" for label, n in counts.items())
        print(f"attributed by {model.name}: {listed or 'none'}", file=sys.stderr)
    hint = missing_images_hint(table[ERROR_COLUMN])
    if hint:
        print(hint, file=sys.stderr)
        return
    for name, error in list(zip(failed.iloc[:, 0], failed[ERROR_COLUMN], strict=True))[:20]:
        print(f"  {name}: {error}", file=sys.stderr)
    if len(failed) > 20:
        print(f"  ... and {len(failed) - 20} more (see the error column)", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
