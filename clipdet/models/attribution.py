"""Open-set origin attribution: which generator (or ``real``) made an image, or ``unknown``.

An attribution model is a linear head with one logit per known class on frozen CLIP features.
Its open-set rule turns the logits into an unknown-score (higher: less like any known class)
and rejects an image as ``unknown`` above a threshold fitted so that a chosen share (95% by
default) of known-class validation images is accepted.
"""

from dataclasses import dataclass

import numpy as np

from clipdet.constants import ATTRIBUTION_TASK

UNKNOWN = "unknown"
TASK = ATTRIBUTION_TASK
UNKNOWN_SCORE_SUFFIX = "_unknown_score"


def max_softmax_unknown_score(logits: np.ndarray) -> np.ndarray:
    """1 - max softmax probability (Hendrycks & Gimpel, 2017): 0 when one class takes all."""
    from scipy.special import softmax  # (scipy loads when an attribution model is used)

    return 1.0 - softmax(logits, axis=1).max(axis=1)


def energy_unknown_score(logits: np.ndarray) -> np.ndarray:
    """Energy -logsumexp(logits) (Liu et al., 2020): low when some class has a large logit."""
    from scipy.special import logsumexp

    return -logsumexp(logits, axis=1)


UNKNOWN_SCORES = {"energy": energy_unknown_score, "msp": max_softmax_unknown_score}


def _check_score_name(name: str) -> str:
    if name not in UNKNOWN_SCORES:
        raise ValueError(
            f"unknown open-set score {name!r}; valid choices: {', '.join(UNKNOWN_SCORES)}"
        )
    return name


def check_open_set_options(score: str, accept_rate: float) -> None:
    """Clear errors for an unknown score name or an accept rate outside (0, 1]."""
    _check_score_name(score)
    if not 0 < accept_rate <= 1:
        raise ValueError(f"accept rate must be in (0, 1], got {accept_rate}")


@dataclass(frozen=True)
class OpenSetRule:
    """``unknown`` when ``unknown_score(logits) > threshold``."""

    score: str
    threshold: float

    def __post_init__(self):
        _check_score_name(self.score)

    def unknown_score(self, logits: np.ndarray) -> np.ndarray:
        return UNKNOWN_SCORES[self.score](np.asarray(logits, dtype=np.float64))

    def accepts(self, logits: np.ndarray) -> np.ndarray:
        return self.unknown_score(logits) <= self.threshold

    @classmethod
    def fit(cls, known_logits: np.ndarray, score: str, accept_rate: float) -> "OpenSetRule":
        """A threshold accepting at least ``accept_rate`` of ``known_logits`` (the logits of
        known-class images the head was not fitted on), placed strictly between two fitted
        scores (see ``threshold_between``) so that rounding cannot move a fitted image across
        it when scoring computes its logits again in another batch or thread layout."""
        check_open_set_options(score, accept_rate)
        if len(known_logits) == 0:
            raise ValueError("no known-class images to fit the open-set threshold on")
        values = UNKNOWN_SCORES[score](np.asarray(known_logits, np.float64))
        return cls(score, threshold_between(values, accept_rate))


def threshold_between(values: np.ndarray, accept_rate: float) -> float:
    """A threshold with at least ``ceil(accept_rate * n)`` of ``values`` at or below it, midway
    between the last value it must accept and the next larger one; when it must accept them
    all, beyond the largest by half the mean gap between values. A threshold placed on a fitted
    value itself leaves that image to its last rounding bit."""
    values = np.sort(np.asarray(values, dtype=np.float64))
    needed = values[max(int(np.ceil(accept_rate * len(values) - 1e-9)), 1) - 1]
    above = values[values > needed]
    if len(above):
        return float((needed + above[0]) / 2)
    distinct = np.unique(values)
    mean_gap = (distinct[-1] - distinct[0]) / max(len(distinct) - 1, 1)
    return float(needed + max(mean_gap / 2, 1e-4 * (1.0 + abs(needed))))


