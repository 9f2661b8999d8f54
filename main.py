"""Score images with one or more detectors: one LLR per model (> 0 means synthetic). Attribution
models (train.py --task attribution) add the generator's name, or 'unknown', with probabilities.

Quick forms:
    python main.py suspicious.jpg            # one image: a readable table on the terminal
    python main.py photos/ "shots/*.png"      # folders (recursive) and glob patterns
Datasets, with the reference code's flags (grip-unina/ClipBased-SyntheticImageDetection):
    python main.py --in_csv list.csv --out_csv results.csv [--resume]
"""

import argparse
import logging
import shlex
import sys

from clipdet.constants import DEFAULT_FUSION, DEFAULT_MODELS, ERROR_COLUMN
from clipdet.evaluation.perturb import Perturbation
from clipdet.models.weights import available_models
from clipdet.pipeline.feature_cache import FeatureCache
from clipdet.pipeline.fusion import FUSIONS, NO_FUSION
from clipdet.pipeline.inputs import collect_images
from clipdet.pipeline.results import (
    add_verdicts,
    decision_scores,
    format_for_terminal,
    missing_images_hint,
    read_image_list,
    to_jsonl,
    write_text_atomic,
)
from clipdet.pipeline.resume import (
    PartialWriter,
    ResumeError,
    load_partial,
    partial_path,
    run_signature,
)
from clipdet.pipeline.scoring import (
    ResultTable,
    default_batch_size,
    default_device,
    default_num_workers,
    iter_scores,
    load_models,
)

logger = logging.getLogger("clipdet")

EXIT_FAILED_ROWS = 1
EXIT_FATAL = 2
EXIT_INTERRUPTED = 130
DEFAULT_OUT_CSV = "./results.csv"
NOT_SCORED = "not scored: run interrupted"
SCREEN_ROWS = 20  # up to this many images given as paths print a table by default


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("paths", nargs="*", help="image files, folders (recursive) or glob patterns")
    p.add_argument("--in_csv", "-i", default=None, help="CSV with a 'filename' column")
    p.add_argument(
        "--out_csv",
        "-o",
        default=None,
        help=f"output file, '-' for stdout (default: {DEFAULT_OUT_CSV}, or a table on the "
        f"terminal for up to {SCREEN_ROWS} images given as paths)",
    )
    p.add_argument(
        "--format",
        choices=("csv", "jsonl", "table"),
        default=None,
        help="output format (default: csv to a file, table to the terminal)",
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
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    device = args.device or default_device()
    try:
        if not names:
            raise ValueError(
                f"no model given; valid choices: {', '.join(available_models(args.weights_dir))}"
            )
        perturbation = Perturbation(args.perturb, args.perturb_seed) if args.perturb else None
        filenames, paths = _read_inputs(args)
        out_path, fmt = _choose_output(args, len(paths))
        models = load_models(
            names,
            args.weights_dir,
            args.backbone_weights,
            device,
            args.precision,
            args.tile_size,
            args.compile,
        )
        done, writer = _open_partial(args, out_path, paths, models)
    except (OSError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FATAL

    results = ResultTable(models, len(paths), error=NOT_SCORED)
    for index, result in done.items():
        results.set(index, result)
    todo = [i for i in range(len(paths)) if i not in done]
    if done:
        logger.info("resuming: %d of %d images already scored", len(done), len(paths))
    batch_size = args.batch_size or default_batch_size(device)
    interrupted = False
    try:
        for count, result in enumerate(
            iter_scores(
                models,
                [paths[i] for i in todo],
                device=device,
                batch_size=batch_size,
                num_workers=default_num_workers() if args.num_workers is None else args.num_workers,
                progress=not args.quiet,
                feature_cache=FeatureCache(args.feature_cache) if args.feature_cache else None,
                perturbation=perturbation.for_rows(todo) if perturbation else None,
            ),
            start=1,
        ):
            result.index = todo[result.index]
            results.set(result.index, result)
            if writer:
                writer.write(filenames[result.index], result)
                if count % batch_size == 0:
                    writer.flush()
    except KeyboardInterrupt:
        interrupted = True
    finally:  # whatever happens, what is done is written
        if writer:
            writer.flush()
            writer.close()
        table = results.to_frame(filenames, args.fusion)  # "none": no fusion column
        _write_output(table, results.detector_names, out_path, fmt, args.threshold)
    _report(table, results, out_path, args.threshold)
    if interrupted:
        scored = len(paths) - results.errors.count(NOT_SCORED)
        print(
            f"interrupted after {scored} of {len(paths)} images; unscored rows are marked in "
            f"the error column. Continue with:\n  {shlex.join(['python', 'main.py', *argv])}"
            + ("" if args.resume else " --resume"),
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if writer:
        writer.path.unlink(missing_ok=True)
    failed = sum(bool(e) for e in results.errors)
    return EXIT_FAILED_ROWS if args.strict and failed else 0


def _read_inputs(args) -> tuple[list[str], list[str]]:
    """Exactly one of --in_csv or positional paths."""
    if bool(args.in_csv) == bool(args.paths):
        raise ValueError(
            "give either --in_csv LIST.csv or image files/folders/patterns, not "
            + ("both" if args.in_csv else "neither")
        )
    if args.in_csv:
        return read_image_list(args.in_csv)
    paths = collect_images(args.paths)
    if not paths:
        raise ValueError(f"no image found in {' '.join(args.paths)}")
    return paths, paths


def _choose_output(args, n_images: int) -> tuple[str | None, str]:
    """(file or None for stdout, format). Few images named on the command line with no
    --out_csv print a table; otherwise results go to --out_csv (default ./results.csv), as
    CSV unless --format says otherwise (``-o -``: CSV on stdout, for pipes)."""
    out = args.out_csv
    on_screen = out is None and bool(args.paths) and n_images <= SCREEN_ROWS
    if out is None:
        out = "-" if on_screen else DEFAULT_OUT_CSV
    path = None if out == "-" else out
    fmt = args.format or ("table" if on_screen else "csv")
    if args.resume and path is None:
        raise ValueError("--resume needs an output file (--out_csv)")
    return path, fmt


def _open_partial(args, out_path, paths, models):
    if out_path is None:
        return {}, None
    partial = partial_path(out_path)
    signature = run_signature(paths, models) | {"perturb": [args.perturb, args.perturb_seed]}
    if args.resume and partial.exists():
        return load_partial(partial, signature, models), PartialWriter(partial, signature, True)
    if partial.exists():
        raise ResumeError(
            f"an interrupted run left {partial}: add --resume to continue it, or delete it"
        )
    return {}, PartialWriter(partial, signature, append=False)


def _write_output(table, names, out_path, fmt, threshold) -> None:
    if fmt == "csv":
        text = table.to_csv(index=False, lineterminator="\n")
    elif fmt == "jsonl":
        text = to_jsonl(add_verdicts(table, names, threshold))
    else:
        text = format_for_terminal(add_verdicts(table, names, threshold)) + "\n"
    if out_path is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_text_atomic(text, out_path)


def _report(table, results: ResultTable, out_path, threshold) -> None:
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
