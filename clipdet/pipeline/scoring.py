"""Batch scoring: load models, then run the prepare and infer stages (prepare.py, infer.py)
on an engine (the local one: engine.py) and collect the results."""

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import replace

import pandas as pd
import torch

from clipdet.constants import CLIP_INPUT_SIZE
from clipdet.models.factory import BackboneCache, LoadedModel, create_detector
from clipdet.options import RunOptions
from clipdet.pipeline.engine import run_local
from clipdet.pipeline.extensions import run_extensions
from clipdet.pipeline.feature_cache import FeatureCache
from clipdet.pipeline.features import make_preparer, usable_cache
from clipdet.pipeline.infer import ScoreInfer
from clipdet.pipeline.prepare import Preparer, PrepareSettings
from clipdet.pipeline.record import ImageResult, ResultTable, TableLayout
from clipdet.pipeline.video_sampling import FrameSampling

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
    models: Sequence[LoadedModel],
    options: RunOptions,
    maps: bool = False,
    profile=None,
    paths: Sequence[str] | None = None,
    extra_extensions: Sequence = (),
) -> tuple[Preparer, ScoreInfer]:
    """The prepare and infer stages of a run of ``models`` (options resolved) on ``paths``
    (None: not known ahead); with ``maps`` the results carry the evidence map of every
    full-resolution detector; a ``profile`` (clipdet.pipeline.profile.Profile) records where
    the time goes. The run's row extensions (``run_extensions``, then ``extra_extensions``)
    compute their values."""
    from clipdet.pipeline.perturb import Perturbation, parse_views

    if options.decode not in DECODE_MODES:
        raise ValueError(
            f"unknown decode mode {options.decode!r}; valid choices: {', '.join(DECODE_MODES)}"
        )
    perturbation = Perturbation(options.perturb, options.perturb_seed) if options.perturb else None
    cache = FeatureCache(options.feature_cache) if options.feature_cache else None
    if cache is not None and options.decode != "exact":
        logger.warning("feature cache not used: --decode fast features are not the exact ones")
        cache = None
    views = parse_views(options.views, options.perturb_seed) if options.views else ()
    cache = usable_cache(cache, perturbation or views or None)
    extensions = (*run_extensions(options, paths, models), *extra_extensions)
    settings = _prepare_settings(models, options, extensions, perturbation, views,
                                 profile is not None)  # fmt: skip
    infer = ScoreInfer(
        models, options.device, cache, maps, extensions, profile, max_batch=options.batch_size
    )  # a batch's video frames: several passes
    transforms = {m.transform_key: m.transform for m in models}
    preparer = make_preparer(infer.groups, transforms, cache, perturbation, settings)
    return preparer, infer


def _prepare_settings(models, options: RunOptions, extensions, perturbation, views, timed: bool):
    """How the prepare stage reads files for these options (``decode`` checked)."""
    min_side, encode = None, False
    if options.decode != "exact" and not all(m.preprocess.is_clip224 for m in models):
        logger.warning("--decode %s applies when every model reads a 224-px input; decoding "
                       "whole images on the CPU", options.decode)  # fmt: skip
    elif options.decode == "fast":
        min_side = FAST_DECODE_SIDE
    elif options.decode == "gpu":
        # perturbations and views work on PIL images; an extension may read the pixels
        encode = (perturbation is None and not views
                  and not any(ext.reads_pixels for ext in extensions))  # fmt: skip
    return PrepareSettings(timed, min_side, encode, extensions, FrameSampling.of(options), views)


def iter_scores(
    models: Sequence[LoadedModel],
    paths: Sequence[str],
    options: RunOptions | None = None,
    rows: Sequence[int] | None = None,
    maps: bool = False,
    profile=None,
    extra_extensions: Sequence = (),
    **fields,
) -> Iterator[ImageResult]:
    """Score ``rows`` of ``paths`` (default: all) with every model on the local engine,
    yielding results batch by batch in order; ``result.index`` is the row index. Detection
    models give one LLR each (``scores``), attribution models their class logits
    (``logits``); with ``maps``, full-resolution detectors their evidence maps (``maps``).
    Models on one backbone share its forward pass."""
    options = _options(options, fields)
    paths = list(paths)
    preparer, infer = scoring_stages(models, options, maps, profile, paths, extra_extensions)
    for results in run_local(
        preparer, infer, paths, rows, device=options.device,
        batch_size=options.batch_size, num_workers=options.num_workers,
        progress=options.progress, failures=lambda out: sum(bool(r.error) for r in out),
        profile=profile,
    ):  # fmt: skip
        yield from results


def score_table(
    models: Sequence[LoadedModel],
    paths: Sequence[str],
    options: RunOptions,
    fusion: str | None,
    filenames: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The output table of loaded ``models`` on ``paths`` (local engine), one row per path,
    named ``filenames`` (default: the paths)."""
    results = score_results(models, paths, options)
    return results.to_frame(filenames if filenames is not None else paths, fusion)


def score_results(
    models: Sequence[LoadedModel],
    paths: Sequence[str],
    options: RunOptions,
    extra_extensions: Sequence = (),
) -> ResultTable:
    """Every record of ``models`` on ``paths`` (local engine), with the values of the run's
    row extensions and of ``extra_extensions`` (``results.extension_values(name)``)."""
    layout = TableLayout.of(models, options, paths)
    layout = replace(layout, extensions=(*layout.extensions, *extra_extensions))
    results = ResultTable(layout, len(paths))
    for result in iter_scores(models, paths, options, extra_extensions=extra_extensions):
        results.set(result.index, result)
    return results
