"""The forensic report: one HTML page an analyst can read (``report.py``, ``main.py --report``).

Plain HTML, CSS and a little JavaScript, nothing fetched from the network when it is viewed.
Up to ``EMBED_LIMIT`` images it is one self-contained file (thumbnails, overlays and plots
embedded as data URIs); beyond, a folder ``<name>_files/`` beside it holds the row data
(``data.js``), thumbnails and plots, and the page shows ``PAGE_ROWS`` cards at a time.

Every value from the scores file (file names, errors, classes) reaches the page as JSON data
and is put in the page with ``textContent``: a file name is never read as HTML or code.
"""

import base64
import datetime
import html
import io
import itertools
import json
import logging
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from clipdet import __version__
from clipdet.constants import (
    DURATION_COLUMN,
    ERROR_COLUMN,
    FILENAME_COLUMN,
    FRAME_MAX_COLUMN,
    FRAMES_COLUMN,
    FUSION_COLUMN,
    INCONCLUSIVE,
    PROVENANCE_COLUMN,
    PROVENANCE_GENERATOR_COLUMN,
    REAL,
    SYNTHETIC,
    TEMPORAL_COLUMN,
    TIME_COLUMN,
    TYPE_COLUMN,
    VERDICT_COLUMN,
    VERDICT_REASON_COLUMN,
)
from clipdet.models.attribution import find_attribution_models
from clipdet.pipeline.columns import SCORE
from clipdet.pipeline.record import columns_of_kind
from clipdet.pipeline.results import add_verdicts
from clipdet.provenance.tokens import split_tokens

logger = logging.getLogger(__name__)

EMBED_LIMIT = 1000  # rows up to which the report is one self-contained file
PAGE_ROWS = 500  # cards shown at a time
THUMB_SIDE = 192
_ASSETS = Path(__file__).resolve().parent / "report_assets"


@dataclass
class ReportInputs:
    """A scores table (main.py's output) and what goes with it: each row's image path (for
    thumbnails; None: not shown), the labelled list (``typ``; for metrics), the folder of
    evidence maps (``main.py --maps``), the verdict threshold and how the run was made."""

    table: pd.DataFrame
    paths: list[str | None]
    labels: pd.DataFrame | None = None
    maps_dir: str | os.PathLike | None = None
    threshold: float = 0.0
    command: str = ""
    fusion: str | None = None
    calibration: object | None = None  # a calibration.Calibration: its three verdicts
    frames: pd.DataFrame | None = None  # a run's --frames_out table: video frames' scores


def detector_columns(table: pd.DataFrame) -> list[str]:
    """The detectors' LLR columns of a scores table (kind score: not fusion, attribution,
    labels, row extensions' columns or text)."""
    return columns_of_kind(table, SCORE)


