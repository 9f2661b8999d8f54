"""The reproduction report (reproduce.py): AUC / balanced accuracy per generator for each model
and condition, the command lines that produced them and the versions used."""

import os
import platform
import subprocess
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import pandas as pd

from clipdet import __version__
from clipdet.constants import FILENAME_COLUMN, TYPE_COLUMN
from clipdet.evaluation.metrics import AVERAGE_COLUMN, compute_metric_table, load_evaluation_data
from clipdet.files import read_list

PACKAGES = ("torch", "torchvision", "open_clip_torch", "numpy", "scikit-learn", "pillow", "pandas")


def list_is_complete(in_csv: str | os.PathLike) -> bool:
    """Whether ``in_csv`` exists and every file it lists is on disk."""
    if not Path(in_csv).is_file():
        return False
    _, paths = read_list(in_csv)
    return bool(paths) and all(Path(p).is_file() for p in paths)


def subset_list(in_csv: str | os.PathLike, per_typ: int, out: str | os.PathLike) -> Path:
    """The first ``per_typ`` rows of each typ of ``in_csv``, written to ``out`` with absolute
    paths (so the new list can live anywhere)."""
    if per_typ < 1:
        raise ValueError(f"--limit must be at least 1, got {per_typ}")
    table, paths = read_list(in_csv)
    table = table.assign(**{FILENAME_COLUMN: paths})
    table = table.groupby(TYPE_COLUMN, sort=False).head(per_typ)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    return out


def versions(device: str | None = None) -> dict[str, str]:
    """clipdet, Python, the packages the numbers depend on, the git commit and the device."""
    found = {"clipdet": __version__, "python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    found["commit"] = _git_commit() or "unknown"
    if device is None:
        import torch

        device = "cuda:0" if torch.cuda.is_available() else "cpu"
    found["device"] = device
    found["platform"] = f"{platform.system()} {platform.machine()}"
    return found


def _git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def reproduction_table(
    conditions: Mapping[str, tuple[str | os.PathLike, str | os.PathLike]],
) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Columns (generators, then AVG) and rows ``model · condition`` with cells
    ``AUC / bAcc`` in percent, from each condition's (labelled list, scores file)."""
    tables = {}
    for condition, (in_csv, scores) in conditions.items():
        data = load_evaluation_data(in_csv, scores)
        tables[condition] = (compute_metric_table(data, "auc"), compute_metric_table(data, "acc"))
    first_auc = next(iter(tables.values()))[0]
    columns = [c for c in first_auc.columns if c != AVERAGE_COLUMN] + [AVERAGE_COLUMN]
    rows = []
    for model in first_auc.index:
        for condition, (auc, acc) in tables.items():
            if model not in auc.index:
                continue
            cells = [_cell(auc, acc, model, c) for c in columns]
            rows.append((f"{model} · {condition}", cells))
    return columns, rows


def _cell(auc: pd.DataFrame, acc: pd.DataFrame, model: str, column: str) -> str:
    if column not in auc.columns:
        return "–"
    return f"{100 * auc.loc[model, column]:.1f} / {100 * acc.loc[model, column]:.1f}"


def reproduction_report(
    conditions: Mapping[str, tuple[str | os.PathLike, str | os.PathLike]],
    models: Sequence[str],
    commands: Sequence[str],
    found_versions: Mapping[str, str],
    invocation: str,
) -> str:
    """The Markdown report: one table (rows model · condition, columns generators), then the
    command lines (``invocation`` ran them all) and the versions."""
    columns, rows = reproduction_table(conditions)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# clipdet reproduction: Synthbuster",
        "",
        f"{when}. Models: {', '.join(models)}. Cells: AUC / balanced accuracy (threshold "
        "LLR 0), in percent; AVG is the mean over generators.",
        "",
        "| model · condition | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
        *(f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows),
        "",
        "## Commands",
        "",
        f"Run by `{invocation}`; the steps:",
        "",
        "```bash",
        *commands,
        "```",
        "",
        "## Versions",
        "",
        *(f"- {name}: {value}" for name, value in found_versions.items()),
        "",
    ]
    return "\n".join(lines)