@dataclass(frozen=True)
class AttributionSpec:
    """What an attribution model's config.yaml says beyond the reference keys."""

    classes: tuple[str, ...]
    block: int | None
    rule: OpenSetRule

    @classmethod
    def from_config(cls, config) -> "AttributionSpec":  # a ModelConfig
        name = config.get("model_name", "?")
        if config.get("task") != TASK:
            raise ValueError(f"model {name!r}: unknown task {config.get('task')!r}; valid: {TASK}")
        classes = config.get("classes")
        if not isinstance(classes, list) or len(classes) < 2:
            raise ValueError(f"model {name!r}: 'classes' must list at least 2 class names")
        classes = tuple(str(c) for c in classes)
        if len(set(classes)) != len(classes) or UNKNOWN in classes:
            raise ValueError(
                f"model {name!r}: classes must be distinct and not {UNKNOWN!r}: {classes}"
            )
        block = config.get("block")
        if block is not None and not isinstance(block, int):
            raise ValueError(f"model {name!r}: 'block' must be an integer or null, got {block!r}")
        open_set = config.get("open_set")
        if not isinstance(open_set, dict) or not {"score", "threshold"} <= set(open_set):
            raise ValueError(f"model {name!r}: 'open_set' needs 'score' and 'threshold'")
        return cls(classes, block, OpenSetRule(open_set["score"], float(open_set["threshold"])))


@dataclass
class AttributionColumns:
    """Where a scores file holds one attribution model's outputs."""

    name: str
    classes: list[str]

    @property
    def probabilities(self) -> list[str]:
        return [f"{self.name}_p_{c}" for c in self.classes]

    @property
    def confidence(self) -> str:
        return f"{self.name}_confidence"

    @property
    def unknown_score(self) -> str:
        return f"{self.name}{UNKNOWN_SCORE_SUFFIX}"

    @property
    def columns(self) -> list[str]:
        return [self.name, self.confidence, self.unknown_score, *self.probabilities]


def attribution_columns(name: str, spec: AttributionSpec, logits: np.ndarray) -> dict:
    """Output columns of model ``name`` from [n, C] logits (NaN rows: image not scored):
    ``name`` (class or ``unknown``), ``name_confidence`` (probability of the most likely known
    class), ``name_unknown_score`` and ``name_p_<class>`` per class."""
    logits = np.asarray(logits, dtype=np.float64).reshape(-1, len(spec.classes))
    ok = np.isfinite(logits).all(axis=1)
    probs = np.full(logits.shape, np.nan)
    confidence = np.full(len(logits), np.nan)
    unknown_score = np.full(len(logits), np.nan)
    label = np.full(len(logits), "", dtype=object)
    if ok.any():
        from scipy.special import softmax

        probs[ok] = softmax(logits[ok], axis=1)
        confidence[ok] = probs[ok].max(axis=1)
        unknown_score[ok] = spec.rule.unknown_score(logits[ok])
        best = np.asarray(spec.classes, dtype=object)[probs[ok].argmax(axis=1)]
        label[ok] = np.where(unknown_score[ok] <= spec.rule.threshold, best, UNKNOWN)
    names = AttributionColumns(name, list(spec.classes))
    columns = {name: label, names.confidence: confidence, names.unknown_score: unknown_score}
    columns.update(zip(names.probabilities, probs.T, strict=True))
    return columns


def find_attribution_models(columns) -> list[AttributionColumns]:
    """Attribution models in a scores table, found by their ``<name>_unknown_score`` column."""
    columns = list(columns)
    found = []
    for column in columns:
        name = column.removesuffix(UNKNOWN_SCORE_SUFFIX)
        if column.endswith(UNKNOWN_SCORE_SUFFIX) and name in columns:
            prefix = f"{name}_p_"
            classes = [c.removeprefix(prefix) for c in columns if c.startswith(prefix)]
            if len(classes) >= 2:
                found.append(AttributionColumns(name, classes))
    return found


def attribution_column_set(columns) -> set[str]:
    """Every column that belongs to an attribution model (not a detector's LLR)."""
    return {c for m in find_attribution_models(columns) for c in m.columns}
