"""Labelled image lists and the frozen features training computes on them (the same
preprocessing and features as scoring)."""

import logging
import os
from dataclasses import dataclass

import numpy as np

from clipdet.constants import CLIP224, CLIP_NORM, DEFAULT_ARCH, FILENAME_COLUMN, REAL, TYPE_COLUMN  # noqa: F401
from clipdet.files import read_list
from clipdet.models.factory import BackboneCache, create_frozen_feature_group
from clipdet.models.preprocess import ImageTransform
from clipdet.options import RunOptions
from clipdet.pipeline.feature_cache import FeatureCache
from clipdet.pipeline.features import extract_features
from clipdet.pipeline.infer import FeatureGroup

logger = logging.getLogger(__name__)


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
    """The frozen backbone's features of labelled images, under the preprocessing recorded in
    ``preprocessing`` (the config keys ``norm_type`` and ``patch_size``)."""

    group: FeatureGroup
    transform: ImageTransform
    preprocessing: dict
    options: RunOptions

    @classmethod
    def create(cls, arch: str, block: int | None, options: RunOptions) -> "FeatureExtractor":
        """``options`` resolved (device, batch size, workers)."""
        preprocessing = {"norm_type": CLIP_NORM, "patch_size": CLIP224}
        group, transform = create_frozen_feature_group(
            arch, **preprocessing, backbone_cache=BackboneCache(options.backbone_weights),
            block=block,
        )  # fmt: skip
        group.backbone.to(options.device)
        return cls(group, transform, preprocessing, options)

    def __call__(self, images: "LabelledImages") -> "FeatureSet":
        o = self.options
        features, errors = extract_features(
            self.group, self.transform, images.paths, o.device, o.batch_size, o.num_workers,
            FeatureCache(o.feature_cache) if o.feature_cache else None, o.progress,
        )  # fmt: skip
        result = FeatureSet(features, errors)
        skipped = int((~result.usable).sum())
        if skipped:
            examples = [f"{n}: {e}" for n, e in zip(images.filenames, errors, strict=True) if e]
            logger.warning(
                "%d unreadable images skipped, e.g. %s", skipped, "; ".join(examples[:3])
            )
        return result
