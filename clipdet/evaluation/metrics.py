"""Detection metrics per generator, as the reference's compute_metrics.py computes them, plus
the figures a deployment decision needs (AP, EER, Pd at fixed FPR, per-class accuracy,
calibration of the LLRs) with optional bootstrap confidence intervals.

Convention: ``label`` is 1 for synthetic, 0 for real; ``score`` is an LLR, > 0 means synthetic.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn import metrics as skm

from clipdet.constants import FILENAME_COLUMN, LABEL_COLUMN, REAL, TYPE_COLUMN
from clipdet.files import read_table
from clipdet.pipeline.columns import ATTRIBUTION, FUSION, SCORE
from clipdet.pipeline.record import column_kinds

logger = logging.getLogger(__name__)

AVERAGE_COLUMN = "AVG"
ECE_BINS = 15


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def balanced_accuracy(label: np.ndarray, score: np.ndarray) -> float:
    return float(skm.balanced_accuracy_score(label, score > 0))


def roc_auc(label: np.ndarray, score: np.ndarray) -> float:
    return float(skm.roc_auc_score(label, score))


# Batched forms of some metrics for the bootstrap: (real scores [B, n0], fake scores [B, n1])
# of B resamples -> [B] values, each equal to the metric on that resample.


def _batched_auc(real: np.ndarray, fake: np.ndarray) -> np.ndarray:
    """Mann-Whitney: the fakes' mean rank among both (ties at their mean rank)."""
    from scipy.stats import rankdata

    n0, n1 = real.shape[1], fake.shape[1]
    ranks = rankdata(np.concatenate([real, fake], axis=1), axis=1)[:, n0:]
    return (ranks.sum(axis=1) - n1 * (n1 + 1) / 2) / (n0 * n1)


def _batched_balanced_accuracy(real: np.ndarray, fake: np.ndarray) -> np.ndarray:
    return ((real <= 0).mean(axis=1) + (fake > 0).mean(axis=1)) / 2


def _batched_detection_at_fpr(max_fpr: float):
    def pd_at(real: np.ndarray, fake: np.ndarray) -> np.ndarray:
        """The fakes above the (k+1)-th largest real score, k the most false positives the
        rate allows (as roc_curve's rates compare with it)."""
        n0 = real.shape[1]
        k = int(np.flatnonzero(np.arange(n0 + 1) / n0 <= max_fpr + 1e-12).max())
        if k >= n0:
            return np.ones(len(real))
        cut = -np.partition(-real, k, axis=1)[:, k]  # the (k+1)-th largest per row
        return (fake > cut[:, None]).mean(axis=1)

    return pd_at


def accuracy_real(label: np.ndarray, score: np.ndarray) -> float:
    """Share of real images called real (score <= 0) at threshold 0."""
    return float(np.mean(score[label == 0] <= 0))


def accuracy_fake(label: np.ndarray, score: np.ndarray) -> float:
    """Share of synthetic images called synthetic (score > 0) at threshold 0."""
    return float(np.mean(score[label == 1] > 0))


def equal_error_rate(label: np.ndarray, score: np.ndarray) -> float:
    """The rate at which false positives and misses are equal, interpolated on the ROC curve."""
    fpr, tpr, _ = skm.roc_curve(label, score)
    diff = (1 - tpr) - fpr  # decreasing along the curve
    i = int(np.argmax(diff <= 0))
    if i == 0:
        return float(fpr[0])
    t = diff[i - 1] / (diff[i - 1] - diff[i])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def detection_at_fpr(max_fpr: float) -> Callable[[np.ndarray, np.ndarray], float]:
    """Pd (TPR) at the best threshold whose false-positive rate does not exceed ``max_fpr``
    (every threshold: roc_curve's dropped points can be the best one when scores tie)."""

    def pd_at(label: np.ndarray, score: np.ndarray) -> float:
        fpr, tpr, _ = skm.roc_curve(label, score, drop_intermediate=False)
        return float(np.max(tpr[fpr <= max_fpr + 1e-12]))

    pd_at.batched = _batched_detection_at_fpr(max_fpr)
    return pd_at


def log_loss(label: np.ndarray, score: np.ndarray) -> float:
    """Mean cross-entropy (nats) of sigmoid(LLR) against the labels."""
    return float(np.mean(np.where(label == 1, _softplus(-score), _softplus(score))))


