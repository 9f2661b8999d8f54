"""--calibration with a domain description: each row's distance to the nearest calibration
image in the features of the detector the calibration names (``calibration_distance``), which
the verdicts compare with the calibration's cut-off (clipdet.pipeline.domain). A video's is
its frames' mean feature's. LLRs do not change.

``DomainFeatures`` is the same reading for `clipdet calibrate`: each row's normalised feature
vector, kept in the record (no column) for the description to be fitted on."""

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml

from clipdet.pipeline.columns import FACT, Column
from clipdet.pipeline.domain import DISTANCE_COLUMN, DomainDescription, normalised
from clipdet.pipeline.extensions.base import RowExtension, values_array


@lru_cache(maxsize=8)
def _description(path: str, mtime: float) -> DomainDescription | None:
    """The domain description a calibration file holds (None without one)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None  # the calibration's own loading says what is wrong with the file
    domain = data.get("domain") if isinstance(data, dict) else None
    return DomainDescription.from_dict(domain) if domain else None


def calibration_domain(path) -> DomainDescription | None:
    path = os.fspath(path)
    return _description(path, os.path.getmtime(path)) if os.path.isfile(path) else None


class CalibrationDomain(RowExtension):
    """Each row's value: its distance (float) to the nearest calibration image."""

    name = "domain"
    reads_embedding = True

    def __init__(self, description: DomainDescription | None = None):
        self.description = description
        self.embedding_model = description.model if description is not None else None

    @classmethod
    def from_options(cls, options, paths=None):
        if not options.calibration:
            return None
        description = calibration_domain(options.calibration)
        return cls(description) if description is not None else None

    def signature(self) -> dict:
        return {"calibration_domain": self.description.digest()} if self.description else {}

    def columns(self) -> tuple[Column, ...]:
        return (Column(DISTANCE_COLUMN, FACT),)

    def fold_embedding(self, value, embedding: np.ndarray | None):
        if embedding is None:
            return None
        return float(self.description.distance(embedding[None, :])[0])

    def table_columns(self, values: dict, n_rows: int, fusion=None) -> dict:
        return {DISTANCE_COLUMN: values_array(values, n_rows)}

    def to_json(self, value) -> float | None:
        return float(value) if np.isfinite(value) else None

    def from_json(self, stored, n_detectors: int) -> float:
        return float("nan") if stored is None else float(stored)


class DomainFeatures(RowExtension):
    """`clipdet calibrate`'s reading: each row's normalised features of ``model`` (no
    column); never on from options."""

    name = "domain_features"
    reads_embedding = True

    def __init__(self, model: str | None = None):
        self.embedding_model = model

    @classmethod
    def from_options(cls, options, paths=None):
        return None

    def columns(self) -> tuple[Column, ...]:
        return ()

    def fold_embedding(self, value, embedding: np.ndarray | None):
        return None if embedding is None else normalised(embedding).astype(np.float32)

    def table_columns(self, values: dict, n_rows: int, fusion=None) -> dict:
        return {}

    def to_json(self, value) -> list:
        return [float(v) for v in value]

    def from_json(self, stored, n_detectors: int) -> np.ndarray:
        return np.asarray(stored, dtype=np.float32)
