"""Reproduce the paper's Synthbuster table: download, score, launder, score again, tabulate.

    clipdet reproduce               # official detectors on Synthbuster, clean + postprocessed
    clipdet reproduce --limit 100   # a quick check on the first 100 images of each typ
    clipdet reproduce --train       # also a head trained on grip_train, beside clipdet_latent10k

Each step runs one of the documented commands (download, train, score, launder, metrics) with
the flags shown in the report, so any step can be re-run by hand. The report
(<out>/reproduce.md) holds AUC / balanced accuracy per generator for every model, clean and
after `launder --ops postprocessed`, the command lines and the versions used.
`python reproduce.py` takes the same flags.
"""

import logging
import sys
from pathlib import Path

from clipdet.cli.options import (
    EXIT_FAILED_ROWS,
    add_compute_options,
    add_model_options,
    add_quiet,
    fatal,
    make_parser,
    model_names,
    optional_flags,
    run_standalone,
    setup_logging,
    shown_command,
)

DEFAULT_MODELS = "clipdet_latent10k,clipdet_latent10k_plus,Corvi2023"
TRAINED_BESIDE = "clipdet_latent10k"
logger = logging.getLogger("clipdet.reproduce")


def add_parser(subparsers=None):
    p = make_parser(subparsers, "reproduce", __doc__, "the paper's Synthbuster table", run)
    p.add_argument("--data", default=None, help="dataset folder (default: data/)")
    p.add_argument("--out", default="reproduce", help="folder for scores, copies and the report")
    p.add_argument("--ops", default="postprocessed", help="launder chain for the second pass")
    p.add_argument("--seed", type=int, default=0, help="launder seed")
    p.add_argument("--limit", type=int, default=None, help="only the first N images of each typ")
    p.add_argument("--train", action="store_true", help="train a head on grip_train too")
    p.add_argument("--train_name", default="clipdet_grip_train", help="name of the trained head")
    p.add_argument("--train_arch", default=None, help="train --arch (default: train's)")
    p.add_argument("--mirror", default=None, help="download --mirror")
    p.add_argument("--coco", default=None, help="download --coco (grip_train's real half)")
    add_model_options(p, models=DEFAULT_MODELS)
    add_compute_options(p, speed=False)
    add_quiet(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """``python reproduce.py ...``: the same as ``clipdet reproduce ...``."""
    return run_standalone(add_parser, argv)


class Steps:
    """Runs the commands' entry points in this process and records their command lines, in
    the form of the program the user ran (``clipdet score …`` or ``python main.py …``)."""

    def __init__(self, args):
        self.args = args
        self.commands: list[str] = []

    def record(self, name: str, argv: list[str]) -> None:
        self.commands.append(shown_command(self.args, argv, name))
        logger.info("$ %s", self.commands[-1])

    def run(self, name: str, argv: list[str]) -> None:
        from importlib import import_module

        self.record(name, argv)
        code = import_module(f"clipdet.cli.{name}").main(argv)
        if code not in (0, EXIT_FAILED_ROWS):  # failed rows are in the scores file
            raise RuntimeError(f"step failed (exit {code}): {self.commands[-1]}")


def run(args) -> int:
    setup_logging(args.quiet)
    from clipdet.datasets import DATA_DIR
    from clipdet.evaluation.reproduction import reproduction_report, subset_list, versions

    args.data = args.data or str(DATA_DIR)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = optional_flags(
        device=args.device,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        backbone_weights=args.backbone_weights,
        feature_cache=args.feature_cache,
    ) + (["-q"] if args.quiet else [])
    models = model_names(args.models)
    steps = Steps(args)
    try:
        test_list = _dataset("synthbuster", "commercial_tools.csv", args, steps)
        if args.limit:
            test_list = subset_list(test_list, args.limit, out / "list.csv")
        if args.train:
            models = _train(args, common, models, steps)
        runs = _score_and_measure(test_list, out, models, args, common, steps)
        report = reproduction_report(
            runs, models, steps.commands, versions(args.device), shown_command(args, args.argv)
        )
    except (OSError, ValueError, RuntimeError) as e:
        return fatal(e)
    (out / "reproduce.md").write_text(report, encoding="utf-8")
    print(report)
    print(f"report written to {out / 'reproduce.md'}", file=sys.stderr)
    return 0


def _dataset(name: str, list_name: str, args, steps: Steps) -> Path:
    """The list of dataset ``name`` under --data, downloaded first if any file is missing."""
    from clipdet.datasets import download_dataset
    from clipdet.evaluation.reproduction import list_is_complete

    listed = Path(args.data) / list_name
    if not list_is_complete(listed):
        steps.record(
            "download",
            [name, "--dest", args.data, *optional_flags(mirror=args.mirror, coco=args.coco)],
        )
        listed = download_dataset(
            name, args.data, mirror=args.mirror, coco=args.coco, progress=not args.quiet
        )
    return listed


def _train(args, common: list[str], models: list[str], steps: Steps) -> list[str]:
    """Train --train_name on grip_train; the model list with it beside clipdet_latent10k."""
    train_list = _dataset("grip_train", "grip_train.csv", args, steps)
    argv = ["-i", str(train_list), "-w", args.weights_dir, "-n", args.train_name]
    steps.run("train", [*argv, *optional_flags(arch=args.train_arch), *common])
    models = [m for m in models if m != args.train_name]
    at = models.index(TRAINED_BESIDE) + 1 if TRAINED_BESIDE in models else len(models)
    return [*models[:at], args.train_name, *models[at:]]


def _score_and_measure(test_list: Path, out: Path, models, args, common, steps) -> dict:
    """Score the list and its laundered copies; {condition: (list, scores)}."""
    flags = ["-w", args.weights_dir, "-m", ",".join(models), "-f", args.fusion, *common]
    copies = out / args.ops.replace(":", "_").replace(",", "+").replace("/", "_")
    runs = {
        "clean": (test_list, out / "scores.csv"),
        args.ops: (copies / "list.csv", out / "scores_laundered.csv"),
    }
    steps.run("score", ["-i", str(test_list), "-o", str(runs["clean"][1]), *flags])
    launder_argv = ["-i", str(test_list), "-o", str(copies), "--ops", args.ops]
    steps.run("launder", [*launder_argv, "--seed", str(args.seed), "-q"])
    in_csv, scores = runs[args.ops]
    steps.run("score", ["-i", str(in_csv), "-o", str(scores), *flags])
    for (in_csv, scores), tab in zip(
        runs.values(), ("metrics.csv", "metrics_laundered.csv"), strict=True
    ):
        argv = ["-i", str(in_csv), "-o", str(scores), "--metrics", "auc,acc"]
        steps.run("metrics", [*argv, "--save_tab", str(out / tab)])
    return runs
