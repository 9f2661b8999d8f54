"""What the command shows of a result table: verdicts at a threshold, the terminal table, and
the hint for a run whose images were never downloaded."""

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from clipdet.constants import ERROR_COLUMN, FUSION_COLUMN, REAL, SYNTHETIC, VERDICT_COLUMN
from clipdet.models.attribution import attribution_column_set


def decision_scores(table: pd.DataFrame, model_names: Sequence[str]) -> pd.Series | None:
    """The score a verdict reads: the fusion column, else the largest detector LLR (None when
    there is no detector)."""
    if FUSION_COLUMN in table.columns:
        return table[FUSION_COLUMN]
    if not model_names:
        return None
    return table[list(model_names)].max(axis=1, skipna=False)


def add_verdicts(table: pd.DataFrame, model_names: Sequence[str], threshold: float) -> pd.DataFrame:
    """``synthetic`` / ``real`` at ``threshold``; empty where the image could not be scored.
    A table without detectors (attribution models only) is returned as it is."""
    score = decision_scores(table, model_names)
    if score is None:
        return table
    verdict = np.where(score > threshold, SYNTHETIC, REAL).astype(object)
    verdict[~np.isfinite(score.to_numpy(dtype=float))] = ""
    out = table.copy()
    out.insert(len(out.columns) - 1, VERDICT_COLUMN, verdict)
    return out


def format_for_terminal(table: pd.DataFrame) -> str:
    """An aligned, human-readable table: LLRs with a sign and 2 decimals, attribution
    probabilities and scores with 3."""
    shown = table.copy()
    attribution = attribution_column_set(table.columns)
    for column in shown.columns:
        if pd.api.types.is_float_dtype(shown[column]):
            style = ".3f" if column in attribution else "+.2f"
            shown[column] = [("" if np.isnan(v) else f"{v:{style}}") for v in shown[column]]
    return shown.to_string(index=False)


DOWNLOAD_HINT = "python data/download.py synthbuster (or synthwildx, grip_test; see data/README.md)"


def missing_images_hint(errors: Sequence[str]) -> str | None:
    """One line for a run where every image failed as not found: most likely the dataset was
    never downloaded (or the list sits in another folder than its images)."""
    errors = [str(e) for e in errors]
    if errors and all("file not found" in e for e in errors):
        return (
            f"none of the {len(errors)} images was found: download the dataset first, e.g. "
            f"{DOWNLOAD_HINT}; paths in a list are relative to the list's folder"
        )
    return None


def missing_images_hint_for_file(scores_csv: str | os.PathLike) -> str | None:
    """``missing_images_hint`` of a scores file's error column (None if it has none)."""
    try:
        table = pd.read_csv(scores_csv, usecols=[ERROR_COLUMN], keep_default_na=False)
    except (OSError, ValueError):
        return None
    return missing_images_hint(table[ERROR_COLUMN])
