"""Batch scoring: load models, then run the prepare and infer stages (prepare.py, infer.py)
on an engine (the local one: engine.py) and collect the results."""

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from clipdet.constants import (
    CLIP224,
    CLIP_INPUT_SIZE,
    DEFAULT_FUSION,
    DEFAULT_MODELS,
    DURATION_COLUMN,
    FILENAME_COLUMN,
    FRAME_COLUMN,
    FRAME_MAX_COLUMN,
    FRAMES_COLUMN,
    FUSION_COLUMN,
    TEMPORAL_COLUMN,
    TIME_COLUMN,
    VIDEO_COLUMNS,
)
from clipdet.models.attribution import AttributionSpec
from clipdet.models.factory import BackboneCache, LoadedModel, create_detector
from clipdet.options import RunOptions
from clipdet.pipeline.engine import run_local
from clipdet.pipeline.feature_cache import FeatureCache
from clipdet.pipeline.features import make_preparer
from clipdet.pipeline.fusion import NO_FUSION, apply_fusion
from clipdet.pipeline.infer import ImageResult, ScoreInfer, VideoResult, split_models
from clipdet.pipeline.prepare import Preparer
from clipdet.pipeline.results import build_table
from clipdet.pipeline.video import FrameSampling

logger = logging.getLogger(__name__)

DECODE_MODES = ("exact", "fast", "gpu")
# --decode fast: a JPEG's reduced scale keeps its shorter side at least twice the 224-px input
FAST_DECODE_SIDE = 2 * CLIP_INPUT_SIZE
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


def _options(options: RunOptions | None, fields: dict) -> RunOptions:
    """``options`` (default: all defaults) with ``fields`` replaced, resolved."""
    return replace(options or RunOptions(), **fields).resolved()


def load_models(
    names: Sequence[str],
    weights_dir: str | os.PathLike = "weights",
    options: RunOptions | None = None,
    **fields,
) -> list[LoadedModel]:
    """Build every named model on the options' device; heads on one backbone share it.
    Backbones take the ``precision``'s dtype as their weights (on CPU, converting the weights
    is what makes bf16 fast: autocast is slower there); heads stay fp32. ``tile_size`` sets the
    core tile of full-resolution networks (0: never tile; None: their default). ``compile``
    wraps each backbone's forward with ``torch.compile`` (worth it for long GPU runs).
    ``fields`` override single options, e.g. ``load_models(names, device="cpu")``."""
    options = _options(options, fields)
    if len(set(names)) != len(names):
        raise ValueError(f"a model is named twice in {', '.join(names)}")
    device = options.device
    dtype = resolve_precision(options.precision, device)
    cache = BackboneCache(options.backbone_weights)
    models = [create_detector(name, weights_dir, cache) for name in names]
    for model in models:
        model.detector.to(device)
        model.detector.backbone.to(dtype)
        if options.tile_size is not None and hasattr(model.detector.backbone, "tile_size"):
            model.detector.backbone.tile_size = options.tile_size
        if torch.device(device).type == "cuda" and not model.detector.frozen_backbone:
            model.detector.backbone.to(memory_format=torch.channels_last)
    if options.compile:
        for backbone in {id(m.detector.backbone): m.detector.backbone for m in models}.values():
            backbone.compile()
    return models


