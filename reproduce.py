"""Reproduce the paper's Synthbuster table: download, score, launder, score again, tabulate.

    python reproduce.py               # official detectors on Synthbuster, clean + postprocessed
    python reproduce.py --limit 100   # a quick check on the first 100 images of each typ
    python reproduce.py --train       # also a head trained on grip_train, beside clipdet_latent10k

Each step runs one of the documented commands (data/download.py, train.py, main.py, launder.py,
compute_metrics.py) with the flags shown in the report, so any step can be re-run by hand.
The report (<out>/reproduce.md) holds AUC / balanced accuracy per generator for every model,
clean and after `launder.py --ops postprocessed`, the command lines and the versions used.
"""

import argparse
import logging
import shlex
import sys
from pathlib import Path

import compute_metrics
import launder
import main as score
import train
from clipdet.datasets import DATA_DIR, download_dataset
from clipdet.evaluation.reproduction import (
    list_is_complete,
    reproduction_report,
    subset_list,
    versions,
)

DEFAULT_MODELS = "clipdet_latent10k,clipdet_latent10k_plus,Corvi2023"
TRAINED_BESIDE = "clipdet_latent10k"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default=str(DATA_DIR), help="dataset folder (default data/)")
    p.add_argument("--out", default="reproduce", help="folder for scores, copies and the report")
    p.add_argument("--weights_dir", "-w", default="./weights")
    p.add_argument("--models", "-m", default=DEFAULT_MODELS, help="comma-separated model names")
    p.add_argument("--fusion", "-f", default="soft_or_prob")
    p.add_argument("--ops", default="postprocessed", help="launder.py chain for the second pass")
    p.add_argument("--seed", type=int, default=0, help="launder.py seed")
    p.add_argument("--limit", type=int, default=None, help="only the first N images of each typ")
    p.add_argument("--train", action="store_true", help="train a head on grip_train too")
    p.add_argument("--train_name", default="clipdet_grip_train", help="name of the trained head")
    p.add_argument("--train_arch", default=None, help="train.py --arch (default: train.py's)")
    p.add_argument("--mirror", default=None, help="data/download.py --mirror")
    p.add_argument("--coco", default=None, help="data/download.py --coco (grip_train's real half)")
    p.add_argument("--device", "-d", default=None)
    p.add_argument("--batch_size", type=int, default=None)
    p.add_argument("--num_workers", type=int, default=None)
    p.add_argument("--backbone_weights", default=None, help="local open_clip checkpoint")
    p.add_argument("--quiet", "-q", action="store_true")
    return p


class Steps:
    """Runs CLI entry points in this process and records their command lines."""

    def __init__(self):
        self.commands: list[str] = []

    def run(self, script: str, module, argv: list[str]) -> None:
        self.commands.append(shlex.join(["python", script, *argv]))
        logging.getLogger("reproduce").info("$ %s", self.commands[-1])
        code = module.main(argv)
        if code not in (0, score.EXIT_FAILED_ROWS):  # failed rows are in the scores file
            raise RuntimeError(f"step failed (exit {code}): {self.commands[-1]}")


def _dataset(name: str, list_name: str, args, steps: Steps) -> Path:
    """The list of dataset ``name`` under --data, downloaded first if any file is missing."""
    listed = Path(args.data) / list_name
    if not list_is_complete(listed):
        argv = [name, "--dest", args.data, *_optional(mirror=args.mirror, coco=args.coco)]
        steps.commands.append(shlex.join(["python", "data/download.py", *argv]))
        listed = download_dataset(name, args.data, mirror=args.mirror, coco=args.coco,
                                  progress=not args.quiet)  # fmt: skip
    return listed


def _optional(**flags) -> list[str]:
    """``--key value`` for each flag that has a value."""
    return [
        x for key, value in flags.items() if value is not None for x in (f"--{key}", str(value))
    ]


def _train(args, common: list[str], models: list[str], steps: Steps) -> list[str]:
    """Train --train_name on grip_train; the model list with it beside clipdet_latent10k."""
    train_list = _dataset("grip_train", "grip_train.csv", args, steps)
    argv = ["-i", str(train_list), "-w", args.weights_dir, "-n", args.train_name]
    steps.run("train.py", train, [*argv, *_optional(arch=args.train_arch), *common])
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
    steps.run("main.py", score, ["-i", str(test_list), "-o", str(runs["clean"][1]), *flags])
    launder_argv = ["-i", str(test_list), "-o", str(copies), "--ops", args.ops]
    steps.run("launder.py", launder, [*launder_argv, "--seed", str(args.seed), "-q"])
    in_csv, scores = runs[args.ops]
    steps.run("main.py", score, ["-i", str(in_csv), "-o", str(scores), *flags])
    for (in_csv, scores), tab in zip(
        runs.values(), ("metrics.csv", "metrics_laundered.csv"), strict=True
    ):
        argv = ["-i", str(in_csv), "-o", str(scores), "--metrics", "auc,acc"]
        steps.run("compute_metrics.py", compute_metrics, [*argv, "--save_tab", str(out / tab)])
    return runs


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = _optional(
        device=args.device,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        backbone_weights=args.backbone_weights,
    )
    common += ["-q"] if args.quiet else []
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    steps = Steps()
    try:
        test_list = _dataset("synthbuster", "commercial_tools.csv", args, steps)
        if args.limit:
            test_list = subset_list(test_list, args.limit, out / "list.csv")
        if args.train:
            models = _train(args, common, models, steps)
        runs = _score_and_measure(test_list, out, models, args, common, steps)
        invocation = shlex.join(["python", "reproduce.py", *argv])
        report = reproduction_report(runs, models, steps.commands, versions(args.device),
                                     invocation)  # fmt: skip
    except (OSError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    (out / "reproduce.md").write_text(report, encoding="utf-8")
    print(report)
    print(f"report written to {out / 'reproduce.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
