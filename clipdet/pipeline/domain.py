"""Where a calibration holds: a compact description of the calibration images in the feature
space of one of the run's detectors, and the distance of a new image to the nearest of them.

The features (L2-normalised) are centred and projected on their first principal axes; the
description keeps the mean, the axes and every calibration image's coordinates (at most
``MAX_POINTS``, float16). The distance of an image is the Euclidean distance to the nearest
calibration image in those coordinates, plus what the axes leave out of it (its residual,
added in quadrature): an image off the calibration images' subspace is far from all of them.

The cut-off is chosen on held-out calibration images: in ``FOLDS``-fold cross-validation each
fold's images are measured against a description built from the others, and the cut-off is
the ``quantile`` of those held-out distances. Images like the calibration set then lie under
it with probability about ``quantile`` (0.95 by default; docs/thresholds.md)."""

import base64
import hashlib
import math
from dataclasses import dataclass

import numpy as np

AXES = 32  # principal axes kept (fewer when there are fewer images)
MAX_POINTS = 4096  # calibration images kept (a seeded draw beyond it)
FOLDS = 5
DEFAULT_QUANTILE = 0.95
MIN_IMAGES = 10  # fewer cannot say where a calibration holds
DISTANCE_COLUMN = "calibration_distance"
UNLIKE = "unlike the calibration images"


def normalised(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(features, axis=-1, keepdims=True)
    return features / np.where(norms > 0, norms, 1.0)


@dataclass
class DomainDescription:
    """The calibration images as ``model``'s features see them (module docstring)."""

    model: str  # the detector whose backbone features describe the images
    mean: np.ndarray  # [D]
    axes: np.ndarray  # [k, D], orthonormal rows
    points: np.ndarray  # [n, k]
    cutoff: float
    quantile: float
    n_images: int

    @classmethod
    def fit(
        cls, features: np.ndarray, model: str, quantile: float = DEFAULT_QUANTILE, seed: int = 0
    ) -> "DomainDescription":
        """The description of the images whose features are the rows of ``features``, its
        cut-off from ``FOLDS``-fold held-out distances."""
        features = normalised(features)
        features = features[np.isfinite(features).all(axis=1)]
        n = len(features)
        if n < MIN_IMAGES:
            raise ValueError(
                f"{n} calibration images with features: at least {MIN_IMAGES} are needed to "
                "say where the calibration holds"
            )
        if not 0 < quantile < 1:
            raise ValueError(f"the domain quantile must lie in (0, 1), got {quantile:g}")
        rng = np.random.default_rng(seed)
        fold = rng.permutation(n) % FOLDS
        held_out = np.concatenate(
            [
                _subspace(features[fold != k], rng).distance(features[fold == k])
                for k in range(FOLDS)
            ]
        )
        cutoff = float(np.quantile(held_out, quantile))
        mean, axes, points = _subspace(features, rng).parts
        return cls(model, mean, axes, points, cutoff, float(quantile), n)

    def distance(self, features: np.ndarray) -> np.ndarray:
        """Each row's distance to the nearest calibration image (NaN for a NaN row)."""
        return _Subspace(self.mean, self.axes, self.points.astype(np.float64)).distance(features)

    def is_unlike(self, distances: np.ndarray) -> np.ndarray:
        return np.asarray(distances, dtype=float) > self.cutoff

    # ---- in the calibration file ---------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "cutoff": self.cutoff,
            "quantile": self.quantile,
            "n_images": self.n_images,
            "mean": _encode(self.mean.astype(np.float32)),
            "axes": _encode(self.axes.astype(np.float32)),
            "points": _encode(self.points.astype(np.float16)),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "DomainDescription":
        mean, axes, points = (_decode(data[key]) for key in ("mean", "axes", "points"))
        if axes.shape != (len(axes), mean.size) or points.shape[1:] != (len(axes),):
            raise ValueError("the calibration's domain description is malformed")
        return cls(
            str(data["model"]), mean.astype(np.float64), axes.astype(np.float64), points,
            float(data["cutoff"]), float(data["quantile"]), int(data["n_images"]),
        )  # fmt: skip

    def digest(self) -> str:
        """What a resumed run compares: the same description gives the same distances."""
        return hashlib.sha256(repr(sorted(self.to_dict().items())).encode()).hexdigest()[:16]


class _Subspace:
    def __init__(self, mean, axes, points):
        self.parts = (mean, axes, points)

    def distance(self, features: np.ndarray) -> np.ndarray:
        mean, axes, points = self.parts
        centred = normalised(features) - mean
        coords = centred @ axes.T
        residual = np.maximum((centred**2).sum(axis=1) - (coords**2).sum(axis=1), 0.0)
        nearest = np.empty(len(coords))
        squared_points = (points**2).sum(axis=1)
        for start in range(0, len(coords), 1024):  # [1024, n] squared distances at a time
            block = coords[start : start + 1024]
            squared = (block**2).sum(axis=1)[:, None] + squared_points - 2 * block @ points.T
            nearest[start : start + 1024] = np.maximum(squared.min(axis=1), 0.0)
        return np.sqrt(nearest + residual)


def _subspace(features: np.ndarray, rng: np.random.Generator) -> _Subspace:
    if len(features) > MAX_POINTS:
        features = features[np.sort(rng.choice(len(features), MAX_POINTS, replace=False))]
    mean = features.mean(axis=0)
    centred = features - mean
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    axes = vt[: min(AXES, max(len(features) - 1, 1))]
    # the stored points are float16: measure held-out images against what the file keeps
    points = (centred @ axes.T).astype(np.float16).astype(np.float64)
    return _Subspace(mean, axes, points)


def _encode(array: np.ndarray) -> dict:
    return {"dtype": str(array.dtype), "shape": list(array.shape),
            "base64": base64.b64encode(np.ascontiguousarray(array).tobytes()).decode()}  # fmt: skip


def _decode(data: dict) -> np.ndarray:
    array = np.frombuffer(base64.b64decode(data["base64"]), dtype=np.dtype(data["dtype"]))
    if math.prod(data["shape"]) != array.size:
        raise ValueError("the calibration's domain description is malformed")
    return array.reshape(data["shape"])