def scoring_stages(
    models: Sequence[LoadedModel], options: RunOptions, maps: bool = False, profile=None
) -> tuple[Preparer, ScoreInfer]:
    """The prepare and infer stages of a run of ``models`` (options resolved); with ``maps``
    the results carry the evidence map of every full-resolution detector; a ``profile``
    (clipdet.pipeline.profile.Profile) records where the time goes."""
    from clipdet.pipeline.perturb import Perturbation

    perturbation = Perturbation(options.perturb, options.perturb_seed) if options.perturb else None
    cache = FeatureCache(options.feature_cache) if options.feature_cache else None
    if cache is not None and options.decode != "exact":
        logger.warning("feature cache not used: --decode fast features are not the exact ones")
        cache = None
    infer = ScoreInfer(models, options.device, maps=maps)
    transforms = {m.transform_key: m.transform for m in models}
    preparer = make_preparer(infer.groups, transforms, cache, perturbation)
    infer.features.cache = preparer.cache
    infer.features.profile = profile
    infer.features.max_batch = options.batch_size  # a batch's video frames: several passes
    preparer.timed = profile is not None
    if options.decode not in DECODE_MODES:
        raise ValueError(
            f"unknown decode mode {options.decode!r}; valid choices: {', '.join(DECODE_MODES)}"
        )
    if options.decode != "exact" and not all(key.startswith(CLIP224) for key in transforms):
        logger.warning("--decode %s applies when every model reads a 224-px input; decoding "
                       "whole images on the CPU", options.decode)  # fmt: skip
    elif options.decode == "fast":
        preparer.min_side = FAST_DECODE_SIDE
    elif options.decode == "gpu":
        preparer.encode = perturbation is None  # a perturbation works on PIL images
    if options.provenance:
        from clipdet.provenance import ProvenanceReader

        trust = Path(options.c2pa_trust).read_text() if options.c2pa_trust else None
        preparer.provenance = ProvenanceReader(trust)
        preparer.encode = False  # the watermark reads the decoded pixels
    preparer.inspect = bool(options.calibration)
    preparer.video = FrameSampling.of(options)
    return preparer, infer


def iter_scores(
    models: Sequence[LoadedModel],
    paths: Sequence[str],
    options: RunOptions | None = None,
    rows: Sequence[int] | None = None,
    maps: bool = False,
    profile=None,
    **fields,
) -> Iterator[ImageResult]:
    """Score ``rows`` of ``paths`` (default: all) with every model on the local engine,
    yielding results batch by batch in order; ``result.index`` is the row index. Detection
    models give one LLR each (``scores``), attribution models their class logits
    (``logits``); with ``maps``, full-resolution detectors their evidence maps (``maps``).
    Models on one backbone share its forward pass."""
    options = _options(options, fields)
    preparer, infer = scoring_stages(models, options, maps, profile)
    for results in run_local(
        preparer, infer, list(paths), rows, device=options.device,
        batch_size=options.batch_size, num_workers=options.num_workers,
        progress=options.progress, failures=lambda out: sum(bool(r.error) for r in out),
        profile=profile,
    ):  # fmt: skip
        yield from results


@dataclass(frozen=True)
class TableLayout:
    """The columns of a run's table, as its models make them: plain data, so that a Ray
    write task builds its tables without the models."""

    detectors: tuple[str, ...]
    attributors: tuple[tuple[str, AttributionSpec, int], ...]  # (name, spec, number of classes)
    provenance: bool = False  # --provenance: the evidence columns
    facts: bool = False  # --calibration: width, height and JPEG quality columns
    video: bool = False  # the video columns (frames, duration_s, temporal, frame_max)

    @classmethod
    def of(
        cls,
        models: Sequence[LoadedModel],
        options: RunOptions | None = None,
        paths: Sequence[str] | None = None,
    ) -> "TableLayout":
        """The columns a run of ``models`` writes; the video columns when one of ``paths`` is
        a video (always when ``paths`` is None: a stream does not know its files ahead)."""
        detectors, attributors = split_models(models)
        options = options or RunOptions()
        sampling = FrameSampling.of(options)
        video = paths is None or any(sampling.is_video(str(p)) for p in paths)
        return cls(
            tuple(m.name for m in detectors),
            tuple((m.name, m.attribution, m.detector.num_outputs) for m in attributors),
            options.provenance,
            bool(options.calibration),
            video,
        )


