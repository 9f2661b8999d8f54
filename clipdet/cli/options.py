"""Options shared by several commands, declared once, and the command line shown to users.

Each ``add_*`` function adds one argument group; the names are those of ``RunOptions`` and
``EngineOptions`` fields, so ``RunOptions.from_args`` reads them back. Nothing heavy is
imported here: ``--help`` answers at once.
"""

import argparse
import logging
import shlex
import sys

from clipdet.constants import (
    DEFAULT_FUSION,
    DEFAULT_MODELS,
    FUSION_NAMES,
    NO_FUSION,
    default_weights_dir,
)
from clipdet.options import default_num_workers

EXIT_OK = 0
EXIT_FAILED_ROWS = 1
EXIT_FATAL = 2
EXIT_INTERRUPTED = 130

# The reference code's script of each subcommand: users of the scripts are shown scripts.
SCRIPTS = {
    "score": "main.py",
    "metrics": "compute_metrics.py",
    "train": "train.py",
    "report": "report.py",
    "launder": "launder.py",
    "split": "split.py",
    "download": "data/download.py",
    "reproduce": "reproduce.py",
}
PRECISION_CHOICES = ("fp32", "bf16", "fp16", "auto")
DECODE_CHOICES = ("exact", "fast", "gpu")


def make_parser(subparsers, name: str, doc: str, help_line: str, run) -> argparse.ArgumentParser:
    """``clipdet NAME`` as a sub-parser of ``subparsers``, or the standalone parser of the
    command's script when ``subparsers`` is None; ``run(args) -> int`` carries it out. Either
    way ``args.program`` is the program the user ran (``("clipdet", NAME)`` or
    ``("python", SCRIPT)``)."""
    kwargs = dict(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    if subparsers is None:
        parser = argparse.ArgumentParser(prog=SCRIPTS[name].rsplit("/", 1)[-1], **kwargs)
        parser.set_defaults(program=("python", SCRIPTS[name]))
    else:
        parser = subparsers.add_parser(name, help=help_line, **kwargs)
        parser.set_defaults(program=("clipdet", name))
    parser.set_defaults(func=run)
    return parser


def run_standalone(add_parser, argv: list[str] | None) -> int:
    """A command run as its script (``python main.py ...``): parse ``argv`` (default: the
    process's arguments) with the standalone parser, then run it."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = add_parser().parse_args(argv)
    args.argv = argv
    return args.func(args)


def fatal(error: BaseException) -> int:
    """One ``error: ...`` line on stderr; the exit status of a fatal error."""
    print(f"error: {error}", file=sys.stderr)
    return EXIT_FATAL


def shown_command(args, argv, name: str | None = None) -> str:
    """The command line that runs ``argv`` with the program the user ran (``name``: another
    subcommand of the same program, e.g. reproduce's steps), quoted for a shell."""
    program = tuple(getattr(args, "program", ("python", SCRIPTS["score"])))
    if name is not None:
        program = ("clipdet", name) if program[0] == "clipdet" else ("python", SCRIPTS[name])
    return shlex.join([*program, *map(str, argv)])


def setup_logging(quiet: bool = False, verbose_name: bool = True) -> None:
    """One logging configuration for every command: INFO (progress notes) unless quiet."""
    fmt = "%(levelname)s %(name)s: %(message)s" if verbose_name else "%(levelname)s: %(message)s"
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format=fmt)
    # One warning per retried connection is noise: a download that fails says so once.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)


def add_quiet(parser) -> None:
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress, warnings only")


def add_model_options(parser, fusion: bool = True, models: str = ",".join(DEFAULT_MODELS)):
    group = parser.add_argument_group("models")
    group.add_argument(
        "--weights_dir", "-w", default=default_weights_dir(),
        help="folder of model folders <name>/config.yaml + weights "
        "(default: $CLIPDET_WEIGHTS_DIR, else ./weights)",
    )  # fmt: skip
    group.add_argument("--models", "-m", default=models, help="comma-separated model names")
    if fusion:
        group.add_argument(
            "--fusion", "-f", default=DEFAULT_FUSION, choices=[*FUSION_NAMES, NO_FUSION],
            help="how to fuse the models' LLRs into the 'fusion' column",
        )  # fmt: skip
    return group


def add_compute_options(parser, speed: bool = True):
    """Where and how fast features are computed (``RunOptions``): device, batch size,
    decoding workers, the CLIP checkpoint and the feature cache; with ``speed`` also
    precision, tiling, compilation and the decoding mode."""
    group = parser.add_argument_group("compute")
    group.add_argument("--device", "-d", default=None, help="torch device (default: cuda:0 or cpu)")
    group.add_argument(
        "--batch_size", type=int, default=None,
        help="images per forward pass (default: 4 on CPU, 32 on CUDA)",
    )  # fmt: skip
    group.add_argument(
        "--num_workers", type=int, default=None,
        help=f"image-decoding worker processes (default: {default_num_workers()})",
    )  # fmt: skip
    group.add_argument(
        "--backbone_weights", default=None,
        help="local weights file for every backbone named by a pretrained tag: an open_clip "
        "checkpoint for the CLIP models (default: hub cache or download)",
    )  # fmt: skip
    group.add_argument(
        "--feature_cache", default=None, metavar="DIR",
        help="reuse CLIP features across runs (keyed by file content and backbone)",
    )  # fmt: skip
    if not speed:
        return group
    group.add_argument(
        "--precision", default="fp32", choices=PRECISION_CHOICES,
        help="backbone weights' precision (auto: bf16 on CUDA or a CPU with native bf16)",
    )  # fmt: skip
    group.add_argument(
        "--tile_size", type=int, default=None,
        help="full-resolution models run on overlapping tiles of this core size in pixels "
        "(default 512; 0: whole image), giving the same LLR with bounded memory",
    )  # fmt: skip
    group.add_argument(
        "--compile", action="store_true", help="torch.compile the backbones (long GPU runs)"
    )
    group.add_argument(
        "--decode", choices=DECODE_CHOICES, default="exact",
        help="fast: JPEGs decoded at a reduced DCT scale (>= 448 px) when every model reads a "
        "224-px input; gpu: JPEGs decoded and preprocessed on the device (nvJPEG on CUDA), "
        "same condition; exact (the default) matches the reference",
    )  # fmt: skip
    group.add_argument(
        "--perturb", default=None, metavar="CHAIN",
        help='impair images in memory before scoring, e.g. "jpeg:75,resize:0.5" or a preset '
        "(see clipdet launder)",
    )  # fmt: skip
    group.add_argument("--perturb_seed", type=int, default=0, help="seed of --perturb's draws")
    return group


def add_video_options(parser, frames_out: bool = True):
    """How videos are read (``RunOptions.video_*``, ``animated``; see docs/video.md)."""
    from clipdet.pipeline.video_sampling import ANIMATED_MODES, DEFAULT_FRAMES, DEFAULT_TIMEOUT_S

    group = parser.add_argument_group("video", "mp4, mov, m4v, webm, mkv and avi files are "
                                      "scored one row per video (see docs/video.md)")  # fmt: skip
    group.add_argument(
        "--video_frames", type=int, default=DEFAULT_FRAMES, metavar="N",
        help=f"frames spread uniformly over each video's duration (default {DEFAULT_FRAMES})",
    )  # fmt: skip
    group.add_argument(
        "--video_fps", type=float, default=None, metavar="F",
        help="instead, one frame every 1/F seconds (at most 1024 per video)",
    )  # fmt: skip
    group.add_argument(
        "--video_timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
        help=f"seconds one video may take to decode before it becomes the row's error "
        f"(default {DEFAULT_TIMEOUT_S:g})",
    )  # fmt: skip
    group.add_argument(
        "--animated", choices=ANIMATED_MODES, default="image",
        help="animated GIF / WebP / PNG: their first frame as an image (the default, as the "
        "reference) or their frames as a video",
    )  # fmt: skip
    if frames_out:
        group.add_argument(
            "--frames_out", default=None, metavar="FILE",
            help="also write one row per scored frame (filename, frame, time_s, each model's "
            "LLR, fusion) to this CSV / Parquet / JSON-lines file",
        )  # fmt: skip
    return group


def add_provenance_options(parser):
    """Evidence read from the file beside the pixel scores (``RunOptions.provenance``)."""
    group = parser.add_argument_group("provenance", "what generators and signers write into "
                                      "the file (see docs/provenance.md)")  # fmt: skip
    group.add_argument(
        "--provenance", action="store_true",
        help="add 'provenance' (C2PA, IPTC, WebUI/ComfyUI parameters, EXIF, invisible "
        "watermarks) and 'provenance_generator' columns; LLRs do not change (on with --report)",
    )  # fmt: skip
    group.add_argument(
        "--c2pa_trust", default=None, metavar="PEM",
        help="trust anchors for C2PA signers (without them a valid signature is 'untrusted')",
    )  # fmt: skip
    return group


def add_engine_options(parser):
    """The route of a scoring run (``routes.EngineOptions``)."""
    group = parser.add_argument_group("engine", "where the stages run (see docs/scaling.md)")
    group.add_argument(
        "--engine", choices=("local", "ray"), default="local",
        help="local: this process and its decoding workers; ray: Ray Data, decoding in CPU "
        "tasks and inference in an actor pool (needs `pip install ray[data]`)",
    )  # fmt: skip
    group.add_argument(
        "--ray_address", default=None,
        help="Ray cluster to join ('auto', 'ray://HOST:10001'; default: a local Ray instance)",
    )  # fmt: skip
    group.add_argument(
        "--workers", type=int, default=None, help="infer actors (default: one per GPU, or 1)"
    )
    group.add_argument(
        "--gpus_per_worker", type=float, default=None,
        help="GPUs per infer actor (default: 1 if the cluster has GPUs, else 0)",
    )  # fmt: skip
    group.add_argument(
        "--cpus_per_worker", type=float, default=1.0,
        help="Ray CPUs per infer actor (on CPU also its torch threads, rounded up)",
    )  # fmt: skip
    group.add_argument(
        "--block_rows", type=int, default=None,
        help="rows per resumable block, each written whole as it completes (the Ray engine "
        "and outputs at a URL keep blocks; default 1000)",
    )  # fmt: skip
    group.add_argument(
        "--profile", action="store_true",
        help="print where the time went: reading + decoding, preprocessing, host->device "
        "copies, backbones, heads, writing (local engine)",
    )  # fmt: skip
    group.add_argument(
        "--maps", default=None, metavar="DIR",
        help="save each full-resolution detector's evidence map (.npy, its mean is the LLR) "
        "and a heat-map overlay (.png) per image into DIR (local engine)",
    )  # fmt: skip
    return group


def optional_flags(**flags) -> list[str]:
    """``--key value`` for each flag that has a value (True: ``--key`` alone)."""
    argv = []
    for key, value in flags.items():
        if value is True:
            argv.append(f"--{key}")
        elif value is not None and value is not False:
            argv += [f"--{key}", str(value)]
    return argv


def model_names(text: str) -> list[str]:
    """The names of a comma-separated ``--models`` value."""
    return [n.strip() for n in text.split(",") if n.strip()]
