"""Decisions an analyst can defend: a threshold set on the user's own real images at a chosen
false-positive rate, with the exact (Clopper-Pearson) bound of that rate, and three answers.

- ``synthetic`` above the calibrated threshold (false-positive rate on the real list at most
  the target, exactly);
- ``real`` below a lower threshold: from a list of synthetic images at a stated miss rate, or by
  default where the LLR itself says real at 19:1 odds (LLR < -log 19, σ(LLR) < 0.05);
- ``inconclusive`` between them, and for images outside what the detectors read reliably:
  smaller than a detector's input (it would be upscaled), or a JPEG whose quantisation tables
  say a quality below ``min_jpeg_quality``; where detectors disagree, a view flips the verdict,
  or the image is unlike every calibration image (the rules: clipdet.evaluation.verdicts).

A threshold is never placed on a score it was fitted on: it lies midway between the last score
the rule allows and the next, so a recomputed score that moves by a rounding step does not
change a decision.
"""

import datetime
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy.stats import binomtest

from clipdet import __version__
from clipdet.constants import (
    FUSION_COLUMN,
    INCONCLUSIVE,
    JPEG_QUALITY_COLUMN,
    REAL,
    SYNTHETIC,
    WIDTH_COLUMN,
)
from clipdet.pipeline.domain import DISTANCE_COLUMN

logger = logging.getLogger(__name__)

FORMAT = 1
CONFIDENCE = 0.95
DEFAULT_MISS_RATE = 0.05
DEFAULT_REAL_LLR = -math.log(19.0)  # σ(LLR) < 0.05: the LLR says real at 19:1 odds
# JPEG quality under which images are inconclusive: the paper's post-processed evaluation (the
# `postprocessed` preset of clipdet launder) compresses at quality 65-100; below it the
# detectors' scores are untested. How to measure it for your detectors: docs/thresholds.md.
DEFAULT_MIN_JPEG_QUALITY = 65.0
SMALL_LIST_FACTOR = 3  # fewer than 3 / fpr real images cannot support a target of fpr

# verdict_reason: which rule decided
ABOVE = "above_calibrated_threshold"
BELOW = "below_real_threshold"
BETWEEN = "between_thresholds"
TOO_SMALL = "smaller_than_input"
LOW_QUALITY = "low_jpeg_quality"
NOT_SCORED = "not_scored"
VERDICT_OF = {ABOVE: SYNTHETIC, BELOW: REAL, BETWEEN: INCONCLUSIVE, TOO_SMALL: INCONCLUSIVE,
              LOW_QUALITY: INCONCLUSIVE, NOT_SCORED: ""}  # fmt: skip
MAX_DECISION = "max"  # no fusion, several detectors: the verdict reads the largest LLR


class CalibrationError(ValueError):
    """A calibration file that does not apply to this run (the message says why)."""


def clopper_pearson(k: int, n: int, level: float = CONFIDENCE) -> tuple[float, float]:
    """The exact two-sided ``level`` interval of a binomial rate k / n."""
    interval = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="exact")
    return float(interval.low), float(interval.high)


def fpr_threshold(real: np.ndarray, fpr: float) -> float:
    """The lowest threshold t with at most floor(fpr * n) real scores above it (``> t`` is
    synthetic), placed midway between the score the rule stops at and the next larger one (past
    the largest by half the mean gap when it stops there), never on a fitted score."""
    scores = np.sort(np.asarray(real, dtype=float))[::-1]
    allowed = int(math.floor(fpr * len(scores) + 1e-9))
    if allowed >= len(scores):
        return float(scores[-1] - _margin(scores))
    stop = scores[allowed]
    larger = scores[scores > stop]
    return float((stop + larger.min()) / 2 if larger.size else stop + _margin(scores))


def miss_threshold(fake: np.ndarray, miss: float) -> float:
    """The highest threshold t with at most floor(miss * n) synthetic scores below it (``< t``
    is real), midway between fitted scores as ``fpr_threshold``."""
    return -fpr_threshold(-np.asarray(fake, dtype=float), miss)


def _margin(scores: np.ndarray) -> float:
    spread = float(scores.max() - scores.min()) if scores.size else 0.0
    return spread / (2 * max(len(scores) - 1, 1)) or 0.5


@dataclass
class OperatingPoint:
    """A threshold for one target false-positive rate and what the lists say of it."""

    target_fpr: float
    threshold: float
    n_real: int
    false_positives: int
    observed_fpr: float
    fpr_upper: float  # the exact 95 % bound of the rate over the population
    small_list: bool  # fewer than 3 / target real images
    n_fake: int | None = None
    tpr: float | None = None
    tpr_low: float | None = None
    tpr_high: float | None = None


@dataclass
class ScoreCalibration:
    """The operating points of one score column and its lower (``real``) threshold."""

    points: list[OperatingPoint]
    real_threshold: float
    real_rule: str


