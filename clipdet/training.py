"""Few-shot training of a detector head on frozen CLIP features (the paper's recipe), saved in
the reference layout so that both clipdet and the reference code load it."""

import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from networks import parse_arch

from . import __version__
from .constants import CONFIG_FILENAME, TYPE_COLUMN
from .factory import BackboneCache, create_frozen_feature_group
from .feature_cache import FeatureCache
from .features import extract_features
from .heads import LinearSVMHead
from .metrics import REAL
from .tables import read_image_list
from .weights import sha256_of, write_atomic

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
    filenames, paths = read_image_list(csv)
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    if TYPE_COLUMN not in table.columns:
        raise ValueError(
            f"{csv} has no {TYPE_COLUMN!r} column: label each image 'real' or with its generator"
        )
    types = table[TYPE_COLUMN].str.strip().tolist()
    if any(t == "" for t in types):
        raise ValueError(f"{csv}: {types.count('')} rows have an empty {TYPE_COLUMN!r}")
    return LabelledImages(filenames, paths, types)


@dataclass
class FeatureSet:
    features: np.ndarray  # [n, D], NaN rows for failed images
    errors: list[str]

    @property
    def usable(self) -> np.ndarray:
        return np.isfinite(self.features).all(axis=1)


def compute_features(images: LabelledImages, group, transform, **kwargs) -> FeatureSet:
    features, errors = extract_features(group, transform, images.paths, **kwargs)
    result = FeatureSet(features, errors)
    skipped = int((~result.usable).sum())
    if skipped:
        examples = [f"{n}: {e}" for n, e in zip(images.filenames, errors, strict=True) if e][:3]
        logger.warning("%d unreadable images skipped, e.g. %s", skipped, "; ".join(examples))
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
    group, transform = create_frozen_feature_group(
        arch, backbone_cache=BackboneCache(backbone_weights)
    )
    group.backbone.to(device)
    extract = dict(
        device=device,
        batch_size=batch_size,
        num_workers=num_workers,
        cache=FeatureCache(feature_cache) if feature_cache else None,
        progress=progress,
    )
    train = compute_features(images, group, transform, **extract)
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
        "clipdet_version": __version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "task": "detection",
        "head": "linear SVM (class-balanced)",
        "backbone": group.identity,
        "feature_layer": "next_to_last" if parse_arch(arch).next_to_last else "projected",
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
        "train_list": str(Path(in_csv)),
        "train_list_sha256": sha256_of(in_csv),
    }
    if val_csv is not None:
        metadata["validation"] = _validate(
            head, read_labelled_list(val_csv), group, transform, extract
        )
    return save_head(Path(weights_dir) / model_name, arch, model_name, head, metadata)


def _validate(head, images: LabelledImages, group, transform, extract) -> dict:
    from .metrics import METRICS

    val = compute_features(images, group, transform, **extract)
    usable = val.usable
    labels, scores = images.labels[usable], head.decision_function(val.features[usable])
    report = {"images": int(usable.sum()), "images_skipped": int((~usable).sum())}
    if len(np.unique(labels)) == 2:
        for name in ("auc", "acc", "cllr"):
            report[name] = round(METRICS[name](labels, scores), 6)
    logger.info("validation: %s", report)
    return report


def save_head(folder: Path, arch: str, model_name: str, head, metadata: dict) -> Path:
    """Write weights.pth ({'model': {'fc.weight', 'fc.bias'}}) and config.yaml (the reference's
    keys plus a ``training`` record) into ``folder``."""
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
        "training": metadata,
    }
    write_atomic(folder / CONFIG_FILENAME, yaml.safe_dump(config, sort_keys=False).encode())
    logger.info("wrote %s", folder)
    return folder
