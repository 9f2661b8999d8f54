"""--views: each image also scored as in-memory views of its decoded pixels (chains of
--perturb's operations; the same draws as --perturb of the same chain and seed). One column per
view, ``llr@<view>``: the view's decision LLR (one detector's own; several: their fusion, else
the largest), which a calibration's verdict compares with the image's own ("flips under
<view>"). Videos are scored without views (their columns are empty). LLRs do not change."""

import numpy as np

from clipdet.constants import NO_FUSION, VIEW_PREFIX
from clipdet.pipeline.columns import VIEW, Column
from clipdet.pipeline.extensions.base import RowExtension


def view_column(view: str) -> str:
    return f"{VIEW_PREFIX}{view}"


class ViewScores(RowExtension):
    """Each row's value: its views' detector LLRs ([views, detectors])."""

    name = "views"

    def __init__(self, views: tuple[str, ...] = (), seed: int = 0):
        self.views, self.seed = tuple(views), seed

    @classmethod
    def from_options(cls, options, paths=None):
        if not options.views:
            return None
        from clipdet.pipeline.perturb import parse_views

        views = parse_views(options.views, options.perturb_seed)  # refuses a bad chain
        return cls(tuple(view.spec for view in views), options.perturb_seed)

    def signature(self) -> dict:
        return {"views": list(self.views), "views_seed": self.seed}

    def columns(self) -> tuple[Column, ...]:
        return tuple(Column(view_column(view), VIEW) for view in self.views)

    def fold_views(self, value, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores, dtype=float)

    def table_columns(self, values: dict, n_rows: int, fusion=None) -> dict:
        from clipdet.pipeline.fusion import apply_fusion

        n_detectors = next((v.shape[1] for v in values.values()), 1)
        scores = np.full((n_rows, len(self.views), n_detectors), np.nan)
        for index, value in values.items():
            scores[index] = value
        if n_detectors == 1:
            decision = scores[:, :, 0]
        elif fusion and fusion != NO_FUSION:
            decision = apply_fusion(scores, fusion, axis=2)
        else:
            decision = scores.max(axis=2)
        return {view_column(view): decision[:, k] for k, view in enumerate(self.views)}

    def to_json(self, value) -> list:
        return [[float(v) if np.isfinite(v) else None for v in row] for row in value]

    def from_json(self, stored, n_detectors: int) -> np.ndarray:
        value = np.array([[np.nan if v is None else v for v in row] for row in stored], float)
        if value.ndim != 2 or value.shape[1] != n_detectors:
            raise ValueError("wrong view scores")
        return value
