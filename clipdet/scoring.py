"""Batch scoring: features of every backbone (see features.py), then every head on them."""

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .constants import DEFAULT_FUSION, DEFAULT_MODELS
from .factory import BackboneCache, LoadedModel, create_detector
from .feature_cache import FeatureCache
from .features import FeatureGroup, iter_batch_features
from .tables import build_table

logger = logging.getLogger(__name__)


def default_device() -> str:
    return "cuda:0" if torch.cuda.is_available() else "cpu"


def default_batch_size(device: str | torch.device) -> int:
    """On CPU small batches let decoding overlap compute (batching gains little there); on a
    GPU large batches keep it busy."""
    return 32 if torch.device(device).type == "cuda" else 4


def default_num_workers() -> int:
    return min(4, os.cpu_count() or 1)


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: str | torch.device) -> torch.dtype:
    """``auto``: bf16 on CUDA and on CPUs with native bf16, fp32 otherwise."""
    if precision == "auto":
        native = torch.device(device).type == "cuda" or cpu_has_native_bf16()
        precision = "bf16" if native else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(
            f"unknown precision {precision!r}; valid choices: auto, {', '.join(PRECISIONS)}"
        )
    return PRECISIONS[precision]


def load_models(
    names: Sequence[str],
    weights_dir: str | os.PathLike = "weights",
    backbone_weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    tile_size: int | None = None,
    compile: bool = False,
) -> list[LoadedModel]:
    """Build every named model on ``device``; heads on one backbone share it. Backbones take
    the ``precision``'s dtype as their weights (on CPU, converting the weights is what makes
    bf16 fast: autocast is slower there); heads stay fp32. ``tile_size`` sets the core tile of
    full-resolution networks (0: never tile; None: their default). ``compile`` wraps each
    backbone's forward with ``torch.compile`` (worth it for long GPU runs)."""
    if len(set(names)) != len(names):
        raise ValueError(f"a model is named twice in {', '.join(names)}")
    dtype = resolve_precision(precision, device)
    cache = BackboneCache(backbone_weights)
    models = [create_detector(name, weights_dir, cache) for name in names]
    for model in models:
        model.detector.to(device)
        model.detector.backbone.to(dtype)
        if tile_size is not None and hasattr(model.detector.backbone, "tile_size"):
            model.detector.backbone.tile_size = tile_size
        if torch.device(device).type == "cuda" and not model.detector.frozen_backbone:
            model.detector.backbone.to(memory_format=torch.channels_last)
    if compile:
        for backbone in {id(m.detector.backbone): m.detector.backbone for m in models}.values():
            backbone.compile()
    return models


def feature_groups(models: Sequence[LoadedModel]) -> tuple[list[FeatureGroup], list[str]]:
    """Distinct (backbone, preprocessing) pairs and, for each model, the key of its group."""
    groups: dict[str, FeatureGroup] = {}
    keys = []
    for m in models:
        d = m.detector
        if d.frozen_backbone:
            group = FeatureGroup.frozen(d.backbone, d.backbone_key, m.transform_key)
        else:
            group = FeatureGroup(d.backbone, m.transform_key, d.fc.in_features)
        groups.setdefault(group.key, group)
        keys.append(group.key)
    return list(groups.values()), keys


@dataclass
class ImageResult:
    index: int
    scores: np.ndarray  # one LLR per model, NaN where that model failed
    error: str


def iter_scores(
    models: Sequence[LoadedModel],
    paths: Sequence[str],
    device: str | torch.device = "cpu",
    batch_size: int = 4,
    num_workers: int = 0,
    progress: bool = False,
    feature_cache: FeatureCache | None = None,
    perturbation=None,
) -> Iterator[ImageResult]:
    """Score ``paths`` with every model, yielding results batch by batch in input order."""
    groups, group_of_model = feature_groups(models)
    transforms = {m.transform_key: m.transform for m in models}
    for batch in iter_batch_features(
        groups,
        transforms,
        paths,
        device,
        batch_size,
        num_workers,
        feature_cache,
        progress,
        perturbation,
    ):
        scores = {i: np.full(len(models), np.nan) for i in batch.indices}
        for column, (model, key) in enumerate(zip(models, group_of_model, strict=True)):
            if key not in batch.features:
                continue
            rows, features = batch.features[key]
            llrs = model.detector.forward_head(features).float().cpu().numpy()
            for index, llr in zip(rows, llrs, strict=True):
                scores[index][column] = llr
        for index in batch.indices:
            yield ImageResult(index, scores[index], batch.errors.get(index, ""))


def score_images(
    paths: Sequence[str | os.PathLike],
    models: Sequence[str] = DEFAULT_MODELS,
    weights_dir: str | os.PathLike = "weights",
    device: str | None = None,
    fusion: str | None = DEFAULT_FUSION,
    batch_size: int | None = None,
    num_workers: int | None = None,
    backbone_weights: str | os.PathLike | None = None,
    feature_cache: str | os.PathLike | None = None,
    progress: bool = False,
    precision: str = "fp32",
) -> pd.DataFrame:
    """Score image files; returns a DataFrame with ``filename``, one LLR column per model,
    ``fusion`` (unless ``fusion`` is None or "none") and ``error`` (empty when fine)."""
    device = device or default_device()
    loaded = load_models(models, weights_dir, backbone_weights, device, precision)
    paths = [str(p) for p in paths]
    scores = np.full((len(paths), len(loaded)), np.nan)
    errors = [""] * len(paths)
    for result in iter_scores(
        loaded,
        paths,
        device=device,
        batch_size=batch_size or default_batch_size(device),
        num_workers=default_num_workers() if num_workers is None else num_workers,
        progress=progress,
        feature_cache=FeatureCache(feature_cache) if feature_cache else None,
    ):
        scores[result.index] = result.scores
        errors[result.index] = result.error
    return build_table(paths, [m.name for m in loaded], scores, errors, fusion)
