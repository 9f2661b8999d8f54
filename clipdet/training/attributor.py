"""Open-set attribution heads on frozen CLIP features: one logit per generator (``real``
included), plus an ``unknown`` rule."""

import logging
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from clipdet.constants import DEFAULT_ACCEPT_RATE, DEFAULT_ARCH, DEFAULT_UNKNOWN_SCORE
from clipdet.models.attribution import (
    TASK,
    UNKNOWN,
    OpenSetRule,
    check_open_set_options,
)
from clipdet.models.heads import AttributionHead
from clipdet.options import RunOptions
from clipdet.training.detector import _provenance, save_head
from clipdet.training.features import (
    FeatureExtractor,
    LabelledImages,
    feature_config,
    read_labelled_list,
)

logger = logging.getLogger(__name__)


def train_attributor(
    in_csv: str | os.PathLike,
    weights_dir: str | os.PathLike,
    model_name: str,
    arch: str = DEFAULT_ARCH,
    block: int | None = None,
    C: float | None = None,
    val_csv: str | os.PathLike | None = None,
    unknown_score: str = DEFAULT_UNKNOWN_SCORE,
    accept_rate: float = DEFAULT_ACCEPT_RATE,
    options: RunOptions | None = None,
    backbone: str | None = None,
    layer: str | int | None = None,
    **fields,
) -> Path:
    """Train an open-set attribution model over the ``typ`` classes of ``in_csv`` (``real``
    included) and write ``<weights_dir>/<model_name>/``.

    Features: the arch's (next-to-last by default), or the CLS token of transformer block
    ``block``; with ``backbone``, that backbone's ``layer`` (as ``train_detector``). Head:
    class-balanced multinomial logistic regression, C by cross-validation.
    Open-set rule: ``unknown_score`` ("energy" or "msp") thresholded to accept ``accept_rate``
    of the known-class images of ``val_csv``, or of the training images scored out of fold.
    """
    check_open_set_options(unknown_score, accept_rate)  # before any feature is computed
    config = feature_config(arch, backbone, layer, block)
    images = read_labelled_list(in_csv)
    if UNKNOWN in images.types:
        raise ValueError(f"{in_csv}: {UNKNOWN!r} is reserved for rejected images, not a typ")
    options = replace(options or RunOptions(), **fields).resolved()
    extractor = FeatureExtractor.create(config, options)
    train = extractor(images)
    usable = train.usable
    types = np.asarray(images.types, dtype=object)[usable]
    counts = {str(t): int(n) for t, n in pd.Series(types).value_counts().sort_index().items()}
    few = {t: n for t, n in counts.items() if n < 2}
    listed = pd.Series(images.types).value_counts()
    if few or len(counts) < 2 or len(listed) > len(counts):
        lost = sorted(set(listed.index) - set(counts))
        raise ValueError(
            "attribution needs at least 2 classes with at least 2 usable images each; "
            + (f"too few images for {few}; " if few else "")
            + (f"no usable image for {lost}; " if lost else "")
            + f"usable images per class: {counts} ({int((~usable).sum())} unreadable skipped)"
        )
    head = AttributionHead(C=C).fit(train.features[usable], types)
    classes = [str(c) for c in head.classes_]
    if val_csv is not None:
        validation, known_logits = _attribution_validation(
            head, read_labelled_list(val_csv), extractor
        )
        fitted_on = f"{len(known_logits)} known-class images of {val_csv}"
    else:
        validation, known_logits = None, head.oof_logits_
        fitted_on = f"{len(known_logits)} training images, {head.n_splits_}-fold out-of-fold logits"
    rule = OpenSetRule.fit(known_logits, unknown_score, accept_rate)
    logger.info(
        "open-set rule: %s <= %.6g accepts %g of known images",
        rule.score,
        rule.threshold,
        accept_rate,
    )
    extra = {
        "task": TASK,
        "classes": classes,
        "block": extractor.config.get("block"),
        "open_set": {
            "score": rule.score,
            "threshold": rule.threshold,
            "accept_rate": accept_rate,
            "fitted_on": fitted_on,
        },
    }
    metadata = {
        **_provenance(in_csv),
        "task": TASK,
        "head": "multinomial logistic regression (class-balanced)",
        "backbone": extractor.group.identity,
        "feature_layer": extractor.layer_name,
        "features_l2_normalised": True,
        "images_per_class": counts,
        "images_skipped": int((~usable).sum()),
        "C": float(head.C_),
        "C_cv": {
            f"{c:g}": {k: round(v, 6) for k, v in r.items()} for c, r in head.cv_scores_.items()
        },
        "cv_folds": head.n_splits_,
    }
    if validation is not None:
        metadata["validation"] = validation
    folder = Path(weights_dir) / model_name
    features = {k: v for k, v in extractor.config.items() if k != "block"}
    return save_head(folder, features, model_name, head, metadata, extra)


def _attribution_validation(head, images: LabelledImages, extractor):
    """Closed-set figures on the known-class images of a validation list and their logits."""
    val = extractor(images)
    types = np.asarray(images.types, dtype=object)
    known = val.usable & np.isin(types, head.classes_)
    others = sorted(set(types[val.usable & ~known]))
    if others:
        logger.warning("validation typs not among the classes, not used: %s", ", ".join(others))
    if not known.any():
        raise ValueError("the validation list has no usable image of a known class")
    logits = head.scoring_logits(val.features[known])  # what main.py will compute
    predicted = head.classes_[logits.argmax(axis=1)]
    report = {
        "images": int(known.sum()),
        "images_skipped": int((~val.usable).sum()),
        "closed_set_accuracy": round(float(np.mean(predicted == types[known])), 6),
    }
    logger.info("validation: %s", report)
    return report, logits
