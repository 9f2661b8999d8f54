"""The scored row's one home: the record of one row (``ImageResult``), its JSON form (partial
files and blocks), the layout that declares a run's columns with their kinds, and the table
those records fill.

A row holds each detector's LLR, each attribution model's logits, its error and the values
of the run's row extensions (``clipdet.pipeline.extensions``) under their names; this module
asks the extensions for their columns and JSON forms and never looks inside their values.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from clipdet.constants import (
    CONCEPTS_PREFIX,
    DETECTOR_VERDICT_PREFIX,
    ERROR_COLUMN,
    FILENAME_COLUMN,
    FUSION_COLUMN,
    GROUP_COLUMN,
    GROUP_SIZE_COLUMN,
    NO_FUSION,
    QUALITY_LLR_PREFIX,
    SOURCE_COLUMN,
    SOURCE_ROW_COLUMN,
    TYPE_COLUMN,
    VERDICT_COLUMN,
    VERDICT_REASON_COLUMN,
    VIEW_PREFIX,
)
from clipdet.models.attribution import (
    AttributionColumns,
    AttributionSpec,
    attribution_column_set,
    attribution_columns,
)
from clipdet.pipeline import columns as kinds
from clipdet.pipeline.columns import Column
from clipdet.pipeline.extensions import (
    EXTENSIONS,
    RowExtension,
    known_columns,
    readers,
    run_extensions,
)


@dataclass
class ImageResult:
    """One row's record. ``extras``: the row extensions' values by name (read as attributes
    too: ``result.video``, ``result.provenance``; None when the row has none)."""

    index: int
    scores: np.ndarray  # one LLR per detection model, NaN where that model failed
    error: str
    logits: dict[str, np.ndarray] = field(default_factory=dict)  # per attribution model: [C]
    maps: dict[str, np.ndarray] = field(default_factory=dict)  # per detector: logit map [h, w]
    extras: dict[str, object] = field(default_factory=dict)  # extension name -> its value

    def __getattr__(self, name: str):
        if name in EXTENSIONS:  # (only called for names that are not fields)
            return self.__dict__.get("extras", {}).get(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def to_json(self, filename: str) -> str:
        """The record as one JSON line (NaN as null), extensions in registration order."""
        row = {"index": self.index, "filename": filename, "scores": _json_list(self.scores)}
        if self.logits:
            row["logits"] = {name: _json_list(v) for name, v in self.logits.items()}
        for name, ext in readers().items():
            if self.extras.get(name) is not None:
                row[name] = ext.to_json(self.extras[name])
        row["error"] = self.error
        return json.dumps(row, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, line: str, n_detectors: int, widths: dict[str, int]) -> "ImageResult":
        """One line written by ``to_json``; ValueError (or KeyError, TypeError) when it is
        torn or holds the wrong number of scores (``widths``: logits per attribution model)."""
        row = json.loads(line)
        scores = _array(row["scores"])
        logits = {name: _array(values) for name, values in row.get("logits", {}).items()}
        if scores.shape != (n_detectors,) or {n: v.size for n, v in logits.items()} != widths:
            raise ValueError("wrong number of scores")
        extras = {
            name: ext.from_json(row[name], n_detectors)
            for name, ext in readers().items()
            if row.get(name)
        }
        return cls(int(row["index"]), scores, str(row["error"]), logits, extras=extras)


def _array(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _json_list(values: np.ndarray) -> list:
    return [None if not np.isfinite(v) else float(v) for v in values]


def split_models(models) -> tuple[list, list]:
    """(detection models, attribution models), each in the given order."""
    return [m for m in models if m.attribution is None], [m for m in models if m.attribution]


def result_shape(models) -> tuple[int, dict[str, int]]:
    """What a stored record of ``models`` must hold: the number of detector scores and, per
    attribution model, its number of logits."""
    detectors, attributors = split_models(models)
    return len(detectors), {m.name: m.detector.num_outputs for m in attributors}


@dataclass(frozen=True)
class TableLayout:
    """The columns of a run's table, as its models and options make them: plain data that
    pickles, so that a Ray write task builds its tables without the models."""

    detectors: tuple[str, ...]
    attributors: tuple[tuple[str, AttributionSpec, int], ...]  # (name, spec, number of classes)
    extensions: tuple[RowExtension, ...] = ()

    @classmethod
    def of(cls, models, options=None, paths: Sequence[str] | None = None) -> "TableLayout":
        """The columns a run of ``models`` with ``options`` on ``paths`` writes (``paths``
        None: a stream, whose files are not known ahead)."""
        from clipdet.options import RunOptions

        detectors, attributors = split_models(models)
        return cls(
            tuple(m.name for m in detectors),
            tuple((m.name, m.attribution, m.detector.num_outputs) for m in attributors),
            run_extensions(options or RunOptions(), paths, models),
        )

    def columns(self, fusion: str | None) -> list[Column]:
        """Every column of the run's table, in order, with its kind (verdicts are added by
        the decisions, after the scoring)."""
        found = [Column(FILENAME_COLUMN, kinds.NAME)]
        found += [Column(name, kinds.SCORE) for name in self.detectors]
        if fusion and fusion != NO_FUSION and self.detectors:
            found.append(Column(FUSION_COLUMN, kinds.FUSION))
        for name, spec, _ in self.attributors:
            names = AttributionColumns(name, list(spec.classes)).columns
            found += [Column(column, kinds.ATTRIBUTION) for column in names]
        for ext in self.extensions:
            found += ext.columns()
        return [*found, Column(ERROR_COLUMN, kinds.ERROR)]

    def header(self, fusion: str | None) -> list[list[str]]:
        """The columns as a run's header records them: [[name, kind], ...]."""
        return [[c.name, c.kind] for c in self.columns(fusion)]