def cllr(label: np.ndarray, score: np.ndarray) -> float:
    """Log-likelihood-ratio cost (bits): 0 is perfect, 1 is an uninformative LLR of 0."""
    fake = np.mean(_softplus(-score[label == 1]))
    real = np.mean(_softplus(score[label == 0]))
    return float((fake + real) / (2 * np.log(2)))


def expected_calibration_error(label: np.ndarray, score: np.ndarray) -> float:
    """Binned |observed share of fakes - mean predicted probability|, weighted by bin size."""
    prob = expit(score)
    bins = np.minimum((prob * ECE_BINS).astype(int), ECE_BINS - 1)
    total = 0.0
    for b in np.unique(bins):
        in_bin = bins == b
        total += in_bin.sum() * abs(label[in_bin].mean() - prob[in_bin].mean())
    return float(total / len(label))


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "auc": roc_auc,
    "acc": balanced_accuracy,
    "ap": lambda label, score: float(skm.average_precision_score(label, score)),
    "eer": equal_error_rate,
    "pd_fpr1": detection_at_fpr(0.01),
    "pd_fpr5": detection_at_fpr(0.05),
    "pd_fpr10": detection_at_fpr(0.10),
    "acc_real": accuracy_real,
    "acc_fake": accuracy_fake,
    "logloss": log_loss,
    "cllr": cllr,
    "ece": expected_calibration_error,
}


roc_auc.batched = _batched_auc
balanced_accuracy.batched = _batched_balanced_accuracy


def parse_metric_names(spec: str) -> list[str]:
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise ValueError(
            f"unknown metric {', '.join(unknown) or repr(spec)}; "
            f"valid choices: {', '.join(METRICS)}"
        )
    return names


