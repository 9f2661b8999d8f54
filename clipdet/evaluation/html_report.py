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
import itertools
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from clipdet import __version__
from clipdet.constants import (
    ERROR_COLUMN,
    FILENAME_COLUMN,
    FUSION_COLUMN,
    GROUP_COLUMN,
    INCONCLUSIVE,
    PROVENANCE_COLUMN,
    PROVENANCE_GENERATOR_COLUMN,
    REAL,
    SYNTHETIC,
    TYPE_COLUMN,
    VERDICT_COLUMN,
    VERDICT_REASON_COLUMN,
)
from clipdet.evaluation.report_media import (
    finite_number,
    frame_curves,
    make_thumbnails,
    text_of,
    video_rows,
)
from clipdet.evaluation.report_sections import (
    concept_lists,
    facts_text,
    group_sections,
    model_cards,
)
from clipdet.models.attribution import find_attribution_models
from clipdet.pipeline.columns import EXPLANATION, SCORE
from clipdet.pipeline.record import columns_of_kind
from clipdet.pipeline.results import add_verdicts
from clipdet.provenance.tokens import split_tokens

logger = logging.getLogger(__name__)

EMBED_LIMIT = 1000  # rows up to which the report is one self-contained file
PAGE_ROWS = 500  # cards shown at a time
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
    weights_dir: str | os.PathLike | None = None  # model cards of your own models (card.md)
    groups: pd.DataFrame | None = None  # --groups_out's table: each group's evidence


def detector_columns(table: pd.DataFrame) -> list[str]:
    """The detectors' LLR columns of a scores table (kind score: not fusion, attribution,
    labels, row extensions' columns or text)."""
    return columns_of_kind(table, SCORE)


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
                {"model": row.model, "path": folder / row.overlay, "mean": finite_number(row.mean)}
            )
    return found


def _rows(inputs: ReportInputs, detectors: list[str]) -> list[dict]:
    if inputs.calibration is not None:
        from clipdet.evaluation.verdicts import add_calibrated_verdicts

        table = add_calibrated_verdicts(inputs.table, inputs.calibration)
    else:
        table = add_verdicts(inputs.table, detectors, inputs.threshold)
    attribution = find_attribution_models(table.columns)
    explained = columns_of_kind(table, EXPLANATION)  # a concept model's strongest concepts
    rows = []
    for record in table.to_dict(orient="records"):
        row = {
            "name": str(record.get(FILENAME_COLUMN, "")),
            "error": "" if pd.isna(record.get(ERROR_COLUMN)) else str(record.get(ERROR_COLUMN)),
            "verdict": text_of(record.get(VERDICT_COLUMN)),
            "reason": text_of(record.get(VERDICT_REASON_COLUMN)),
            "scores": {name: finite_number(record[name]) for name in detectors},
            "fusion": finite_number(record.get(FUSION_COLUMN)),
            "attribution": [],
            "provenance": split_tokens(text_of(record.get(PROVENANCE_COLUMN))),
            "generator": text_of(record.get(PROVENANCE_GENERATOR_COLUMN)),
            "group": text_of(record.get(GROUP_COLUMN)),
            "facts": facts_text(record),
            "concepts": concept_lists(record, explained),
        }
        for model in attribution:
            probs = {c: finite_number(record.get(f"{model.name}_p_{c}")) for c in model.classes}
            top = sorted(((p, c) for c, p in probs.items() if p is not None), reverse=True)[:3]
            label = record.get(model.name)
            row["attribution"].append({
                "model": model.name,
                "label": "" if pd.isna(label) else str(label),
                "top": [[c, p] for p, c in top],
                "unknown": finite_number(record.get(f"{model.name}_unknown_score")),
            })  # fmt: skip
        rows.append(row)
    return rows


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
        rows = [[str(name), *map(finite_number, values)] for name, values in table.iterrows()]
        tables[metric] = {"columns": [str(c) for c in table.columns], "rows": rows}
    with tempfile.TemporaryDirectory() as folder:
        plots = plot_roc_curves(data, folder) + plot_score_histograms(data, folder)
        images = [{"title": p.stem, "src": assets(p)} for p in sorted(plots)]
    return {"tables": tables, "plots": images}


