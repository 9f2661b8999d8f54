"""The copies' evidence added up: one row per group of copies of one picture (QuAD's rule: a
group's LLR for a detector is the sum of its members' quality-calibrated LLRs, which a
calibration with --quality gives; without one, the members' own LLRs).

A group's verdict is the calibration's score rules on its decision LLR (one detector's sum;
several: the fusion of their sums, or the largest), unless its members disagree: when one
member's own verdict is confidently synthetic and another's confidently real (an edited copy
among true copies), the group is ``inconclusive``, reason ``copies disagree``, never a sum
that hides it."""

import logging
import math

import numpy as np
import pandas as pd

from clipdet.constants import (
    ERROR_COLUMN,
    FILENAME_COLUMN,
    FUSION_COLUMN,
    GROUP_COLUMN,
    GROUP_SIZE_COLUMN,
    HEIGHT_COLUMN,
    INCONCLUSIVE,
    JPEG_QUALITY_COLUMN,
    NO_FUSION,
    REAL,
    SYNTHETIC,
    VERDICT_COLUMN,
    WIDTH_COLUMN,
)
from clipdet.evaluation.calibration import ABOVE, BELOW, BETWEEN, NOT_SCORED, Calibration
from clipdet.evaluation.verdicts import quality_calibrated, score_rule

logger = logging.getLogger(__name__)

COPIES_DISAGREE = "copies disagree"
SIZE_COLUMN = "size"
BEST_COPY_COLUMN = "best_copy"
DISSENT_COLUMN = "dissent"


def add_group_columns(
    table: pd.DataFrame, labels, failed_alone: bool = False, column: str = GROUP_COLUMN
) -> pd.DataFrame:
    """The table with ``group`` and ``group_size`` (before ``error``) from ``labels``: a
    missing or empty one is a group of its own (``"#<row>"``, never merged with the other
    missing ones; said in one warning line naming ``column``); with ``failed_alone`` a row
    that could not be scored is a group of its own too."""
    values = list(labels)
    alone = np.array([v is None or (isinstance(v, float) and math.isnan(v)) or str(v) == ""
                      for v in values], dtype=bool)  # fmt: skip
    if alone.any():
        logger.warning("%d rows have no %s: each is a group of its own", int(alone.sum()), column)
    if failed_alone and ERROR_COLUMN in table.columns:
        alone |= table[ERROR_COLUMN].fillna("").astype(str).to_numpy() != ""
    labels = np.array([f"#{row}" if single else str(value)
                       for row, (value, single) in enumerate(zip(values, alone, strict=True))],
                      dtype=object)  # fmt: skip
    sizes = pd.Series(labels).map(pd.Series(labels).value_counts()).to_numpy()
    out = table.drop(columns=[GROUP_COLUMN, GROUP_SIZE_COLUMN], errors="ignore")
    at = out.columns.get_loc(ERROR_COLUMN) if ERROR_COLUMN in out.columns else len(out.columns)
    out.insert(at, GROUP_COLUMN, labels)
    out.insert(at + 1, GROUP_SIZE_COLUMN, sizes)
    return out


