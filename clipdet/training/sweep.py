"""Which backbone and layer detect best on the user's own labelled images: features extracted
once per backbone for every asked layer (one pass, cached, resumable), a linear head per
(backbone, layer) scored by K-fold cross-validation, and one table to choose from.

    report = sweep("train.csv", ["pe-core-l14-336", "dinov3-vitl16"], ["embed", -4, -8])
    report.table   # one row per backbone and layer, best cross-validated AUC first
"""

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from clipdet.evaluation.metrics import METRICS, bootstrap_interval
from clipdet.models.factory import BackboneCache
from clipdet.models.heads import LinearSVMHead, _folds
from clipdet.options import RunOptions
from clipdet.pipeline.feature_cache import FeatureCache
from clipdet.pipeline.features import extract_group_features, frozen_feature_group
from clipdet.training.features import LabelledImages, feature_config, read_labelled_list

logger = logging.getLogger(__name__)

# Heads fitted on up to this many images use the exact solver (an n x n Gram matrix).
EXACT_SOLVER_ROWS = 3000
# The figures of each row, computed on the out-of-fold LLRs, with bootstrap intervals.
FIGURES = {"auc": "auc", "bacc": "acc", "tpr_at_fpr1": "pd_fpr1"}
COLUMNS = [
    "backbone", "layer", "block", "dim", "auc", "auc_lo", "auc_hi", "bacc", "bacc_lo",
    "bacc_hi", "tpr_at_fpr1", "tpr_at_fpr1_lo", "tpr_at_fpr1_hi", "ece", "images", "skipped",
    "images_per_s", "peak_rss_mb", "error",
]  # fmt: skip


@dataclass
class SweepReport:
    """The table (one row per backbone and layer, best cross-validated AUC first) and, per
    row, the out-of-fold LLRs it was computed on (NaN for unusable images)."""

    table: pd.DataFrame
    llrs: dict[tuple[str, str], np.ndarray]
    labels: np.ndarray


def sweep(
    in_csv: str | os.PathLike,
    backbones: Sequence[str],
    layers: Sequence[str | int] = ("embed",),
    folds: int = 5,
    options: RunOptions | None = None,
    C: float | None = None,
    ci: float = 0.95,
    n_boot: int = 1000,
    **fields,
) -> SweepReport:
    """Cross-validated detection figures of a linear head on each backbone at each layer.
    ``options`` (or RunOptions ``fields``) say how features are computed; with
    ``feature_cache`` set, features already there are not computed again (an interrupted
    sweep continues where it stopped)."""
    if folds < 2:
        raise ValueError(f"--folds must be at least 2, got {folds}")
    images = read_labelled_list(in_csv)
    labels = images.labels
    if len(set(labels)) < 2:
        raise ValueError(f"{in_csv}: a sweep needs real and synthetic images")
    options = replace(options or RunOptions(), **fields).resolved()
    for backbone in backbones:  # every name checked before any backbone is loaded
        feature_config(backbone=backbone)
    rows, llrs = [], {}
    for backbone in backbones:
        for row, oof in _sweep_backbone(images, backbone, layers, folds, options, C, ci, n_boot):
            rows.append(row)
            llrs[(backbone, str(row["layer"]))] = oof
    table = pd.DataFrame(rows, columns=COLUMNS)
    order = table["auc"].fillna(-np.inf).sort_values(ascending=False, kind="stable").index
    return SweepReport(table.loc[order].reset_index(drop=True), llrs, labels)


def _sweep_backbone(images: LabelledImages, backbone, layers, folds, options, C, ci, n_boot):
    """(row, out-of-fold LLRs) for each layer of one backbone, from one extraction pass."""
    backbones = BackboneCache(options.backbone_weights)
    groups, transforms, failed = {}, {}, {}
    for layer in layers:
        try:
            group, transform = frozen_feature_group(feature_config(backbone=backbone, layer=layer),
                                                    backbones)  # fmt: skip
        except ValueError as e:  # e.g. a block this backbone does not have
            failed[layer] = str(e)
            continue
        groups[layer] = group
        transforms[group.transform_key] = transform
    if groups:
        features, usable, measured = _extract(images, backbone, groups, transforms, options)
    for layer in layers:
        if layer in failed:
            yield _row(backbone, layer, error=failed[layer]), np.full(len(images.paths), np.nan)
            continue
        group = groups[layer]
        oof = _out_of_fold_llrs(features[group.key], images.labels, usable, folds, C)
        block = group.layer if isinstance(group.layer, int) else ""
        row = _row(backbone, layer, block=block, dim=group.num_features, **measured)
        row.update(_figures(images.labels[usable], oof[usable], ci, n_boot))
        yield row, oof