CORE_KINDS = {
    FILENAME_COLUMN: kinds.NAME,
    TYPE_COLUMN: kinds.LABEL,
    FUSION_COLUMN: kinds.FUSION,
    VERDICT_COLUMN: kinds.VERDICT,
    VERDICT_REASON_COLUMN: kinds.VERDICT,
    GROUP_COLUMN: kinds.GROUP,
    GROUP_SIZE_COLUMN: kinds.GROUP,
    SOURCE_COLUMN: kinds.SOURCE,
    SOURCE_ROW_COLUMN: kinds.SOURCE,
    ERROR_COLUMN: kinds.ERROR,
}


def column_kinds(table: pd.DataFrame) -> dict[str, str]:
    """Each column's kind in a table from elsewhere (a scores file): the known columns by
    name (clipdet's own, every row extension's, attribution models' by their pattern), any
    other numeric column a detector's score; other text columns are left out."""
    known = CORE_KINDS | known_columns()
    attribution = attribution_column_set(table.columns)
    found = {}
    for column in table.columns:
        if column in known:
            found[column] = known[column]
        elif column in attribution:
            found[column] = kinds.ATTRIBUTION
        elif column.startswith(DETECTOR_VERDICT_PREFIX):
            found[column] = kinds.VERDICT
        elif column.startswith(VIEW_PREFIX):
            found[column] = kinds.VIEW
        elif column.startswith(QUALITY_LLR_PREFIX):
            found[column] = kinds.CALIBRATED
        elif column.startswith(CONCEPTS_PREFIX):
            found[column] = kinds.EXPLANATION
        elif pd.api.types.is_numeric_dtype(table[column]):
            found[column] = kinds.SCORE
    return found


def columns_of_kind(table: pd.DataFrame, *wanted: str) -> list[str]:
    """The columns of ``table`` of the ``wanted`` kinds, in table order (numeric ones only
    for scores and fusion)."""
    found = column_kinds(table)
    numeric = {kinds.SCORE, kinds.FUSION}
    return [
        c
        for c, kind in found.items()
        if kind in wanted and (kind not in numeric or pd.api.types.is_numeric_dtype(table[c]))
    ]


class ResultTable:
    """Records of a run, set row by row (in any order), turned into the output table."""

    def __init__(self, layout: TableLayout, n_images: int, error: str = ""):
        self.layout = layout
        self.scores = np.full((n_images, len(layout.detectors)), np.nan)
        self.logits = {
            name: np.full((n_images, classes), np.nan) for name, _, classes in layout.attributors
        }
        self.errors = [error] * n_images
        self.extras: dict[str, dict[int, object]] = {ext.name: {} for ext in layout.extensions}

    @property
    def detector_names(self) -> list[str]:
        return list(self.layout.detectors)

    def set(self, index: int, result: ImageResult) -> None:
        self.scores[index] = result.scores
        for name, logits in result.logits.items():
            self.logits[name][index] = logits
        self.errors[index] = result.error
        for name, values in self.extras.items():
            value = result.extras.get(name)
            if value is None:
                values.pop(index, None)
            else:
                values[index] = value

    def extension_values(self, name: str) -> dict[int, object]:
        """Row -> the extension ``name``'s value, for the rows that have one."""
        return self.extras.get(name, {})

    def to_frame(self, filenames: Sequence[str], fusion: str | None) -> pd.DataFrame:
        """The output table, input order: filename, one LLR column per detector, their
        fusion, each attribution model's columns, each extension's, then error."""
        from clipdet.pipeline.fusion import apply_fusion

        table = pd.DataFrame({FILENAME_COLUMN: list(filenames)})
        for column, name in enumerate(self.layout.detectors):
            table[name] = self.scores[:, column]
        if fusion and fusion != NO_FUSION and self.layout.detectors:
            table[FUSION_COLUMN] = apply_fusion(self.scores, fusion, axis=1) if len(table) else []
        for name, spec, _ in self.layout.attributors:
            for column, values in attribution_columns(name, spec, self.logits[name]).items():
                table[column] = values
        n_rows = len(self.errors)
        for ext in self.layout.extensions:
            for column, values in ext.table_columns(self.extras[ext.name], n_rows, fusion).items():
                table[column] = values
        table[ERROR_COLUMN] = list(self.errors)
        return table