class ResultTable:
    """Results of a run, filled image by image (in any order), turned into the output table."""

    def __init__(self, layout: TableLayout, n_images: int, error: str = ""):
        self.layout = layout
        self.scores = np.full((n_images, len(layout.detectors)), np.nan)
        self.logits = {
            name: np.full((n_images, classes), np.nan) for name, _, classes in layout.attributors
        }
        self.errors = [error] * n_images
        # --provenance: (evidence tokens, generator) per row; None leaves the columns out
        self.provenance = [("", "")] * n_images if layout.provenance else None
        self.facts = np.full((n_images, 3), np.nan) if layout.facts else None
        self.videos: dict[int, VideoResult] = {}  # row -> its frames (video rows only)

    @property
    def detector_names(self) -> list[str]:
        return list(self.layout.detectors)

    def set(self, index: int, result: ImageResult) -> None:
        self.scores[index] = result.scores
        for name, logits in result.logits.items():
            self.logits[name][index] = logits
        self.errors[index] = result.error
        if self.provenance is not None:
            self.provenance[index] = result.provenance or ("", "")
        if self.facts is not None and result.facts:
            self.facts[index] = result.facts
        if result.video is not None:
            self.videos[index] = result.video
        else:
            self.videos.pop(index, None)

    def video_columns(self, fusion: str | None) -> dict[str, np.ndarray] | None:
        """frames, duration_s, temporal and frame_max (the largest frame score: the frames'
        fusion, or their largest detector LLR) per row; NaN for images."""
        if not self.layout.video:
            return None
        n = len(self.errors)
        columns = {name: np.full(n, np.nan) for name in VIDEO_COLUMNS}
        for index, video in self.videos.items():
            columns[FRAMES_COLUMN][index] = video.frames
            columns[DURATION_COLUMN][index] = video.duration_s
            columns[TEMPORAL_COLUMN][index] = video.temporal
            columns[FRAME_MAX_COLUMN][index] = _nanmax(frame_decisions(video, fusion))
        return columns

    def frame_table(self, filenames: Sequence[str], fusion: str | None) -> pd.DataFrame:
        """One row per scored frame of every video: filename, frame, time_s, one LLR column
        per detector (named as in the main table) and their fusion."""
        parts = []
        for index in sorted(self.videos):
            video = self.videos[index]
            part = pd.DataFrame({FILENAME_COLUMN: [filenames[index]] * video.frames,
                                 FRAME_COLUMN: np.arange(video.frames),
                                 TIME_COLUMN: video.times})  # fmt: skip
            for column, name in enumerate(self.detector_names):
                part[name] = video.frame_scores[:, column]
            if fusion and fusion != NO_FUSION and self.detector_names:
                part[FUSION_COLUMN] = apply_fusion(video.frame_scores, fusion, axis=1)
            parts.append(part)
        if parts:
            return pd.concat(parts, ignore_index=True)
        columns = [FILENAME_COLUMN, FRAME_COLUMN, TIME_COLUMN, *self.detector_names]
        return pd.DataFrame(columns=columns)

    def to_frame(self, filenames: Sequence[str], fusion: str | None) -> pd.DataFrame:
        attribution = [(name, spec, self.logits[name]) for name, spec, _ in self.layout.attributors]
        return build_table(filenames, self.detector_names, self.scores, self.errors, fusion,
                           attribution, self.provenance, self.facts,
                           self.video_columns(fusion))  # fmt: skip


def frame_decisions(video: VideoResult, fusion: str | None) -> np.ndarray:
    """Each frame's decision score: the fusion of its detector LLRs, else the largest."""
    scores = video.frame_scores
    if scores.shape[1] == 0:
        return np.full(len(scores), np.nan)
    if fusion and fusion != NO_FUSION:
        return apply_fusion(scores, fusion, axis=1)
    return scores.max(axis=1)


def _nanmax(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.max()) if finite.size else float("nan")


def score_images(
    paths: Sequence[str | os.PathLike],
    models: Sequence[str] = DEFAULT_MODELS,
    weights_dir: str | os.PathLike = "weights",
    *,
    fusion: str | None = DEFAULT_FUSION,
    options: RunOptions | None = None,
    **fields,
) -> pd.DataFrame:
    """Score image files; returns a DataFrame with ``filename``, one LLR column per detection
    model, ``fusion`` of those (unless ``fusion`` is None or "none"), the columns of each
    attribution model (see attribution.attribution_columns) and ``error`` (empty when fine).
    ``fields`` are RunOptions fields, e.g. ``score_images(paths, device="cpu", batch_size=8)``."""
    options = _options(options, fields)
    loaded = load_models(models, weights_dir, options)
    return score_table(loaded, [str(p) for p in paths], options, fusion)


def score_table(
    models: Sequence[LoadedModel],
    paths: Sequence[str],
    options: RunOptions,
    fusion: str | None,
    filenames: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The output table of loaded ``models`` on ``paths`` (local engine), one row per path,
    named ``filenames`` (default: the paths)."""
    results = ResultTable(TableLayout.of(models, options, paths), len(paths))
    for result in iter_scores(models, paths, options):
        results.set(result.index, result)
    return results.to_frame(filenames if filenames is not None else paths, fusion)