@dataclass
class Calibration:
    decision: str  # the column the verdicts read: "fusion", a detector's name, or "max"
    detectors: list[str]
    fusion: str | None
    columns: dict[str, ScoreCalibration]
    models: dict[str, dict]  # name -> fingerprint (weights sha256, backbone, input size)
    min_side: int | None
    min_jpeg_quality: float
    lists: dict = field(default_factory=dict)
    clipdet_version: str = __version__
    date: str = ""
    domain: dict | None = None  # where it holds (clipdet.pipeline.domain), in the file's form
    quality: dict | None = None  # the quality-aware model (clipdet.evaluation.quality)

    def quality_model(self):
        """The quality-aware model (QuAD) the verdicts read, or None."""
        if not self.quality:
            return None
        from clipdet.evaluation.quality import QualityModel

        return QualityModel.from_dict(self.quality)

    def real_threshold(self, column: str | None = None, target: float | None = None) -> float:
        """Below it a verdict is ``real``: the lower threshold, at most the synthetic one."""
        column = column or self.decision
        return min(self.columns[column].real_threshold, self.point(column, target).threshold)

    @property
    def targets(self) -> list[float]:
        return [p.target_fpr for p in self.columns[self.decision].points]

    def point(self, column: str | None = None, target: float | None = None) -> OperatingPoint:
        """The operating point of ``column`` (default: the decision's) at ``target`` (default:
        the first target calibrated)."""
        points = self.columns[column or self.decision].points
        if target is None:
            return points[0]
        for point in points:
            if math.isclose(point.target_fpr, target):
                return point
        raise CalibrationError(
            f"no threshold for a false-positive rate of {target:g}; calibrated: "
            + ", ".join(f"{p.target_fpr:g}" for p in points)
        )

    def describe(self, target: float | None = None) -> str:
        """One line for headers and summaries."""
        p = self.point(target=target)
        return (
            f"calibrated at FPR {p.target_fpr:g} on {p.n_real} real images (observed "
            f"{p.observed_fpr:.4f}, 95% bound {p.fpr_upper:.4f}), threshold {p.threshold:+.3f} on "
            f"{self.decision}"
        )

    # ---- applying it ----------------------------------------------------------------------

    def check_models(self, fingerprints: dict[str, dict], fusion: str | None) -> None:
        """Refuse a run whose detectors, weights or fusion are not the calibrated ones."""
        external = [name for name in self.detectors if self.models.get(name, {}).get("external")]
        if external:
            raise CalibrationError(
                f"the calibration holds external detectors ({', '.join(external)}): apply it "
                "to a scores file with `clipdet decide`"
            )
        if sorted(fingerprints) != sorted(self.detectors):
            raise CalibrationError(
                f"the calibration is for the models {','.join(self.detectors)}, this run has "
                f"{','.join(fingerprints)}: run `clipdet calibrate` for these models"
            )
        changed = [
            f"{name} ({key} was {self.models[name].get(key)!s:.16}, now {value!s:.16})"
            for name, now in fingerprints.items()
            for key, value in now.items()
            if key != "input_size" and self.models.get(name, {}).get(key) != value
        ]
        if changed:
            raise CalibrationError(
                "the calibration does not apply: weights changed since it was made for "
                + "; ".join(changed)
                + ". Run `clipdet calibrate` again"
            )
        if self.decision == FUSION_COLUMN and (fusion or "none") != self.fusion:
            raise CalibrationError(
                f"the calibration is for --fusion {self.fusion}, this run uses {fusion}"
            )

    def check_columns(self, table: pd.DataFrame) -> None:
        """Refuse a scores table that lacks the calibrated detectors (read from a file, its
        weights cannot be checked: the models' names must at least be the calibrated ones)."""
        missing = [name for name in self.detectors if name not in table.columns]
        if self.decision not in (MAX_DECISION, *self.detectors) and self.decision not in table:
            missing.append(self.decision)
        if missing:
            raise CalibrationError(
                f"the scores lack the calibrated columns {', '.join(missing)} (the calibration "
                f"is for {','.join(self.detectors)})"
            )
        if self.quality:  # the quality-aware LLRs read each image's size and JPEG quality
            from clipdet.evaluation.quality import quality_features

            quality_features(table.head(0))
        if self.domain and DISTANCE_COLUMN not in table.columns:
            logger.warning(
                "the scores have no %s column (scored without this calibration): where the "
                "calibration holds is not checked", DISTANCE_COLUMN,
            )  # fmt: skip
        if not {WIDTH_COLUMN, JPEG_QUALITY_COLUMN} <= set(table.columns):
            logger.warning("the scores have no width/height/jpeg_quality columns (scored "
                           "without --calibration): the image rules are not applied")  # fmt: skip

    # ---- the file ---------------------------------------------------------------------------

    def to_dict(self) -> dict:
        data = asdict(self)
        return {"clipdet_calibration": FORMAT, **data}

    def save(self, path: str | Path) -> Path:
        from clipdet.storage import write_bytes_atomic

        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        return write_bytes_atomic(path, text.encode("utf-8"))

    @classmethod
    def load(cls, path: str | Path) -> "Calibration":
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise FileNotFoundError(f"calibration file not found: {path}") from e
        except yaml.YAMLError as e:
            raise CalibrationError(f"{path} is not a calibration file: {e}") from e
        if not isinstance(data, dict) or data.pop("clipdet_calibration", None) != FORMAT:
            raise CalibrationError(f"{path} is not a clipdet calibration file (format {FORMAT})")
        try:
            columns = {
                name: ScoreCalibration(
                    [OperatingPoint(**p) for p in c["points"]], c["real_threshold"], c["real_rule"]
                )
                for name, c in data.pop("columns").items()
            }
            return cls(columns=columns, **data)
        except (KeyError, TypeError) as e:
            raise CalibrationError(f"{path}: incomplete calibration file ({e})") from e


def decision_score(table: pd.DataFrame, decision: str, detectors: list[str]) -> np.ndarray:
    if decision == MAX_DECISION:
        return table[detectors].max(axis=1, skipna=False).to_numpy(float)
    if decision not in table.columns:
        raise CalibrationError(f"the scores have no {decision!r} column to decide on")
    return table[decision].to_numpy(float)


def decision_column(detectors: list[str], has_fusion: bool) -> str:
    """The score verdicts read: one detector's own, else the fusion, else the largest."""
    if len(detectors) == 1:
        return detectors[0]
    return FUSION_COLUMN if has_fusion else MAX_DECISION


def stamp() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
