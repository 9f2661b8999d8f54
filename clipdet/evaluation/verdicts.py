"""The verdict rules of a calibration (clipdet.evaluation.calibration), applied to a scores
table, later rules taking precedence:

1. the score rules on the decision score: ``synthetic`` above the calibrated threshold, ``real``
   below the lower one, ``inconclusive`` between;
2. ``detectors disagree (A synthetic, B real)``: detectors of different families give confident
   opposite verdicts, each by its own thresholds (``verdict_<model>``);
3. ``flips under <view>``: an in-memory view of the image (--views) gets another verdict by the
   score rules than the image itself;
4. ``unlike the calibration images``: the image is farther from every calibration image than
   the calibration's cut-off (clipdet.pipeline.domain);
5. the image rules: ``smaller_than_input``, ``low_jpeg_quality``;
6. ``not_scored``: the image could not be scored.
"""

import math

import numpy as np
import pandas as pd

from clipdet.constants import (
    DETECTOR_VERDICT_PREFIX,
    ERROR_COLUMN,
    HEIGHT_COLUMN,
    INCONCLUSIVE,
    JPEG_QUALITY_COLUMN,
    QUALITY_LLR_PREFIX,
    REAL,
    SYNTHETIC,
    VERDICT_COLUMN,
    VERDICT_REASON_COLUMN,
    VIEW_PREFIX,
    WIDTH_COLUMN,
)
from clipdet.evaluation.calibration import (
    ABOVE,
    BELOW,
    BETWEEN,
    LOW_QUALITY,
    NOT_SCORED,
    TOO_SMALL,
    VERDICT_OF,
    Calibration,
    decision_score,
)
from clipdet.pipeline.domain import DISTANCE_COLUMN, UNLIKE

FLIPS = "flips under"  # + " jpeg:75"
DISAGREE = "detectors disagree"  # + " (B-Free synthetic, clipdet_latent10k_plus real)"


def verdicts(calibration: Calibration, table: pd.DataFrame, target: float | None = None):
    """(verdict, verdict_reason) arrays for a scores table, at the calibrated rate ``target``
    (default: the first). A quality-aware calibration decides on the quality-calibrated
    LLRs (``quality_calibrated``); the views are then not compared (a view changes the quality
    the calibration reads)."""
    decided = quality_calibrated(calibration, table)
    return _rules(calibration, decided, target, detector_verdicts(calibration, decided, target))


def _rules(calibration: Calibration, table: pd.DataFrame, target, own: dict):
    """(verdict, verdict_reason) of a table as the verdicts read it (``quality_calibrated``),
    given each detector's own verdicts (``detector_verdicts``)."""
    score = decision_score(table, calibration.decision, calibration.detectors)
    point = calibration.point(target=target)
    high, low = point.threshold, calibration.real_threshold(target=target)
    reason = np.full(len(table), BETWEEN, dtype=object)  # later rules take precedence
    reason[score > high] = ABOVE
    reason[score < low] = BELOW
    # a view that flips the verdict is named before detectors that disagree
    for row, text in (
        disagreements(calibration, own) | flips(calibration, table, score, target)
    ).items():
        reason[row] = text
    if calibration.domain and DISTANCE_COLUMN in table.columns:
        distance = table[DISTANCE_COLUMN].to_numpy(float)
        reason[distance > float(calibration.domain["cutoff"])] = UNLIKE
    if WIDTH_COLUMN in table.columns and calibration.min_side:
        sides = np.minimum(table[WIDTH_COLUMN].to_numpy(float),
                           table[HEIGHT_COLUMN].to_numpy(float))  # fmt: skip
        reason[sides < calibration.min_side] = TOO_SMALL
    if JPEG_QUALITY_COLUMN in table.columns:
        quality = table[JPEG_QUALITY_COLUMN].to_numpy(float)
        reason[quality < calibration.min_jpeg_quality] = LOW_QUALITY
    reason[~np.isfinite(score)] = NOT_SCORED
    verdict = np.array([VERDICT_OF.get(r, INCONCLUSIVE) for r in reason], dtype=object)
    return verdict, reason


def quality_calibrated(calibration: Calibration, table: pd.DataFrame) -> pd.DataFrame:
    """``table`` as the verdicts read it: with a quality-aware calibration, each detector's
    column (and the fusion) holding its quality-calibrated LLR; else ``table`` itself."""
    model = calibration.quality_model()
    if model is None:
        return table
    from clipdet.evaluation.quality import calibrated_table

    return calibrated_table(model, table, calibration.detectors, calibration.fusion)


def score_rule(calibration: Calibration, score, column: str, target: float | None = None):
    """Verdicts of ``score`` by the thresholds of the calibrated ``column`` alone: synthetic
    above, real below its lower threshold, inconclusive between, empty where it is NaN."""
    score = np.asarray(score, dtype=float)
    high = calibration.point(column, target).threshold
    low = calibration.real_threshold(column, target)
    verdict = np.full(len(score), INCONCLUSIVE, dtype=object)
    verdict[score > high] = SYNTHETIC
    verdict[score < low] = REAL
    verdict[~np.isfinite(score)] = ""
    return verdict


def detector_verdicts(calibration: Calibration, table: pd.DataFrame, target=None) -> dict:
    """``verdict_<model>`` -> each detector's own verdict (with several detectors)."""
    if len(calibration.detectors) < 2:
        return {}
    return {
        DETECTOR_VERDICT_PREFIX + name: score_rule(
            calibration, decision_score(table, name, calibration.detectors), name, target
        )
        for name in calibration.detectors
        if name in calibration.columns
    }