def _extract(images: LabelledImages, backbone, groups, transforms, options):
    """(features by group key, usable rows, what was measured) of one pass over the images:
    speed counts only the images the backbone computed (not those found in the cache)."""
    next(iter(groups.values())).backbone.to(options.device)  # one module for every layer
    logger.info("backbone %s: %d images, layers %s", backbone, len(images.paths),
                ", ".join(str(layer) for layer in groups))  # fmt: skip
    feature_cache = FeatureCache(options.feature_cache) if options.feature_cache else None
    writes = feature_cache.writes if feature_cache else 0
    distinct = list({g.key: g for g in groups.values()}.values())
    with PeakMemory() as memory:
        start = time.perf_counter()
        features, errors = extract_group_features(
            distinct, transforms, images.paths, options.device, options.batch_size,
            options.num_workers, feature_cache, options.progress,
        )  # fmt: skip
        seconds = time.perf_counter() - start
    computed = len(images.paths)
    if feature_cache is not None:  # (written by the infer stage, in this process)
        computed = (feature_cache.writes - writes) // len(distinct)
    speed = computed / seconds if computed and seconds > 0 else float("nan")
    usable = np.all([np.isfinite(features[g.key]).all(axis=1) for g in distinct], axis=0)
    _warn_skipped(backbone, images, errors, usable)
    measured = {"images": int(usable.sum()), "skipped": int((~usable).sum()),
                "images_per_s": speed, "peak_rss_mb": memory.peak_mb}  # fmt: skip
    return features, usable, measured


def _row(backbone, layer, **values) -> dict:
    row = dict.fromkeys(COLUMNS, np.nan)
    row.update(backbone=backbone, layer=str(layer), block="", error="")
    row.update(values)
    return row


def _warn_skipped(backbone, images: LabelledImages, errors, usable) -> None:
    if (~usable).any():
        examples = [f"{n}: {e}" for n, e in zip(images.filenames, errors, strict=True) if e]
        logger.warning("backbone %s: %d unreadable images skipped, e.g. %s", backbone,
                       int((~usable).sum()), "; ".join(examples[:3]))  # fmt: skip


def _out_of_fold_llrs(X, y, usable, folds: int, C) -> np.ndarray:
    """Each usable image's LLR from a head (the trainer's: C cross-validated within the
    training folds, calibrated; solved exactly up to ``EXACT_SOLVER_ROWS`` training images,
    which gives liblinear's figures to 1e-3 in a fraction of the time) fitted on the other
    folds; stratified, seeded folds."""
    oof = np.full(len(y), np.nan)
    rows = np.flatnonzero(usable)
    counts = np.bincount(y[rows], minlength=2)
    if counts.min() < 3:  # each training part needs 2 images of each class
        logger.warning("too few usable images of one class (%s) for cross-validation",
                       counts.tolist())  # fmt: skip
        return oof
    _, splits = _folds(y[rows], counts.min(), folds, 0)  # fewer folds for a small class
    heads_logger = logging.getLogger(LinearSVMHead.__module__)
    level = heads_logger.level
    heads_logger.setLevel(logging.WARNING)  # each fold's C grid is not news
    try:
        for train, test in splits:
            head = LinearSVMHead(C=C, solver=_solver(len(train))).fit(
                X[rows[train]], y[rows[train]]
            )
            oof[rows[test]] = head.decision_function(X[rows[test]])
    finally:
        heads_logger.setLevel(level)
    return oof


def _solver(rows: int) -> str:
    return "exact" if rows <= EXACT_SOLVER_ROWS else "liblinear"


def _figures(y, llr, ci: float, n_boot: int) -> dict:
    if len(llr) == 0 or not np.isfinite(llr).all() or len(set(y)) < 2:
        return {"error": "too few usable images to cross-validate"}
    out = {"ece": METRICS["ece"](y, llr)}
    for column, metric in FIGURES.items():
        out[column] = METRICS[metric](y, llr)
        if n_boot:
            out[f"{column}_lo"], out[f"{column}_hi"] = bootstrap_interval(
                METRICS[metric], y, llr, ci, n_boot=n_boot
            )
    return out


class PeakMemory:
    """The largest resident set size of this process while the block runs (sampled every
    20 ms from /proc; the process's high-water mark where there is no /proc), in MB."""

    def __init__(self, every: float = 0.02):
        self.every = every
        self.peak_mb = float("nan")
        self._stop = threading.Event()

    def __enter__(self) -> "PeakMemory":
        self.peak_mb = _rss_mb()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            self.peak_mb = max(self.peak_mb, _rss_mb())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, _rss_mb())


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pick_row(table: pd.DataFrame, pick: str | None = None) -> pd.Series:
    """The row to save: the best cross-validated AUC (the table's first row), or ``pick``,
    ``BACKBONE:LAYER`` as the table names them."""
    if pick is None:
        if table.empty or not np.isfinite(table["auc"].iloc[0]):
            raise ValueError("no backbone and layer gave a cross-validated AUC to pick")
        return table.iloc[0]
    backbone, sep, layer = pick.rpartition(":")
    found = table[(table["backbone"] == backbone) & (table["layer"] == layer)]
    if not sep or found.empty:
        valid = ", ".join(f"{b}:{layer}" for b, layer in zip(table["backbone"], table["layer"],
                                                             strict=True))  # fmt: skip
        raise ValueError(f"--pick {pick!r} is not a row of the sweep; valid choices: {valid}")
    return found.iloc[0]
