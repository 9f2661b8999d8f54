"""Evaluation of open-set attribution models from a labelled list and a main.py scores file.

Known images are those whose ``typ`` is one of the model's classes; unknown images are those of
the generators held out of training (``--unknown``). Figures:

- ``closed_acc``: accuracy of the most probable known class on known images (no rejection);
- ``macro_f1``: F1 averaged over the known classes, same predictions;
- ``auroc``: ROC AUC of the unknown-score separating unknown from known images;
- ``oscr``: area under the open-set classification rate curve (Dhamija et al., NeurIPS 2018):
  share of known images accepted *and* correctly classified against share of unknown images
  accepted, as the threshold sweeps;
- ``open_acc``: accuracy at the model's stored threshold, over known and unknown images (an
  unknown image is right when called ``unknown``), with ``known_accepted`` and
  ``unknown_rejected`` beside it.
"""

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from clipdet.constants import FILENAME_COLUMN, TYPE_COLUMN
from clipdet.evaluation.metrics import read_csv, read_labels_and_scores
from clipdet.models.attribution import UNKNOWN, AttributionColumns, find_attribution_models

logger = logging.getLogger(__name__)

ATTRIBUTION_METRICS = (
    "closed_acc",
    "macro_f1",
    "auroc",
    "oscr",
    "open_acc",
    "known_accepted",
    "unknown_rejected",
    "n_known",
    "n_unknown",
)


def oscr(known_correct: np.ndarray, known_score: np.ndarray, unknown_score: np.ndarray) -> float:
    """Area under CCR(t) against FPR(t), accepting an image when its unknown-score <= t:
    CCR = share of known images accepted and correctly classified, FPR = share of unknown
    images accepted. 1 is perfect; a closed-set accuracy of a bounds it from above."""
    known_correct = np.asarray(known_correct, dtype=bool)
    thresholds = np.unique(np.concatenate([known_score, unknown_score]))
    correct_scores = np.sort(np.asarray(known_score)[known_correct])
    ccr = np.searchsorted(correct_scores, thresholds, side="right") / len(known_score)
    fpr = np.searchsorted(np.sort(unknown_score), thresholds, side="right") / len(unknown_score)
    x, y = np.r_[0.0, fpr], np.r_[0.0, ccr]
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


@dataclass
class AttributionEvaluation:
    """Per model: a row of figures and the open-set confusion matrix (true typ x predicted)."""

    table: pd.DataFrame
    confusion: dict[str, pd.DataFrame]


def evaluate_attribution(in_csv, scores_csv, unknown_types=()) -> AttributionEvaluation:
    """Figures of every attribution model in ``scores_csv`` against the labels of ``in_csv``.
    ``unknown_types`` names the generators held out of training; a typ that is neither a class
    of the model nor listed there is counted as unknown too, with a warning."""
    models = find_attribution_models(read_csv(scores_csv, "scores", nrows=0).columns)
    if not models:
        raise ValueError(
            f"scores CSV {scores_csv} has no attribution model columns (<name>, "
            "<name>_unknown_score, <name>_p_<class>): score with a model trained by "
            "train.py --task attribution"
        )
    # the decision columns as text (a class named "1" stays "1")
    labels, scores = read_labels_and_scores(in_csv, scores_csv, [m.name for m in models])
    merged = labels[[FILENAME_COLUMN, TYPE_COLUMN]].merge(scores, on=FILENAME_COLUMN)
    missing = len(labels) - len(merged)
    if missing:
        logger.warning("%d of %d input files have no scores and are left out", missing, len(labels))
    merged[TYPE_COLUMN] = merged[TYPE_COLUMN].astype(str).str.strip()
    rows, confusion = {}, {}
    for model in models:
        rows[model.name], confusion[model.name] = _evaluate_model(merged, model, unknown_types)
    table = pd.DataFrame.from_dict(rows, orient="index", columns=list(ATTRIBUTION_METRICS))
    table.index.name = "model"
    return AttributionEvaluation(table, confusion)


def _evaluate_model(merged: pd.DataFrame, model: AttributionColumns, unknown_types):
    listed = set(unknown_types)
    clash = sorted(listed & set(model.classes))
    if clash:
        raise ValueError(
            f"--unknown names {', '.join(clash)}, which model {model.name!r} was trained on "
            f"(its classes: {', '.join(model.classes)})"
        )
    present = set(merged[TYPE_COLUMN])
    absent = sorted(listed - present)
    if absent:
        logger.warning("--unknown typs with no scored image: %s", ", ".join(absent))
    unlisted = sorted(present - set(model.classes) - listed)
    if unlisted:
        logger.warning(
            "%s: typs %s are not classes of the model and not in --unknown: counted as unknown",
            model.name,
            ", ".join(unlisted),
        )
    probs = merged[model.probabilities].to_numpy(dtype=float)
    score = merged[model.unknown_score].to_numpy(dtype=float)
    ok = np.isfinite(probs).all(axis=1) & np.isfinite(score)
    if not ok.all():
        logger.warning(
            "%s: %d images without scores (failed) left out, e.g. %s",
            model.name,
            int((~ok).sum()),
            ", ".join(merged.loc[~ok, FILENAME_COLUMN].head(3)),
        )
    data = merged[ok]
    probs, score = probs[ok], score[ok]
    truth = data[TYPE_COLUMN].to_numpy(dtype=object)
    known = np.isin(truth, model.classes)
    closed = np.asarray(model.classes, dtype=object)[probs.argmax(axis=1)]
    decided = data[model.name].fillna("").astype(str).to_numpy(dtype=object)
    row = dict.fromkeys(ATTRIBUTION_METRICS, np.nan)
    row["n_known"], row["n_unknown"] = int(known.sum()), int((~known).sum())
    if known.any():
        row["closed_acc"] = float(np.mean(closed[known] == truth[known]))
        row["macro_f1"] = float(
            skm.f1_score(
                truth[known], closed[known], labels=model.classes, average="macro", zero_division=0
            )
        )
        row["known_accepted"] = float(np.mean(decided[known] != UNKNOWN))
    if (~known).any():
        row["unknown_rejected"] = float(np.mean(decided[~known] == UNKNOWN))
        if known.any():
            row["auroc"] = float(skm.roc_auc_score(~known, score))
            row["oscr"] = oscr(closed[known] == truth[known], score[known], score[~known])
    else:
        logger.warning("%s: no unknown images, open-set figures left NaN", model.name)
    if len(truth):
        right = np.where(known, decided == truth, decided == UNKNOWN)
        row["open_acc"] = float(np.mean(right))
    return row, _confusion(truth, decided, known, model.classes)


def _confusion(truth, decided, known, classes) -> pd.DataFrame:
    """Counts: rows are true typs (known classes, then unknown generators), columns the
    decisions at the stored threshold (classes, then ``unknown``)."""
    unknown_types = sorted(set(truth[~known]))
    rows = [*classes, *unknown_types]
    columns = [*classes, UNKNOWN]
    matrix = pd.DataFrame(0, index=pd.Index(rows, name="true"), columns=columns)
    matrix.columns.name = "predicted"
    for t, d in zip(truth, decided, strict=True):
        if d in matrix.columns:
            matrix.loc[t, d] += 1
    return matrix
