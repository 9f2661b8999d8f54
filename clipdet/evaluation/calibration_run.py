"""`clipdet calibrate`: score the user's own real images (and, optionally, synthetic ones) with
the run's detectors, or read a scores file that holds them; compute each score column's
operating points (``calibrate_scores``) and the models' fingerprints, and write the calibration
file that `clipdet score / report / metrics --calibration` apply."""

import logging
import math
import os
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from clipdet import storage
from clipdet.constants import DEFAULT_FUSION, FILENAME_COLUMN, FUSION_COLUMN, GROUP_COLUMN
from clipdet.evaluation.calibration import (
    DEFAULT_MIN_JPEG_QUALITY,
    DEFAULT_MISS_RATE,
    DEFAULT_REAL_LLR,
    SMALL_LIST_FACTOR,
    Calibration,
    OperatingPoint,
    ScoreCalibration,
    clopper_pearson,
    decision_column,
    decision_score,
    fpr_threshold,
    miss_threshold,
    stamp,
)
from clipdet.evaluation.quality import QualityModel, calibrated_table
from clipdet.evaluation.verdicts import coverage, verdicts
from clipdet.files import read_list, read_table, sha256_of
from clipdet.options import RunOptions
from clipdet.pipeline.domain import MIN_IMAGES, DomainDescription
from clipdet.pipeline.extensions.calibration_domain import DomainFeatures
from clipdet.pipeline.record import split_models
from clipdet.pipeline.scoring import load_models, score_results, score_table

logger = logging.getLogger(__name__)

EXTERNAL_FINGERPRINT = {"arch": None, "external": True}


def calibrate(
    real_csv: str | os.PathLike,
    models: list[str],
    weights_dir: str | os.PathLike,
    fprs: list[float],
    *,
    fake_csv: str | os.PathLike | None = None,
    scores: str | os.PathLike | None = None,
    fusion: str | None = DEFAULT_FUSION,
    miss_rate: float = DEFAULT_MISS_RATE,
    min_jpeg_quality: float = DEFAULT_MIN_JPEG_QUALITY,
    options: RunOptions | None = None,
    domain: bool = True,
    quality: bool = False,
    degrade: int = 0,
) -> Calibration:
    """The calibration of ``models`` (and their ``fusion``) at each false-positive rate of
    ``fprs`` on the real images of ``real_csv``; with ``fake_csv`` also their true-positive
    rates and the lower threshold at ``miss_rate``. ``scores``: a scores file (from `clipdet
    score` with these models, or another tool's score columns: external detectors) holding
    every listed image, read instead of scoring again. With ``domain`` (and scoring), the file
    also describes the images in the features of ``domain_model`` (where the calibration
    holds: clipdet.pipeline.domain). With ``quality``, each detector's score is first
    calibrated for the images' quality (clipdet.evaluation.quality, fitted on both lists; a
    ``group`` column weighs each source once), with ``degrade`` in-memory degraded copies of
    every listed image added to the fit; the thresholds are set on the calibrated LLRs."""
    if quality and fake_csv is None:
        raise ValueError("--quality fits the scores of real and synthetic images: give --fake")
    if degrade and not quality:
        raise ValueError("--degrade makes copies for the quality-aware fit: add --quality")
    if degrade and scores is not None:
        raise ValueError("--degrade scores degraded copies of the images: not with --scores")
    options = replace(options or RunOptions(), calibration=None, facts=quality).resolved()
    external = external_columns(models, weights_dir) if scores is not None else []
    loaded = load_models([n for n in models if n not in external], weights_dir, options)
    detectors, _ = split_models(loaded)
    names = [n for n in models if n in external or n in {m.name for m in detectors}]
    if not names:
        raise ValueError("calibration needs at least one detection model")
    feature_model = domain_model(detectors) if domain and scores is None else None
    real, real_features = _scores_of(real_csv, loaded, names, fusion, scores, options,
                                     feature_model)  # fmt: skip
    fake, fake_features = (
        (None, None) if fake_csv is None
        else _scores_of(fake_csv, loaded, names, fusion, scores, options, feature_model)
    )  # fmt: skip
    raw = {"real": real, "fake": fake}
    model = None
    if quality:
        fit_real = _with_copies(real, real_csv, loaded, fusion, options, degrade)
        fit_fake = _with_copies(fake, fake_csv, loaded, fusion, options, degrade)
        model = QualityModel.fit(fit_real, fit_fake, names, GROUP_COLUMN)
        real = calibrated_table(model, real, names, fusion)
        fake = calibrated_table(model, fake, names, fusion)
    decision, columns = calibrate_scores(real, fake, names, fprs, fusion, miss_rate)
    sides = [m.input_size for m in detectors if m.input_size]
    calibration = Calibration(
        decision=decision,
        detectors=names,
        fusion=(fusion or "none") if decision == FUSION_COLUMN else None,
        columns=columns,
        models={m.name: model_fingerprint(m) for m in detectors}
        | {name: EXTERNAL_FINGERPRINT for name in external},
        min_side=max(sides) if sides else None,
        min_jpeg_quality=float(min_jpeg_quality),
        lists={"real": _list_record(real_csv, len(real))}
        | ({"fake": _list_record(fake_csv, len(fake))} if fake is not None else {}),
        date=stamp(),
        quality=model.to_dict() if model is not None else None,
    )
    if degrade:
        calibration.quality["degraded_copies"] = {"per_image": degrade,
                                                  "chains": list(DEGRADE_CHAINS)}  # fmt: skip
    if feature_model is not None:
        features = [f for f in (real_features, fake_features) if f is not None]
        features = np.concatenate(features) if features else np.zeros((0, 1))
        if len(features) < MIN_IMAGES:
            logger.warning(
                "%d images scored: too few (under %d) to say where the calibration holds; it "
                "is applied everywhere", len(features), MIN_IMAGES,
            )  # fmt: skip
        else:
            calibration.domain = DomainDescription.fit(features, feature_model).to_dict()
    elif domain:
        logger.info("no description of where the calibration holds: it needs the images' "
                    "features, computed when calibrate scores them (without --scores)")  # fmt: skip
    for kind, table in raw.items():
        if table is not None:  # the share of the list a verdict decides (score rules)
            calibration.lists[kind]["coverage"] = coverage(verdicts(calibration, table)[0])
    for point in calibration.columns[decision].points:
        if warning := small_list_warning(point):
            logger.warning("%s", warning)
    return calibration