def _number(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def make_thumbnail(path: str) -> str | None:
    """A JPEG thumbnail as a data URI (None when the image cannot be read)."""
    from clipdet.pipeline.images import load_rgb

    try:
        image = load_rgb(path, min_side=THUMB_SIDE)  # a JPEG at a reduced scale: shrunk anyway
    except OSError:
        return None
    image.thumbnail((THUMB_SIDE, THUMB_SIDE))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


STRIP_FRAMES = 8  # a video card shows up to this many of its sampled frames
STRIP_SIDE = 96


def make_video_strip(job: tuple[str, tuple[float, ...]]) -> list[tuple[float, str]]:
    """(time, JPEG data URI) of the frames a video shows at the given times (an empty list
    when it cannot be read)."""
    from clipdet.pipeline.video import FrameSampling, open_video

    path, times = job
    strip = []
    try:
        with open_video(path, None, FrameSampling(times=times, animated="video")) as reader:
            for frame in reader.frames():
                image = frame.image
                image.thumbnail((STRIP_SIDE, STRIP_SIDE))
                buffer = io.BytesIO()
                image.save(buffer, format="JPEG", quality=80)
                uri = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
                strip.append((frame.time, uri))
    except OSError:
        return strip
    return strip


def _thumbnail_job(job):
    return make_video_strip(job) if isinstance(job, tuple) else make_thumbnail(job)


def make_thumbnails(paths: list, workers: int | None = None) -> list:
    """Thumbnails in parallel processes; rows without a path get None. A row given as
    (path, times) is a video: its strip of frames (``make_video_strip``)."""
    todo = [i for i, p in enumerate(paths) if p]
    found: list[str | None] = [None] * len(paths)
    if not todo:
        return found
    workers = workers or min(8, os.cpu_count() or 1)
    if workers <= 1 or len(todo) < 8:
        results = map(_thumbnail_job, [paths[i] for i in todo])
        for i, uri in zip(todo, results, strict=True):
            found[i] = uri
        return found
    with ProcessPoolExecutor(workers) as pool:
        results = pool.map(_thumbnail_job, [paths[i] for i in todo], chunksize=16)
        for i, uri in zip(todo, results, strict=True):
            found[i] = uri
    return found


def _file_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _maps_by_row(inputs: ReportInputs) -> dict[str, list[dict]]:
    """Overlay images per file name, from the maps folder's manifest."""
    from clipdet.pipeline.evidence_maps import read_manifest

    if not inputs.maps_dir:
        return {}
    folder = Path(inputs.maps_dir)
    found: dict[str, list[dict]] = {}
    for row in read_manifest(folder).itertuples(index=False):
        if row.overlay:
            found.setdefault(row.filename, []).append(
                {"model": row.model, "path": folder / row.overlay, "mean": _number(row.mean)}
            )
    return found


def _rows(inputs: ReportInputs, detectors: list[str]) -> list[dict]:
    if inputs.calibration is not None:
        from clipdet.evaluation.calibration import add_calibrated_verdicts

        table = add_calibrated_verdicts(inputs.table, inputs.calibration)
    else:
        table = add_verdicts(inputs.table, detectors, inputs.threshold)
    attribution = find_attribution_models(table.columns)
    rows = []
    for record in table.to_dict(orient="records"):
        row = {
            "name": str(record.get(FILENAME_COLUMN, "")),
            "error": "" if pd.isna(record.get(ERROR_COLUMN)) else str(record.get(ERROR_COLUMN)),
            "verdict": _text(record.get(VERDICT_COLUMN)),
            "reason": _text(record.get(VERDICT_REASON_COLUMN)),
            "scores": {name: _number(record[name]) for name in detectors},
            "fusion": _number(record.get(FUSION_COLUMN)),
            "attribution": [],
            "provenance": split_tokens(_text(record.get(PROVENANCE_COLUMN))),
            "generator": _text(record.get(PROVENANCE_GENERATOR_COLUMN)),
        }
        for model in attribution:
            probs = {c: _number(record.get(f"{model.name}_p_{c}")) for c in model.classes}
            top = sorted(((p, c) for c, p in probs.items() if p is not None), reverse=True)[:3]
            label = record.get(model.name)
            row["attribution"].append({
                "model": model.name,
                "label": "" if pd.isna(label) else str(label),
                "top": [[c, p] for p, c in top],
                "unknown": _number(record.get(f"{model.name}_unknown_score")),
            })  # fmt: skip
        rows.append(row)
    return rows


def _text(value) -> str:
    return "" if value is None or pd.isna(value) else str(value)


def provenance_counts(rows: list[dict]) -> dict[str, int]:
    """Rows with evidence of each kind (``c2pa``, ``iptc``, …), unreadable evidence apart."""
    counts: dict[str, int] = {}
    for row in rows:
        kinds = {token.split(":", 1)[0] for token in row["provenance"]}
        for kind in kinds:
            counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))