def with_group_column(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """The table with ``group`` and ``group_size`` from its own ``column``."""
    if column not in table.columns:
        raise ValueError(f"--group {column}: the scores have no such column")
    return add_group_columns(table, table[column].tolist(), column=column)


def group_evidence(
    table: pd.DataFrame, calibration: Calibration, target: float | None = None
) -> pd.DataFrame:
    """One row per group of a table with ``group`` and calibrated verdicts (``verdict`` per
    member): ``group``, ``size``, each detector's group LLR, the fused one, ``verdict``,
    ``verdict_reason``, ``best_copy`` and ``dissent`` (the members whose own verdict differs
    from the group's, ``;``-separated), in the order groups first appear."""
    if GROUP_COLUMN not in table.columns:
        raise ValueError("the scores have no group column: give --group")
    calibration.check_columns(table)
    decided = quality_calibrated(calibration, table)
    detectors = calibration.detectors
    member_scores = decided[detectors].to_numpy(float)
    member_decision = _decision(calibration, member_scores)
    member_verdict = score_rule(calibration, member_decision, calibration.decision, target)
    own = (table[VERDICT_COLUMN].fillna("").astype(str).to_numpy()
           if VERDICT_COLUMN in table.columns else member_verdict)  # fmt: skip
    informative = np.nan_to_num(_copy_quality(calibration, table, decided), nan=-np.inf)
    names = table[FILENAME_COLUMN].astype(str).to_numpy()
    rows = []
    groups = pd.unique(table[GROUP_COLUMN].astype(str))
    index_of = pd.Series(range(len(table))).groupby(table[GROUP_COLUMN].astype(str).to_numpy())
    for group in groups:
        members = index_of.get_group(group).to_numpy()
        scored = members[np.isfinite(member_decision[members])]
        sums = (np.nansum(member_scores[scored], axis=0) if scored.size
                else np.full(len(detectors), np.nan))  # fmt: skip
        rows.append({"group": group, "members": members, "scored": scored, "sums": sums})
    sums = np.array([r["sums"] for r in rows]).reshape(len(rows), len(detectors))
    group_decision = _decision(calibration, sums)
    group_verdict = score_rule(calibration, group_decision, calibration.decision, target)
    out = []
    for r, decision, verdict in zip(rows, group_decision, group_verdict, strict=True):
        members, scored = r["members"], r["scored"]
        confident = set(member_verdict[scored]) & {SYNTHETIC, REAL}
        reason = REASON_OF[verdict]
        if len(confident) == 2:
            verdict, reason = INCONCLUSIVE, COPIES_DISAGREE
        best = members[np.argmax(informative[members])]
        row = {GROUP_COLUMN: r["group"], SIZE_COLUMN: len(members)}
        row |= dict(zip(detectors, r["sums"], strict=True))
        if calibration.decision not in detectors:
            row[calibration.decision] = decision
        row |= {
            VERDICT_COLUMN: verdict,
            "verdict_reason": reason,
            BEST_COPY_COLUMN: names[best],
            DISSENT_COLUMN: ";".join(names[m] for m in members if own[m] and own[m] != verdict),
        }
        out.append(row)
    return pd.DataFrame(out)


def _decision(calibration: Calibration, scores: np.ndarray) -> np.ndarray:
    """The decision LLR of rows of detector LLRs: one detector's own; several: their fusion
    (the calibrated one), else the largest."""
    from clipdet.pipeline.fusion import apply_fusion

    if scores.shape[1] == 1:
        return scores[:, 0]
    if not len(scores):
        return np.zeros(0)
    if calibration.decision == FUSION_COLUMN and calibration.fusion not in (None, NO_FUSION):
        return apply_fusion(scores, calibration.fusion, axis=1)
    return scores.max(axis=1)


REASON_OF = {SYNTHETIC: ABOVE, REAL: BELOW, INCONCLUSIVE: BETWEEN, "": NOT_SCORED}


def _copy_quality(calibration: Calibration, table: pd.DataFrame, decided) -> np.ndarray:
    """How informative each member is, to name a group's best copy: with a quality-aware
    calibration, how far apart the two classes' laws lie at its quality (mean over the
    detectors); else its pixel count, ties broken by JPEG quality (lossless counting 100)."""
    model = calibration.quality_model()
    if model is not None:
        from clipdet.evaluation.quality import quality_features

        q = quality_features(table)
        return np.mean([model.separation(n, q) for n in calibration.detectors], axis=0)
    if not {WIDTH_COLUMN, HEIGHT_COLUMN} <= set(table.columns):
        return np.zeros(len(table))
    pixels = table[WIDTH_COLUMN].to_numpy(float) * table[HEIGHT_COLUMN].to_numpy(float)
    quality = (table[JPEG_QUALITY_COLUMN].fillna(100).to_numpy(float)
               if JPEG_QUALITY_COLUMN in table.columns else np.full(len(table), 100.0))  # fmt: skip
    return np.nan_to_num(pixels, nan=-1.0) * 1000 + quality