def bootstrap_interval(
    metric: Callable,
    label: np.ndarray,
    score: np.ndarray,
    level: float,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of ``metric`` over resamples drawn within each class (so every
    resample has both classes); a fixed seed makes it reproducible. A metric with a
    ``batched`` form computes every resample at once (the same values)."""
    if not 0 < level < 1:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    real, fake = np.flatnonzero(label == 0), np.flatnonzero(label == 1)
    draws = [(rng.choice(real, real.size), rng.choice(fake, fake.size)) for _ in range(n_boot)]
    batched = getattr(metric, "batched", None)
    if batched is not None and n_boot:
        reals = np.stack([r for r, _ in draws])
        fakes = np.stack([f for _, f in draws])
        values = batched(score[reals], score[fakes])
    else:
        values = np.empty(n_boot)
        for b, (r, f) in enumerate(draws):
            idx = np.concatenate([r, f])
            values[b] = metric(label[idx], score[idx])
    alpha = (1 - level) / 2
    low, high = np.nanquantile(values, [alpha, 1 - alpha])
    return float(low), float(high)


@dataclass
class EvaluationData:
    """Merged labels and scores: one row per image with ``typ``, ``label`` and score columns."""

    table: pd.DataFrame
    score_columns: list[str]
    types: list[str]


def load_evaluation_data(in_csv, scores_csv) -> EvaluationData:
    """Merge the labelled list with a scores file on ``filename``, as the reference does."""
    labels, scores = read_labels_and_scores(in_csv, scores_csv)
    return evaluation_data(labels, scores, f"scores CSV {scores_csv}")


def evaluation_data(labels: pd.DataFrame, scores: pd.DataFrame, source: str) -> EvaluationData:
    """The labelled list (``filename``, ``typ``) merged with a scores table on ``filename``;
    the columns of kind score and fusion are the scores (``record.column_kinds``: attribution
    models' probabilities, row extensions' columns and verdicts are not; ``source`` names the
    scores in messages)."""
    kinds = column_kinds(scores)
    score_columns = [c for c, kind in kinds.items() if kind in (SCORE, FUSION)]
    skipped = [c for c in scores.columns if c not in kinds]
    if skipped:
        logger.info("not score columns (non-numeric), skipped: %s", ", ".join(skipped))
    if not score_columns:
        raise ValueError(
            f"{source} has no detector score column"
            + (
                " (attribution models: use --task attribution)"
                if ATTRIBUTION in kinds.values()
                else ""
            )
        )
    missing = labels.loc[~labels[FILENAME_COLUMN].isin(scores[FILENAME_COLUMN]), FILENAME_COLUMN]
    if len(missing):
        logger.warning(
            "%d of %d input files have no scores and are left out (e.g. %s)",
            len(missing),
            len(labels),
            ", ".join(missing.head(3)),
        )
    table = labels[[FILENAME_COLUMN, TYPE_COLUMN]].merge(
        scores[[FILENAME_COLUMN, *score_columns]], on=FILENAME_COLUMN
    )
    table[LABEL_COLUMN] = (table[TYPE_COLUMN] != REAL).astype(int)
    if not (table[LABEL_COLUMN] == 0).any():
        raise ValueError(f"no {REAL!r} images among the scored files: metrics need real images")
    types = sorted(t for t in table[TYPE_COLUMN].unique() if t != REAL)
    if not types:
        raise ValueError("no synthetic images (typ other than 'real') among the scored files")
    return EvaluationData(table, score_columns, types)


def read_labels_and_scores(
    in_csv, scores_csv, text_columns=()
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The labelled list (``filename``, ``typ``) and a scores file (``filename``, ...; the
    ``text_columns`` read as text)."""
    labels = read_csv(in_csv, "input")
    scores = read_csv(scores_csv, "scores", text_columns)
    for frame, what, path in ((labels, "input", in_csv), (scores, "scores", scores_csv)):
        if FILENAME_COLUMN not in frame.columns:
            raise ValueError(f"{what} CSV {path} has no {FILENAME_COLUMN!r} column")
    if TYPE_COLUMN not in labels.columns:
        raise ValueError(f"input CSV {in_csv} has no {TYPE_COLUMN!r} column with the labels")
    return labels, scores


def read_csv(path, what: str, text_columns=(), nrows: int | None = None) -> pd.DataFrame:
    """A list or scores table (CSV, or .parquet / .jsonl scores; local or a URL) whose
    filename, typ and ``text_columns`` are read as text (a class named "1" stays "1");
    ``nrows=0`` reads the header only."""
    text = [FILENAME_COLUMN, TYPE_COLUMN, *text_columns]
    try:
        return read_table(path, text, nrows=nrows)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{what} CSV not found: {path}") from e
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {what} CSV {path}: {e}") from e
    except (ValueError, OSError) as e:  # a damaged Parquet or JSON-lines file
        raise ValueError(f"cannot read {what} file {path}: {e}") from e


def compute_metric_table(
    data: EvaluationData,
    metric_name: str,
    ci: float | None = None,
    n_boot: int = 1000,
) -> pd.DataFrame:
    """Models x (each typ, AVG). With ``ci``, extra ``<typ>_lo``/``<typ>_hi`` columns follow."""
    metric = METRICS[metric_name]
    table = pd.DataFrame(
        np.nan,
        index=pd.Index(data.score_columns, name=metric_name),
        columns=_column_order(data.types, ci),
    )
    for typ in data.types:
        subset = data.table[data.table[TYPE_COLUMN].isin([REAL, typ])]
        label = subset[LABEL_COLUMN].to_numpy()
        for column in data.score_columns:
            score = subset[column].to_numpy(dtype=float)
            finite = np.isfinite(score)
            if not finite.all():
                bad = subset.loc[~finite, FILENAME_COLUMN]
                logger.warning(
                    "%s on %s: %d scores are not finite (e.g. %s); cell left NaN",
                    column,
                    typ,
                    len(bad),
                    ", ".join(bad.head(3)),
                )
                continue
            table.loc[column, typ] = metric(label, score)
            if ci:
                low, high = bootstrap_interval(metric, label, score, ci, n_boot=n_boot)
                table.loc[column, f"{typ}_lo"] = low
                table.loc[column, f"{typ}_hi"] = high
    table[AVERAGE_COLUMN] = table[data.types].mean(axis=1)
    return table


def _column_order(types: list[str], ci: float | None) -> list[str]:
    if not ci:
        return list(types)
    return [c for t in types for c in (t, f"{t}_lo", f"{t}_hi")]


def compare_tables(clean: pd.DataFrame, other: pd.DataFrame, label: str = "laundered"):
    """Side by side per model and typ: ``<typ>:clean``, ``<typ>:<label>``, ``<typ>:drop``
    (clean minus other), for the models and typs both tables have."""
    models = [m for m in clean.index if m in other.index]
    columns = [c for c in clean.columns if c in other.columns and not c.endswith(("_lo", "_hi"))]
    out = pd.DataFrame(index=pd.Index(models, name=clean.index.name))
    for c in columns:
        out[f"{c}:clean"] = clean.loc[models, c]
        out[f"{c}:{label}"] = other.loc[models, c]
        out[f"{c}:drop"] = out[f"{c}:clean"] - out[f"{c}:{label}"]
    return out