def _metrics_section(inputs: ReportInputs, detectors: list[str], assets) -> dict | None:
    """Per-generator AUC / balanced accuracy (as compute_metrics.py gives them), ROC curves and
    LLR histograms, when the list has labels."""
    if inputs.labels is None or TYPE_COLUMN not in inputs.labels.columns or not detectors:
        return None
    from clipdet.evaluation.metrics import compute_metric_table, evaluation_data
    from clipdet.evaluation.plots import plot_roc_curves, plot_score_histograms

    fusion = [FUSION_COLUMN] if FUSION_COLUMN in inputs.table.columns else []
    scores = inputs.table[[FILENAME_COLUMN, *detectors, *fusion]]
    labels = inputs.labels[[FILENAME_COLUMN, TYPE_COLUMN]].astype(str)
    try:
        data = evaluation_data(labels, scores, "the scores")
    except ValueError as e:  # e.g. no real images among them: no metrics, the rest stands
        logger.info("report without metrics: %s", e)
        return None
    tables = {}
    for metric in ("auc", "acc"):
        table = compute_metric_table(data, metric)
        rows = [[str(name), *map(_number, values)] for name, values in table.iterrows()]
        tables[metric] = {"columns": [str(c) for c in table.columns], "rows": rows}
    with tempfile.TemporaryDirectory() as folder:
        plots = plot_roc_curves(data, folder) + plot_score_histograms(data, folder)
        images = [{"title": p.stem, "src": assets(p)} for p in sorted(plots)]
    return {"tables": tables, "plots": images}


def write_report(inputs: ReportInputs, out_html: str | os.PathLike) -> Path:
    """Write the report to ``out_html`` (and ``<stem>_files/`` beside it for large runs)."""
    out_html = Path(out_html).resolve()
    out_html.parent.mkdir(parents=True, exist_ok=True)
    if FILENAME_COLUMN not in inputs.table.columns:
        raise ValueError(f"the scores have no {FILENAME_COLUMN!r} column")
    detectors = detector_columns(inputs.table)
    rows = _rows(inputs, detectors)
    embed = len(rows) <= EMBED_LIMIT
    files = out_html.with_name(out_html.stem + "_files")
    if files.exists():
        shutil.rmtree(files)
    if not embed:
        (files / "thumbs").mkdir(parents=True)

    copied = itertools.count()

    def asset(path: Path) -> str:
        """A data URI (one file) or a copy in the files folder (large reports)."""
        if embed:
            return _file_uri(path)
        target = files / "assets" / f"{next(copied):07d}{path.suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        return target.relative_to(out_html.parent).as_posix()

    failed = {i for i, row in enumerate(rows) if row["error"]}  # never decoded again
    jobs: list = [None if i in failed else p for i, p in enumerate(inputs.paths)]
    _video_rows(inputs.table, rows, jobs, _frame_curves(inputs.frames, detectors))
    thumbs = itertools.count()

    def thumb(uri: str | None) -> str | None:
        if uri is None or embed:
            return uri
        target = files / "thumbs" / f"{next(thumbs):07d}.jpg"
        target.write_bytes(base64.b64decode(uri.split(",", 1)[1]))
        return target.relative_to(out_html.parent).as_posix()

    for i, found in enumerate(make_thumbnails(jobs)):
        if "video" not in rows[i]:
            rows[i]["thumb"] = thumb(found)
            continue
        strip = [{"t": t, "src": thumb(uri)} for t, uri in found or []]
        rows[i]["video"]["strip"] = strip
        rows[i]["thumb"] = strip[0]["src"] if strip else None
    maps = _maps_by_row(inputs)
    for row in rows:
        row["maps"] = [
            {"model": m["model"], "mean": m["mean"], "src": asset(m["path"])}
            for m in maps.get(row["name"], [])
            if m["path"].exists()
        ]
    summary = {
        "images": len(rows),
        "scored": len(rows) - len(failed),
        "failed": len(failed),
        "flagged": sum(row["verdict"] == SYNTHETIC for row in rows),
        "inconclusive": sum(row["verdict"] == INCONCLUSIVE for row in rows),
        "real": sum(row["verdict"] == REAL for row in rows),
        "threshold": _decision_threshold(inputs),
        "calibration": inputs.calibration.describe() if inputs.calibration else None,
        "models": detectors + [a["model"] for a in (rows[0]["attribution"] if rows else [])],
        "fusion": inputs.fusion or (FUSION_COLUMN if FUSION_COLUMN in inputs.table else "none"),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "version": __version__,
        "command": inputs.command,
        "page_rows": PAGE_ROWS,
        "has_fusion": FUSION_COLUMN in inputs.table.columns,
        "detectors": detectors,
        "provenance": (
            provenance_counts(rows) if PROVENANCE_COLUMN in inputs.table.columns else None
        ),
    }
    metrics = _metrics_section(inputs, detectors, asset)
    payload = {"summary": summary, "rows": rows, "metrics": metrics}
    data = _json_for_script(payload)
    if embed:
        data_tag = f'<script id="clipdet-data" type="application/json">{data}</script>'
    else:
        (files / "data.js").write_text(f"window.CLIPDET_DATA = {data};\n", encoding="utf-8")
        src = html.escape((files / "data.js").relative_to(out_html.parent).as_posix())
        data_tag = f'<script src="{src}"></script>'
    page = (_ASSETS / "report.html").read_text(encoding="utf-8")
    page = page.replace("/*STYLE*/", (_ASSETS / "report.css").read_text(encoding="utf-8"))
    page = page.replace("/*SCRIPT*/", (_ASSETS / "report.js").read_text(encoding="utf-8"))
    page = page.replace("<!--DATA-->", data_tag)
    page = page.replace("<!--TITLE-->", html.escape(f"clipdet report: {len(rows)} images"))
    from clipdet.files import write_text_atomic

    return write_text_atomic(page, out_html)


