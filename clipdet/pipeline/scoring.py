"""Batch scoring: features of every backbone (see features.py), then every head on them."""

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from clipdet.constants import DEFAULT_FUSION, DEFAULT_MODELS
from clipdet.models.factory import BackboneCache, LoadedModel, create_detector
from clipdet.pipeline.feature_cache import FeatureCache
from clipdet.pipeline.features import FeatureGroup, iter_batch_features
from clipdet.pipeline.results import build_table

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
            group = FeatureGroup.frozen(d.backbone, d.backbone_key, m.transform_key, d.layer)
        else:
            group = FeatureGroup(d.backbone, m.transform_key, d.fc.in_features)
        groups.setdefault(group.key, group)
        keys.append(group.key)
    return list(groups.values()), keys


@dataclass
class ImageResult:
    index: int
    scores: np.ndarray  # one LLR per detection model, NaN where that model failed
    error: str
    logits: dict[str, np.ndarray] = field(default_factory=dict)  # per attribution model: [C]


def split_models(models: Sequence[LoadedModel]) -> tuple[list[LoadedModel], list[LoadedModel]]:
    """(detection models, attribution models), each in the given order."""
    return [m for m in models if m.attribution is None], [m for m in models if m.attribution]


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
    """Score ``paths`` with every model, yielding results batch by batch in input order:
    detection models give one LLR each (``scores``), attribution models their class logits
    (``logits``). Models on one backbone share its forward pass."""
    groups, group_of_model = feature_groups(models)
    group_of = {m.name: key for m, key in zip(models, group_of_model, strict=True)}
    detectors, attributors = split_models(models)
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
        results = {
            i: ImageResult(
                i,
                np.full(len(detectors), np.nan),
                batch.errors.get(i, ""),
                {m.name: np.full(m.detector.num_outputs, np.nan) for m in attributors},
            )
            for i in batch.indices
        }
        for column, model in enumerate(detectors):
            for index, llr in _apply_head(model, batch.features.get(group_of[model.name])):
                results[index].scores[column] = llr
        for model in attributors:
            for index, logits in _apply_head(model, batch.features.get(group_of[model.name])):
                results[index].logits[model.name] = logits
        yield from results.values()


def _apply_head(model: LoadedModel, group_features) -> Iterator[tuple[int, np.ndarray]]:
    if group_features is None:
        return
    rows, features = group_features
    outputs = model.detector.forward_head(features).float().cpu().numpy().astype(np.float64)
    yield from zip(rows, outputs, strict=True)


class ResultTable:
    """Results of a run, filled image by image (in any order), turned into the output table."""

    def __init__(self, models: Sequence[LoadedModel], n_images: int, error: str = ""):
        self.detectors, self.attributors = split_models(models)
        self.scores = np.full((n_images, len(self.detectors)), np.nan)
        self.logits = {
            m.name: np.full((n_images, m.detector.num_outputs), np.nan) for m in self.attributors
        }
        self.errors = [error] * n_images

    @property
    def detector_names(self) -> list[str]:
        return [m.name for m in self.detectors]

    def set(self, index: int, result: ImageResult) -> None:
        self.scores[index] = result.scores
        for name, logits in result.logits.items():
            self.logits[name][index] = logits
        self.errors[index] = result.error

    def to_frame(self, filenames: Sequence[str], fusion: str | None) -> pd.DataFrame:
        attribution = [(m.name, m.attribution, self.logits[m.name]) for m in self.attributors]
        return build_table(
            filenames, self.detector_names, self.scores, self.errors, fusion, attribution
        )


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
    tile_size: int | None = None,
) -> pd.DataFrame:
    """Score image files; returns a DataFrame with ``filename``, one LLR column per detection
    model, ``fusion`` of those (unless ``fusion`` is None or "none"), the columns of each
    attribution model (see attribution.attribution_columns) and ``error`` (empty when fine).
    ``precision`` and ``tile_size`` are those of ``load_models``."""
    device = device or default_device()
    loaded = load_models(models, weights_dir, backbone_weights, device, precision, tile_size)
    paths = [str(p) for p in paths]
    results = ResultTable(loaded, len(paths))
    for result in iter_scores(
        loaded,
        paths,
        device=device,
        batch_size=batch_size or default_batch_size(device),
        num_workers=default_num_workers() if num_workers is None else num_workers,
        progress=progress,
        feature_cache=FeatureCache(feature_cache) if feature_cache else None,
    ):
        results.set(result.index, result)
    return results.to_frame(paths, fusion)
