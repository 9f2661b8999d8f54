"""Few-shot training on frozen CLIP features: detector heads (the paper's recipe), saved in the
reference layout so that both clipdet and the reference code load them, and open-set
attribution heads (one logit per generator, plus an ``unknown`` rule)."""

import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from clipdet import __version__
from clipdet.constants import CONFIG_FILENAME, FILENAME_COLUMN, TYPE_COLUMN
from clipdet.evaluation.metrics import METRICS, REAL
from clipdet.models.attribution import (
    DEFAULT_ACCEPT_RATE,
    DEFAULT_UNKNOWN_SCORE,
    TASK,
    UNKNOWN,
    OpenSetRule,
    check_open_set_options,
)
from clipdet.models.factory import BackboneCache, create_frozen_feature_group
from clipdet.models.heads import AttributionHead, LinearSVMHead
from clipdet.models.preprocess import ImageTransform
from clipdet.models.weights import sha256_of, write_atomic
from clipdet.pipeline.feature_cache import FeatureCache
from clipdet.pipeline.features import FeatureGroup, extract_features
from clipdet.pipeline.results import read_list
from networks import parse_arch

logger = logging.getLogger(__name__)

DEFAULT_ARCH = "opencliplinearnext_clipL14commonpool"


@dataclass
class LabelledImages:
    filenames: list[str]
    paths: list[str]
    types: list[str]

    @property
    def labels(self) -> np.ndarray:
        return np.array([t != REAL for t in self.types], dtype=int)


def read_labelled_list(csv: str | os.PathLike) -> LabelledImages:
    table, paths = read_list(csv)
    if TYPE_COLUMN not in table.columns:
        raise ValueError(
            f"{csv} has no {TYPE_COLUMN!r} column: label each image 'real' or with its generator"
        )
    types = table[TYPE_COLUMN].str.strip().tolist()
    if any(t == "" for t in types):
        raise ValueError(f"{csv}: {types.count('')} rows have an empty {TYPE_COLUMN!r}")
    return LabelledImages(table[FILENAME_COLUMN].tolist(), paths, types)


@dataclass
class FeatureSet:
    features: np.ndarray  # [n, D], NaN rows for failed images
    errors: list[str]

    @property
    def usable(self) -> np.ndarray:
        return np.isfinite(self.features).all(axis=1)


@dataclass
class FeatureExtractor:
    """The frozen backbone's features of labelled images, as training and validation use them
    (the same preprocessing and features as scoring)."""

    group: FeatureGroup
    transform: ImageTransform
    options: dict

    @classmethod
    def create(
        cls,
        arch: str,
        block: int | None,
        backbone_weights,
        device,
        batch_size: int,
        num_workers: int,
        feature_cache,
        progress: bool,
    ) -> "FeatureExtractor":
        group, transform = create_frozen_feature_group(
            arch, backbone_cache=BackboneCache(backbone_weights), block=block
        )
        group.backbone.to(device)
        options = dict(
            device=device,
            batch_size=batch_size,
            num_workers=num_workers,
            cache=FeatureCache(feature_cache) if feature_cache else None,
            progress=progress,
        )
        return cls(group, transform, options)

    def __call__(self, images: LabelledImages) -> FeatureSet:
        features, errors = extract_features(
            self.group, self.transform, images.paths, **self.options
        )
        result = FeatureSet(features, errors)
        skipped = int((~result.usable).sum())
        if skipped:
            examples = [f"{n}: {e}" for n, e in zip(images.filenames, errors, strict=True) if e]
            logger.warning(
                "%d unreadable images skipped, e.g. %s", skipped, "; ".join(examples[:3])
            )
        return result