def _frame_curves(frames: pd.DataFrame | None, detectors: list[str]) -> dict[str, list]:
    """Each video's frame scores over time, from a run's frames table: [time, score] pairs,
    the score being the frames' fusion, else their largest LLR."""
    if frames is None or not len(frames):
        return {}
    models = [c for c in frames.columns if c in detectors]
    score = frames[FUSION_COLUMN] if FUSION_COLUMN in frames else frames[models].max(axis=1)
    curves = {}
    for name, part in frames.assign(_score=score).groupby(FILENAME_COLUMN, sort=False):
        pairs = zip(part[TIME_COLUMN], part["_score"], strict=True)
        curves[str(name)] = [[_number(t), _number(v)] for t, v in pairs]
    return curves


def _video_rows(table: pd.DataFrame, rows: list[dict], jobs: list, curves: dict) -> None:
    """Give each video row its facts and frame curve (``row["video"]``), and its job the times
    of up to ``STRIP_FRAMES`` of its scored frames (the strip's)."""
    from clipdet.pipeline.video import FrameSampling

    if FRAMES_COLUMN not in table.columns:
        return
    for i, row in enumerate(rows):
        count = _number(table[FRAMES_COLUMN].iloc[i])
        if count is None:
            continue
        duration = _number(table[DURATION_COLUMN].iloc[i]) or 0.0
        curve = curves.get(row["name"], [])
        row["video"] = {
            "frames": int(count),
            "duration": duration,
            "temporal": _number(table[TEMPORAL_COLUMN].iloc[i]),
            "frame_max": _number(table[FRAME_MAX_COLUMN].iloc[i]),
            "curve": curve,
        }
        times = [t for t, _ in curve]
        if not times:  # no frames table: the uniform sampling's times, as the run had them
            times = FrameSampling(frames=int(count)).targets(duration)
        if len(times) > STRIP_FRAMES:
            times = [times[round(k * (len(times) - 1) / (STRIP_FRAMES - 1))]
                     for k in range(STRIP_FRAMES)]  # fmt: skip
        if jobs[i] is not None:
            jobs[i] = (jobs[i], tuple(times))


def _decision_threshold(inputs: ReportInputs) -> float:
    """The threshold drawn on the score bars: the calibrated one, else the run's."""
    if inputs.calibration is None:
        return inputs.threshold
    return inputs.calibration.point().threshold


def _json_for_script(payload) -> str:
    """JSON that cannot end its <script> element early or open a comment: every '<', '>'
    and '&' is written as a \\u escape (still the same JSON)."""
    text = json.dumps(payload, ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