def calibrate_scores(
    real: pd.DataFrame,
    fake: pd.DataFrame | None,
    detectors: list[str],
    fprs: list[float],
    fusion: str | None = None,
    miss_rate: float = DEFAULT_MISS_RATE,
) -> tuple[str, dict[str, ScoreCalibration]]:
    """Operating points for every detector column, the fusion column and the decision score
    (``decision_column``) of two scores tables; rows that could not be scored are left out."""
    for fpr in fprs:
        if not 0 < fpr < 1:
            raise ValueError(f"--fpr must lie in (0, 1), got {fpr:g}")
    if not 0 < miss_rate < 1:
        raise ValueError(f"--miss_rate must lie in (0, 1), got {miss_rate:g}")
    decision = decision_column(detectors, FUSION_COLUMN in real.columns)
    names = [*detectors, *([decision] if decision not in detectors else [])]
    columns = {}
    for name in names:
        r = _finite(decision_score(real, name, detectors), "real", name)
        f = None if fake is None else _finite(decision_score(fake, name, detectors), "fake", name)
        if r.size == 0:
            raise ValueError(f"no real image could be scored by {name}")
        points = [_point(r, f, fpr) for fpr in fprs]
        if f is not None and f.size:
            low, rule = miss_threshold(f, miss_rate), f"fake list at miss rate {miss_rate:g}"
        else:
            low, rule = DEFAULT_REAL_LLR, "default: LLR below -log(19) (σ < 0.05)"
        columns[name] = ScoreCalibration(points, low, rule)
    return decision, columns


def _finite(scores: np.ndarray, which: str, name: str) -> np.ndarray:
    keep = np.isfinite(scores)
    if not keep.all():
        logger.warning("%s: %d %s images not scored, left out", name, int((~keep).sum()), which)
    return scores[keep]


def _point(real: np.ndarray, fake: np.ndarray | None, fpr: float) -> OperatingPoint:
    threshold = fpr_threshold(real, fpr)
    k = int((real > threshold).sum())
    point = OperatingPoint(
        fpr, threshold, int(real.size), k, k / real.size, clopper_pearson(k, real.size)[1],
        real.size < SMALL_LIST_FACTOR / fpr,
    )  # fmt: skip
    if fake is not None and fake.size:
        hits = int((fake > threshold).sum())
        low, high = clopper_pearson(hits, fake.size)
        point.n_fake, point.tpr = int(fake.size), hits / fake.size
        point.tpr_low, point.tpr_high = low, high
    return point


def small_list_warning(point: OperatingPoint) -> str | None:
    if not point.small_list:
        return None
    needed = math.ceil(SMALL_LIST_FACTOR / point.target_fpr)
    return (
        f"only {point.n_real} real images for a false-positive rate of {point.target_fpr:g}: "
        f"at least {needed} (3 / fpr) are needed for the threshold to mean that rate; the "
        f"bound says how far it may be off ({point.fpr_upper:.4f})"
    )


def external_columns(names: list[str], weights_dir) -> list[str]:
    """The names of ``names`` that are no clipdet model (neither known nor a folder in
    ``weights_dir``): another tool's score columns in a scores file (> 0 synthetic), kept as
    external detectors, whose weights cannot be checked."""
    from clipdet.models.weights import available_models

    known = set(available_models(weights_dir))
    external = [name for name in names if name not in known]
    if external:
        logger.info("external detectors (score columns, weights not checked): %s",
                    ", ".join(external))  # fmt: skip
    return external


