"""Few-shot detector heads on frozen CLIP features (the paper's recipe), saved in the
reference layout so that both clipdet and the reference code load them."""

import logging
import os
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from clipdet import __version__
from clipdet.constants import CONFIG_FILENAME, DEFAULT_ARCH, DETECTION_TASK, REAL, SYNTHETIC
from clipdet.evaluation.metrics import METRICS
from clipdet.files import sha256_of
from clipdet.models.heads import LinearSVMHead
from clipdet.options import RunOptions
from clipdet.storage import write_atomic
from clipdet.training.features import (
    FeatureExtractor,
    FeatureSet,
    LabelledImages,
    feature_config,
    read_labelled_list,
)

logger = logging.getLogger(__name__)


def train_detector(
    in_csv: str | os.PathLike,
    weights_dir: str | os.PathLike,
    model_name: str,
    arch: str = DEFAULT_ARCH,
    C: float | None = None,
    val_csv: str | os.PathLike | None = None,
    options: RunOptions | None = None,
    backbone: str | None = None,
    layer: str | int | None = None,
    record: dict | None = None,
    **fields,
) -> Path:
    """Train a calibrated linear SVM head and write ``<weights_dir>/<model_name>/``: on the
    CLIP ``arch``'s features, or with ``backbone`` (an alias or ``LIB:MODEL[:PRETRAINED]``) a
    linear probe on that backbone's ``layer`` (default: the library's image embedding).
    ``options`` (or RunOptions ``fields``) say how features are computed; ``record`` adds
    entries to the config's training record (e.g. the sweep that chose it)."""
    config = feature_config(arch, backbone, layer)
    images = read_labelled_list(in_csv)
    options = replace(options or RunOptions(), **fields).resolved()
    extractor = FeatureExtractor.create(config, options)
    train = extractor(images)
    usable = train.usable
    labels = images.labels[usable]
    counts = {REAL: int((labels == 0).sum()), SYNTHETIC: int((labels == 1).sum())}
    if min(counts.values()) < 2:
        raise ValueError(
            f"training needs at least 2 usable images of each class, got {counts} "
            f"({int((~usable).sum())} unreadable images skipped)"
        )
    head = LinearSVMHead(C=C).fit(train.features[usable], labels)
    metadata = {
        **_provenance(in_csv),
        "task": DETECTION_TASK,
        "head": "linear SVM (class-balanced)",
        "backbone": extractor.group.identity,
        "feature_layer": extractor.layer_name,
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
        **(record or {}),
    }
    if val_csv is not None:
        val_images = read_labelled_list(val_csv)
        metadata["validation"] = _validate(head, extractor(val_images), val_images)
    folder = Path(weights_dir) / model_name
    return save_head(folder, extractor.config, model_name, head, metadata)


def _provenance(in_csv) -> dict:
    return {
        "clipdet_version": __version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "train_list": str(Path(in_csv)),
        "train_list_sha256": sha256_of(in_csv),
    }


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
    folder: Path,
    features: dict,
    model_name: str,
    head,
    metadata: dict,
    extra: dict | None = None,
) -> Path:
    """Write weights.pth ({'model': {'fc.weight', 'fc.bias'}}) and config.yaml: ``arch`` and
    the other keys of ``features`` that name the head's features (``norm_type`` and
    ``patch_size`` in the reference's layout, or a probe's ``backbone`` and ``layer``), then
    ``extra`` keys, then a ``training`` record, into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        "fc.weight": torch.tensor(head.coef_, dtype=torch.float32),
        "fc.bias": torch.tensor(head.intercept_, dtype=torch.float32),
    }
    tmp = folder / ".weights.pth.tmp"
    torch.save({"model": state}, tmp)
    os.replace(tmp, folder / "weights.pth")
    config = {
        "arch": features["arch"],
        "model_name": model_name,
        **{key: value for key, value in features.items() if key != "arch"},
        "weights_file": "weights.pth",
        **(extra or {}),
        "training": metadata,
    }
    write_atomic(folder / CONFIG_FILENAME, yaml.safe_dump(config, sort_keys=False).encode())
    logger.info("wrote %s", folder)
    return folder
