"""Labelled image lists and the frozen features training computes on them (the same
preprocessing and features as scoring)."""

import logging
import os
from dataclasses import dataclass

import numpy as np

from clipdet.constants import CLIP224, CLIP_NORM, DEFAULT_ARCH, FILENAME_COLUMN, REAL, TYPE_COLUMN
from clipdet.files import read_list
from clipdet.models.factory import BackboneCache
from clipdet.models.families.probe import ARCH as PROBE_ARCH
from clipdet.models.preprocess import ImageTransform
from clipdet.models.registry import known_backbones, parse_backbone
from clipdet.options import RunOptions
from clipdet.pipeline.backbone_pass import FeatureGroup
from clipdet.pipeline.feature_cache import FeatureCache
from clipdet.pipeline.features import extract_features, frozen_feature_group
from networks import EMBED

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


def feature_config(
    arch: str = DEFAULT_ARCH,
    backbone: str | None = None,
    layer: str | int | None = None,
    block: int | None = None,
) -> dict:
    """The config keys that name a head's features: with ``backbone`` (an alias or
    ``LIB:MODEL[:PRETRAINED]``) a ``probe`` at ``layer`` (default: the library's embedding),
    under the library's preprocessing; else the CLIP ``arch`` under the reference's 224-px
    preprocessing, at its own layer or the CLS token of ``block``."""
    if backbone is None:
        if layer is not None:
            raise ValueError("--layer applies with --backbone (for an arch, use --block)")
        config = {"arch": arch, "norm_type": CLIP_NORM, "patch_size": CLIP224}
        return config if block is None else {**config, "block": block}
    if block is not None:
        raise ValueError("--block applies to an arch; with --backbone, use --layer")
    if arch != DEFAULT_ARCH:
        raise ValueError("give --arch or --backbone, not both")
    spec = parse_backbone(backbone)  # a clear error now, before any image is read
    name = backbone if backbone in known_backbones() else spec.reference
    return {"arch": PROBE_ARCH, "backbone": name, "layer": EMBED if layer is None else layer}


@dataclass
class FeatureExtractor:
    """The frozen backbone's features of labelled images, as the model ``config`` names them
    (``feature_config``): the network and preprocessing that scoring the trained head runs."""

    group: FeatureGroup
    transform: ImageTransform
    config: dict
    options: RunOptions

    @classmethod
    def create(cls, config: dict, options: RunOptions) -> "FeatureExtractor":
        """``options`` resolved (device, batch size, workers)."""
        group, transform = frozen_feature_group(config, BackboneCache(options.backbone_weights))
        group.backbone.to(options.device)
        # a block as the non-negative index it resolves to
        if config["arch"] == PROBE_ARCH:
            config = {**config, "layer": group.layer}
        elif config.get("block") is not None:
            config = {**config, "block": group.layer}
        return cls(group, transform, config, options)

    @property
    def layer_name(self) -> str:
        """The feature layer in words, for a model's training record."""
        layer = self.group.layer
        if not isinstance(layer, int):
            return str(layer)
        token = "CLS token" if self.group.backbone.has_class_token else "mean of the patch tokens"
        return f"{token} of transformer block {layer}"

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