def _scores_of(csv, models, names, fusion, scores, options: RunOptions, feature_model=None):
    """Scores of the images of list ``csv``: from the ``scores`` file, or computed; and with
    ``feature_model`` (when computed) each scored image's features of that model ([n, D])."""
    table, paths = read_list(csv)
    filenames = table[FILENAME_COLUMN].tolist()
    if scores is not None:
        found = read_table(scores, [FILENAME_COLUMN]).drop_duplicates(FILENAME_COLUMN)
        found = found.set_index(FILENAME_COLUMN)
        missing = [name for name in filenames if name not in found.index]
        if missing:
            raise ValueError(
                f"{len(missing)} images of {csv} have no row in {scores} (e.g. {missing[0]}): "
                "score them with the same models, or leave out --scores"
            )
        absent = [c for c in names if c not in found.columns]
        if absent:
            raise ValueError(f"{scores} has no column for {', '.join(absent)}")
        return _group_of(found.loc[filenames].reset_index(), table), None
    if feature_model is None:
        return _group_of(score_table(models, paths, options, fusion, filenames), table), None
    reader = DomainFeatures(feature_model)
    results = score_results(models, paths, options, [reader])
    vectors = results.extension_values(reader.name)
    features = np.stack(list(vectors.values())) if vectors else None
    return _group_of(results.to_frame(filenames, fusion), table), features


def _group_of(scores: pd.DataFrame, listed: pd.DataFrame) -> pd.DataFrame:
    """The scores with the list's ``group`` column (the copies of one source), if it has one."""
    if GROUP_COLUMN in listed.columns and GROUP_COLUMN not in scores.columns:
        scores = scores.assign(**{GROUP_COLUMN: listed[GROUP_COLUMN].to_numpy()})
    return scores


# --degrade: the copies a picture gets as it circulates (recompressed, resized, cropped, WebP)
DEGRADE_CHAINS = (
    "jpeg:50..95",
    "resize:0.3..1/bicubic,jpeg:50..95",
    "crop:0.7..1,resize:0.5..1/bilinear,jpeg:50..95",
    "resize:0.3..1/bicubic,webp:50..95",
    "crop:0.8..1,resize:0.3..1/lanczos,jpeg:50..95,resize:0.8..1/bicubic,jpeg:60..95",
)


def _with_copies(table, csv, models, fusion, options: RunOptions, degrade: int) -> pd.DataFrame:
    """``table`` and, with ``degrade``, that many in-memory degraded copies of each of its
    images (chains of DEGRADE_CHAINS at settings drawn per image; nothing written), each copy
    in its source's group."""
    if not degrade:
        return table
    listed, paths = read_list(csv)
    filenames = listed[FILENAME_COLUMN].tolist()
    groups = (listed[GROUP_COLUMN].astype(str).tolist() if GROUP_COLUMN in listed.columns
              else filenames)  # fmt: skip
    copies = [table.assign(**{GROUP_COLUMN: groups})]
    for k in range(degrade):
        chain = DEGRADE_CHAINS[k % len(DEGRADE_CHAINS)]
        seen = replace(options, perturb=chain, perturb_seed=options.perturb_seed + 1 + k)
        copy = score_table(models, paths, seen, fusion, filenames)
        copies.append(copy.assign(**{GROUP_COLUMN: groups}))
    logger.info("%s: %d images and %d degraded copies of each", csv, len(table), degrade)
    return pd.concat(copies, ignore_index=True)


def domain_model(detectors) -> str:
    """The detector whose features describe the calibration images: the first that reads a
    frozen backbone (a foundation model's features), else the first."""
    frozen = [m for m in detectors if m.detector.frozen_backbone]
    return (frozen or list(detectors))[0].name


def _list_record(csv, n: int) -> dict:
    location = str(csv)
    local = not storage.is_url(location)
    digest = sha256_of(location) if local else None
    return {"path": str(Path(location).resolve()) if local else location, "sha256": digest, "n": n}


def model_fingerprint(model) -> dict:
    """What must not change for a calibration to apply to a loaded model: its arch, the
    sha256 of its weights file and its frozen backbone (tag, or file name and size)."""
    detector = model.detector
    return {
        "arch": model.config.arch,
        "weights_sha256": sha256_of(model.weights_path),
        "backbone": portable_backbone(detector.backbone_key) if detector.frozen_backbone else None,
        "input_size": model.input_size,
    }


def portable_backbone(identity: str | None) -> str | None:
    """A backbone identity without the local path of its file (its name and size stay), so
    that a calibration moves with the weights folder."""
    if not identity:
        return None
    return re.sub(r"file:([^|]*/)?([^/|:]+):(\d+):\d+", r"file:\2:\3", identity)
