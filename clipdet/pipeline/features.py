"""Features of image files for training and evaluation: the prepare and infer stages driven by
the local engine, without heads."""

import logging
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from clipdet.models.factory import BackboneCache, create_frozen_network
from clipdet.models.preprocess import ImageTransform
from clipdet.pipeline.backbone_pass import (
    BatchFeatures,
    FeatureGroup,
    FeatureInfer,
    register_in_cache,
)
from clipdet.pipeline.engine import run_local
from clipdet.pipeline.feature_cache import FeatureCache
from clipdet.pipeline.prepare import Preparer, PrepareSettings

logger = logging.getLogger(__name__)


def frozen_feature_group(
    config: dict, backbone_cache: BackboneCache | None = None
) -> tuple[FeatureGroup, ImageTransform]:
    """The feature group of a frozen-backbone model ``config`` (``opencliplinear*`` with
    ``norm_type`` and ``patch_size``; ``probe`` with ``backbone`` and ``layer``) and its
    transform: the features a head trained on them reads when the model is scored."""
    detector, preprocessing = create_frozen_network(config, backbone_cache)
    group = FeatureGroup.frozen(
        detector.backbone, detector.backbone_key, preprocessing.cfg, detector.layer
    )
    return group, preprocessing.transform


def usable_cache(cache: FeatureCache | None, perturbation) -> FeatureCache | None:
    """``cache``, unless a ``perturbation`` changes the pixels: features are cached by file
    content, so perturbed images' features must not be stored or read."""
    if perturbation is not None and cache is not None:
        logger.warning("feature cache not used: images are perturbed in memory")
        return None
    return cache


def make_preparer(
    groups,
    transforms,
    cache: FeatureCache | None,
    perturbation=None,
    settings: PrepareSettings = PrepareSettings(),  # noqa: B008 -- frozen, shared
) -> Preparer:
    """The prepare stage for ``groups`` (registering them in ``cache``, unless perturbed:
    ``usable_cache``)."""
    cache = usable_cache(cache, perturbation)
    cached = register_in_cache(groups, cache)
    needs = {g.key: g.preprocess for g in groups}
    return Preparer(dict(transforms), needs, cached, cache, perturbation, settings)


def iter_batch_features(
    groups: Sequence[FeatureGroup],
    transforms: dict[str, ImageTransform],
    paths: Sequence[str],
    device: str | torch.device = "cpu",
    batch_size: int = 4,
    num_workers: int = 0,
    cache: FeatureCache | None = None,
    progress: bool = False,
    perturbation: Callable | None = None,
) -> Iterator[BatchFeatures]:
    """Yield the features of every group, batch by batch, in input order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    preparer = make_preparer(groups, transforms, cache, perturbation)
    infer = FeatureInfer(groups, device, preparer.cache)
    yield from run_local(
        preparer, infer, paths, device=str(device), batch_size=batch_size,
        num_workers=num_workers, progress=progress, failures=lambda out: len(out.errors),
    )  # fmt: skip


def extract_group_features(
    groups: Sequence[FeatureGroup],
    transforms: dict[str, ImageTransform],
    paths: Sequence[str],
    device: str | torch.device = "cpu",
    batch_size: int = 4,
    num_workers: int = 0,
    cache: FeatureCache | None = None,
    progress: bool = False,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Per group key, [len(paths), D] float32 features (NaN rows where an image failed), and
    the error per image. Groups on one backbone and preprocessing share each pass."""
    features = {
        g.key: np.full((len(paths), g.num_features), np.nan, dtype=np.float32) for g in groups
    }
    errors = [""] * len(paths)
    for batch in iter_batch_features(
        groups, transforms, paths, device, batch_size, num_workers, cache, progress
    ):
        for index, message in batch.errors.items():
            errors[index] = message
        for key, (rows, values) in batch.features.items():
            features[key][rows] = values.cpu().numpy()
    return features, errors


def extract_features(
    group: FeatureGroup,
    transform: ImageTransform,
    paths: Sequence[str],
    device: str | torch.device = "cpu",
    batch_size: int = 4,
    num_workers: int = 0,
    cache: FeatureCache | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, list[str]]:
    """[len(paths), D] float32 features (NaN rows where an image failed) and the error per image."""
    features, errors = extract_group_features(
        [group], {group.transform_key: transform}, paths, device, batch_size, num_workers,
        cache, progress,
    )  # fmt: skip
    return features[group.key], errors