class _ReportFiles:
    """Where a report's pictures go: data URIs in the page (up to ``EMBED_LIMIT`` rows), else
    files in ``<stem>_files/`` beside it, referred to by relative paths."""

    def __init__(self, out_html: Path, rows: int):
        self.out_html = out_html
        self.embed = rows <= EMBED_LIMIT
        self.folder = out_html.with_name(out_html.stem + "_files")
        if self.folder.exists():
            shutil.rmtree(self.folder)
        if not self.embed:
            (self.folder / "thumbs").mkdir(parents=True)
        self._assets, self._thumbs = itertools.count(), itertools.count()

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.out_html.parent).as_posix()

    def asset(self, path: Path) -> str:
        """A picture file (an overlay, a plot): a data URI, or a copy in the files folder."""
        if self.embed:
            return _file_uri(path)
        target = self.folder / "assets" / f"{next(self._assets):07d}{path.suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        return self._relative(target)

    def thumb(self, uri: str | None) -> str | None:
        """A thumbnail's data URI, as it is or written out as a JPEG file."""
        if uri is None or self.embed:
            return uri
        target = self.folder / "thumbs" / f"{next(self._thumbs):07d}.jpg"
        target.write_bytes(base64.b64decode(uri.split(",", 1)[1]))
        return self._relative(target)

    def data_tag(self, data: str) -> str:
        """The page's data: inline JSON, or a script file in the files folder."""
        if self.embed:
            return f'<script id="clipdet-data" type="application/json">{data}</script>'
        (self.folder / "data.js").write_text(f"window.CLIPDET_DATA = {data};\n", encoding="utf-8")
        return f'<script src="{html.escape(self._relative(self.folder / "data.js"))}"></script>'


def write_report(inputs: ReportInputs, out_html: str | os.PathLike) -> Path:
    """Write the report to ``out_html`` (and ``<stem>_files/`` beside it for large runs)."""
    out_html = Path(out_html).resolve()
    out_html.parent.mkdir(parents=True, exist_ok=True)
    if FILENAME_COLUMN not in inputs.table.columns:
        raise ValueError(f"the scores have no {FILENAME_COLUMN!r} column")
    detectors = detector_columns(inputs.table)
    rows = _rows(inputs, detectors)
    files = _ReportFiles(out_html, len(rows))
    _add_pictures(inputs, rows, detectors, files)
    payload = {
        "summary": _summary(inputs, rows, detectors),
        "rows": rows,
        "metrics": _metrics_section(inputs, detectors, files.asset),
    }
    page = (_ASSETS / "report.html").read_text(encoding="utf-8")
    page = page.replace("/*STYLE*/", (_ASSETS / "report.css").read_text(encoding="utf-8"))
    page = page.replace("/*SCRIPT*/", (_ASSETS / "report.js").read_text(encoding="utf-8"))
    page = page.replace("<!--DATA-->", files.data_tag(_json_for_script(payload)))
    page = page.replace("<!--TITLE-->", html.escape(f"clipdet report: {len(rows)} images"))
    from clipdet.files import write_text_atomic

    return write_text_atomic(out_html, page)


def _add_pictures(inputs: ReportInputs, rows: list[dict], detectors, files) -> None:
    """Each row's thumbnail (a video's strip of frames and its curve) and evidence maps;
    rows that failed are never decoded again."""
    jobs: list = [None if row["error"] else p for row, p in zip(rows, inputs.paths, strict=True)]
    video_rows(inputs.table, rows, jobs, frame_curves(inputs.frames, detectors))
    for i, found in enumerate(make_thumbnails(jobs)):
        if "video" not in rows[i]:
            rows[i]["thumb"] = files.thumb(found)
            continue
        strip = [{"t": t, "src": files.thumb(uri)} for t, uri in found or []]
        rows[i]["video"]["strip"] = strip
        rows[i]["thumb"] = strip[0]["src"] if strip else None
    maps = _maps_by_row(inputs)
    for row in rows:
        row["maps"] = [
            {"model": m["model"], "mean": m["mean"], "src": files.asset(m["path"])}
            for m in maps.get(row["name"], [])
            if m["path"].exists()
        ]


def _summary(inputs: ReportInputs, rows: list[dict], detectors: list[str]) -> dict:
    """The header's figures: counts of verdicts, the threshold or calibration, the models."""
    failed = sum(bool(row["error"]) for row in rows)
    return {
        "images": len(rows),
        "scored": len(rows) - failed,
        "failed": failed,
        "flagged": sum(row["verdict"] == SYNTHETIC for row in rows),
        "inconclusive": sum(row["verdict"] == INCONCLUSIVE for row in rows),
        "real": sum(row["verdict"] == REAL for row in rows),
        "threshold": _decision_threshold(inputs),
        "calibration": inputs.calibration.describe() if inputs.calibration else None,
        "coverage": _coverage(rows) if inputs.calibration else None,
        "model_cards": model_cards(detectors, inputs.weights_dir),
        "groups": group_sections(inputs.groups),
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


def _coverage(rows: list[dict]) -> float | None:
    from clipdet.evaluation.verdicts import coverage

    return finite_number(coverage([row["verdict"] for row in rows]))


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