def family(calibration: Calibration, detector: str) -> str:
    """Detectors of one family (one architecture) are not independent witnesses: their
    disagreement does not count. An external detector is a family of its own."""
    return str(calibration.models.get(detector, {}).get("arch") or f"external:{detector}")


def disagreements(calibration: Calibration, verdict_columns: dict) -> dict:
    """Row -> ``detectors disagree (A synthetic, B real)`` where detectors of different
    families give confident opposite verdicts, each by its own thresholds
    (``verdict_columns``: ``detector_verdicts``)."""
    own = {name[len(DETECTOR_VERDICT_PREFIX) :]: found
           for name, found in verdict_columns.items()}  # fmt: skip
    families = {name: family(calibration, name) for name in own}
    if len(set(families.values())) < 2:
        return {}
    names = list(own)
    synthetic = np.column_stack([own[n] == SYNTHETIC for n in names])
    real = np.column_stack([own[n] == REAL for n in names])
    found = {}
    for row in np.flatnonzero(synthetic.any(axis=1) & real.any(axis=1)):
        yes = [n for n, hit in zip(names, synthetic[row], strict=True) if hit]
        no = [n for n, hit in zip(names, real[row], strict=True) if hit]
        if any(families[a] != families[b] for a in yes for b in no):
            said = [f"{n} synthetic" for n in yes] + [f"{n} real" for n in no]
            found[int(row)] = f"{DISAGREE} ({', '.join(said)})"
    return found


def flips(calibration: Calibration, table: pd.DataFrame, score, target=None) -> dict:
    """Row -> ``flips under <view>`` where a view's decision LLR (``llr@<view>``, --views)
    gets another verdict by the score rules than the image's own ``score`` (the first such
    view, in column order). Not with a quality-aware calibration: a view changes the quality
    the calibration reads."""
    views = [c for c in table.columns if c.startswith(VIEW_PREFIX)]
    if not views or calibration.quality:
        return {}
    own = score_rule(calibration, score, calibration.decision, target)
    found = {}
    for column in reversed(views):  # the first view that flips is the one named
        seen = score_rule(calibration, table[column].to_numpy(float), calibration.decision,
                          target)  # fmt: skip
        for row in np.flatnonzero((seen != own) & (seen != "") & (own != "")):
            found[int(row)] = f"{FLIPS} {column[len(VIEW_PREFIX) :]}"
    return found


def add_calibrated_verdicts(
    table: pd.DataFrame, calibration: Calibration, target: float | None = None
) -> pd.DataFrame:
    """The table with ``verdict``, ``verdict_reason`` and, with several detectors, each one's
    own ``verdict_<model>`` (before ``error``)."""
    decided = quality_calibrated(calibration, table)
    own = detector_verdicts(calibration, decided, target)
    verdict, reason = _rules(calibration, decided, target, own)
    calibrated = {}
    if calibration.quality:  # each detector's quality-calibrated LLR
        calibrated = {QUALITY_LLR_PREFIX + n: decided[n].to_numpy(float)
                      for n in calibration.detectors}  # fmt: skip
    added = [(VERDICT_COLUMN, verdict), (VERDICT_REASON_COLUMN, reason), *own.items(),
             *calibrated.items()]  # fmt: skip
    out = table.drop(columns=[name for name, _ in added], errors="ignore")
    at = out.columns.get_loc(ERROR_COLUMN) if ERROR_COLUMN in out.columns else len(out.columns)
    for offset, (name, values) in enumerate(added):
        out.insert(at + offset, name, values)
    return out


def decide_table(
    table: pd.DataFrame, calibration: Calibration, target: float | None = None
) -> pd.DataFrame:
    """A scores table (clipdet's or another tool's) with its calibrated verdicts: refused
    when it lacks the calibrated columns; the image rules apply where it has their columns."""
    calibration.check_columns(table)
    calibration.point(target=target)  # refuses a rate that was not calibrated
    return add_calibrated_verdicts(table, calibration, target)


def coverage(found) -> float:
    """The share of scored rows that a verdict decides (synthetic or real), NaN if none."""
    found = np.asarray(found, dtype=object)
    scored = found != ""
    return float(np.isin(found[scored], [SYNTHETIC, REAL]).mean()) if scored.any() else math.nan


def verdict_summary(table: pd.DataFrame) -> str:
    """``3 synthetic, 5 real, 2 inconclusive, coverage 0.80; undecided: unlike the calibration
    images 1, between_thresholds 1`` for a table with calibrated verdicts."""
    verdict = table[VERDICT_COLUMN].fillna("").to_numpy(object)
    counts = ", ".join(f"{int((verdict == v).sum())} {v}" for v in (SYNTHETIC, REAL, INCONCLUSIVE))
    line = f"{counts}, coverage {coverage(verdict):.2f}"
    undecided = table.loc[verdict == INCONCLUSIVE, VERDICT_REASON_COLUMN].astype(str)
    # "detectors disagree (A synthetic, B real)" counted by its rule
    rules = undecided.str.replace(r" \(.*\)$", "", regex=True).value_counts()
    if len(rules):
        line += "; undecided: " + ", ".join(f"{rule} {n}" for rule, n in rules.items())
    return line