def train_detector(
    in_csv: str | os.PathLike,
    weights_dir: str | os.PathLike,
    model_name: str,
    arch: str = DEFAULT_ARCH,
    C: float | None = None,
    val_csv: str | os.PathLike | None = None,
    device: str = "cpu",
    backbone_weights: str | os.PathLike | None = None,
    batch_size: int = 4,
    num_workers: int = 0,
    feature_cache: str | os.PathLike | None = None,
    progress: bool = False,
) -> Path:
    """Train a calibrated linear SVM head and write ``<weights_dir>/<model_name>/``."""
    images = read_labelled_list(in_csv)
    extractor = FeatureExtractor.create(
        arch, None, backbone_weights, device, batch_size, num_workers, feature_cache, progress
    )
    train = extractor(images)
    usable = train.usable
    labels = images.labels[usable]
    counts = {"real": int((labels == 0).sum()), "synthetic": int((labels == 1).sum())}
    if min(counts.values()) < 2:
        raise ValueError(
            f"training needs at least 2 usable images of each class, got {counts} "
            f"({int((~usable).sum())} unreadable images skipped)"
        )
    head = LinearSVMHead(C=C).fit(train.features[usable], labels)
    metadata = {
        **_provenance(in_csv),
        "task": "detection",
        "head": "linear SVM (class-balanced)",
        "backbone": extractor.group.identity,
        "feature_layer": _layer_name(arch, None),
        "features_l2_normalised": True,
        "images": counts,
        "images_per_typ": {
            t: int(n) for t, n in pd.Series(images.types)[usable].value_counts().items()
        },
        "images_skipped": int((~usable).sum()),
        "C": float(head.C_),
        "C_cv_roc_auc": {f"{c:g}": round(s, 6) for c, s in head.cv_scores_.items()},
        "cv_folds": head.n_splits_,
        "calibration": head.calibration_,
    }
    if val_csv is not None:
        val_images = read_labelled_list(val_csv)
        metadata["validation"] = _validate(head, extractor(val_images), val_images)
    return save_head(Path(weights_dir) / model_name, arch, model_name, head, metadata)


def _provenance(in_csv) -> dict:
    return {
        "clipdet_version": __version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "train_list": str(Path(in_csv)),
        "train_list_sha256": sha256_of(in_csv),
    }


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
    device: str = "cpu",
    backbone_weights: str | os.PathLike | None = None,
    batch_size: int = 4,
    num_workers: int = 0,
    feature_cache: str | os.PathLike | None = None,
    progress: bool = False,
) -> Path:
    """Train an open-set attribution model over the ``typ`` classes of ``in_csv`` (``real``
    included) and write ``<weights_dir>/<model_name>/``.

    Features: the arch's (next-to-last by default), or the CLS token of transformer block
    ``block``. Head: class-balanced multinomial logistic regression, C by cross-validation.
    Open-set rule: ``unknown_score`` ("energy" or "msp") thresholded to accept ``accept_rate``
    of the known-class images of ``val_csv``, or of the training images scored out of fold.
    """
    check_open_set_options(unknown_score, accept_rate)  # before any feature is computed
    images = read_labelled_list(in_csv)
    if UNKNOWN in images.types:
        raise ValueError(f"{in_csv}: {UNKNOWN!r} is reserved for rejected images, not a typ")
    extractor = FeatureExtractor.create(
        arch, block, backbone_weights, device, batch_size, num_workers, feature_cache, progress
    )
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
        "block": extractor.group.layer,
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
        "feature_layer": _layer_name(arch, extractor.group.layer),
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
    return save_head(Path(weights_dir) / model_name, arch, model_name, head, metadata, extra)


def _layer_name(arch: str, block: int | None) -> str:
    if block is not None:
        return f"CLS token of transformer block {block}"
    return "next_to_last" if parse_arch(arch).next_to_last else "projected"


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


def _validate(head, val: FeatureSet, images: LabelledImages) -> dict:
    usable = val.usable
    labels, scores = images.labels[usable], head.decision_function(val.features[usable])
    report = {"images": int(usable.sum()), "images_skipped": int((~usable).sum())}
    if len(np.unique(labels)) == 2:
        for name in ("auc", "acc", "cllr"):
            report[name] = round(METRICS[name](labels, scores), 6)
    logger.info("validation: %s", report)
    return report


def save_head(
    folder: Path, arch: str, model_name: str, head, metadata: dict, extra: dict | None = None
) -> Path:
    """Write weights.pth ({'model': {'fc.weight', 'fc.bias'}}) and config.yaml (the reference's
    keys, then ``extra`` keys, then a ``training`` record) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        "fc.weight": torch.tensor(head.coef_, dtype=torch.float32),
        "fc.bias": torch.tensor(head.intercept_, dtype=torch.float32),
    }
    tmp = folder / ".weights.pth.tmp"
    torch.save({"model": state}, tmp)
    os.replace(tmp, folder / "weights.pth")
    config = {
        "arch": arch,
        "model_name": model_name,
        "norm_type": "clip",
        "patch_size": "Clip224",
        "weights_file": "weights.pth",
        **(extra or {}),
        "training": metadata,
    }
    write_atomic(folder / CONFIG_FILENAME, yaml.safe_dump(config, sort_keys=False).encode())
    logger.info("wrote %s", folder)
    return folder
