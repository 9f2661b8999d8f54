"""Quality-aware calibration (QuAD, Guillaro et al., arXiv 2604.15027): a detector's score
given the image's quality q, fitted on real and on synthetic images apart, as a Gaussian
whose mean and log-variance are linear in q (standardised q plus a constant); the calibrated
LLR of a score s is log N(s; mu1(q), sigma1(q)) - log N(s; mu0(q), sigma0(q)).

q = (log pixel count, JPEG quality), a non-JPEG (lossless) file counting as quality 100. Each
row may carry a weight (1 / the number of copies of its source, so that each source counts
once). The fit minimises the weighted negative log-likelihood with scipy's BFGS, started from
least squares."""

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from clipdet.constants import HEIGHT_COLUMN, JPEG_QUALITY_COLUMN, WIDTH_COLUMN

FEATURES = ("log_pixels", "jpeg_quality")
LOSSLESS_QUALITY = 100.0
LOG_VARIANCE_BOUND = 30.0  # exp(+-30): no overflow while the optimiser explores


def quality_features(table: pd.DataFrame) -> np.ndarray:
    """[rows, 2]: log pixel count and JPEG quality (100 for a non-JPEG file); a row whose
    size is unknown is NaN. ValueError naming the columns a table lacks."""
    missing = [c for c in (WIDTH_COLUMN, HEIGHT_COLUMN, JPEG_QUALITY_COLUMN) if c not in table]
    if missing:
        raise ValueError(
            f"the scores lack the quality columns {', '.join(missing)} (score with "
            "--calibration or --facts to write them)"
        )
    pixels = table[WIDTH_COLUMN].to_numpy(float) * table[HEIGHT_COLUMN].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_pixels = np.where(pixels > 0, np.log(pixels), np.nan)
    quality = table[JPEG_QUALITY_COLUMN].to_numpy(float)
    return np.column_stack([log_pixels, np.where(np.isnan(quality), LOSSLESS_QUALITY, quality)])


@dataclass
class ClassFit:
    """One class's score given q: mean = X @ mean_coef, log variance = X @ logvar_coef, with
    X = [standardised q, 1]."""

    mean_coef: np.ndarray
    logvar_coef: np.ndarray

    def log_density(self, scores: np.ndarray, X: np.ndarray) -> np.ndarray:
        log_var = np.clip(X @ self.logvar_coef, -LOG_VARIANCE_BOUND, LOG_VARIANCE_BOUND)
        return -0.5 * (np.log(2 * np.pi) + log_var + (scores - X @ self.mean_coef) ** 2
                       / np.exp(log_var))  # fmt: skip


def _negative_log_likelihood(theta, X, y, weights):
    k = X.shape[1]
    log_var = np.clip(X @ theta[k:], -LOG_VARIANCE_BOUND, LOG_VARIANCE_BOUND)
    residual = y - X @ theta[:k]
    inverse = np.exp(-log_var)
    value = 0.5 * np.sum(weights * (log_var + residual**2 * inverse))
    gradient = np.concatenate([
        -(weights * residual * inverse) @ X,
        0.5 * (weights * (1.0 - residual**2 * inverse)) @ X,
    ])  # fmt: skip
    return value, gradient


def fit_class(X: np.ndarray, y: np.ndarray, weights: np.ndarray) -> ClassFit:
    """The weighted maximum-likelihood fit of one class (rows with a NaN left out)."""
    keep = np.isfinite(y) & np.isfinite(X).all(axis=1)
    X, y, weights = X[keep], y[keep], weights[keep]
    if len(y) < X.shape[1] + 1:
        raise ValueError(f"{len(y)} scored images: too few to fit a score's law given quality")
    root = np.sqrt(weights)
    mean_coef = np.linalg.lstsq(X * root[:, None], y * root, rcond=None)[0]
    start_var = np.average((y - X @ mean_coef) ** 2, weights=weights)
    logvar_coef = np.zeros(X.shape[1])
    logvar_coef[-1] = np.log(max(start_var, 1e-12))
    result = minimize(_negative_log_likelihood, np.concatenate([mean_coef, logvar_coef]),
                      args=(X, y, weights), jac=True, method="BFGS",
                      options={"gtol": 1e-6})  # fmt: skip
    k = X.shape[1]
    return ClassFit(result.x[:k], result.x[k:])


@dataclass
class QualityModel:
    """Each detector's fit on real and synthetic images given q (module docstring)."""

    centre: np.ndarray  # q's mean over the calibration images
    scale: np.ndarray  # q's standard deviation (1 where it does not vary)
    fits: dict[str, tuple[ClassFit, ClassFit]]  # detector -> (real, synthetic)

    @classmethod
    def fit(cls, real: pd.DataFrame, fake: pd.DataFrame, detectors, group: str | None = None):
        """The model of ``detectors``' columns from a real and a synthetic scores table with
        quality columns (and a ``group`` column: each source counts once)."""
        q_real, q_fake = quality_features(real), quality_features(fake)
        both = np.concatenate([q_real, q_fake])
        centre = np.nanmean(both, axis=0)
        scale = np.nanstd(both, axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        model = cls(centre, scale, {})
        X_real, X_fake = model.design(q_real), model.design(q_fake)
        w_real, w_fake = source_weights(real, group), source_weights(fake, group)
        for name in detectors:
            model.fits[name] = (
                fit_class(X_real, real[name].to_numpy(float), w_real),
                fit_class(X_fake, fake[name].to_numpy(float), w_fake),
            )
        return model

    def design(self, q: np.ndarray) -> np.ndarray:
        return np.column_stack([(q - self.centre) / self.scale, np.ones(len(q))])

    def llr(self, name: str, scores: np.ndarray, q: np.ndarray) -> np.ndarray:
        """The quality-calibrated LLR of ``name``'s ``scores`` at qualities ``q``."""
        real, fake = self.fits[name]
        X = self.design(q)
        scores = np.asarray(scores, dtype=float)
        return fake.log_density(scores, X) - real.log_density(scores, X)

    def separation(self, name: str, q: np.ndarray) -> np.ndarray:
        """How far apart the two classes' laws lie at ``q`` (|mu1 - mu0| over the pooled
        standard deviation): how informative a copy of that quality is."""
        real, fake = self.fits[name]
        X = self.design(q)
        spread = np.sqrt(0.5 * (np.exp(X @ real.logvar_coef) + np.exp(X @ fake.logvar_coef)))
        return np.abs(X @ fake.mean_coef - X @ real.mean_coef) / spread

    # ---- in the calibration file ---------------------------------------------------------

    def to_dict(self) -> dict:
        def fit(f: ClassFit) -> dict:
            return {"mean": f.mean_coef.tolist(), "log_variance": f.logvar_coef.tolist()}

        return {
            "features": list(FEATURES),
            "centre": self.centre.tolist(),
            "scale": self.scale.tolist(),
            "detectors": {
                name: {"real": fit(r), "synthetic": fit(s)} for name, (r, s) in self.fits.items()
            },  # fmt: skip
        }

    @classmethod
    def from_dict(cls, data: dict) -> "QualityModel":
        def fit(d: dict) -> ClassFit:
            return ClassFit(np.asarray(d["mean"], float), np.asarray(d["log_variance"], float))

        if list(data.get("features", [])) != list(FEATURES):
            raise ValueError(f"a quality model on {data.get('features')}, not {list(FEATURES)}")
        fits = {
            name: (fit(d["real"]), fit(d["synthetic"])) for name, d in data["detectors"].items()
        }
        return cls(np.asarray(data["centre"], float), np.asarray(data["scale"], float), fits)


def source_weights(table: pd.DataFrame, group: str | None) -> np.ndarray:
    """1 / the number of rows of each row's group (each source counts once); 1 without a
    group column. A row with no group is a source of its own."""
    if not group or group not in table.columns:
        return np.ones(len(table))
    keys = table[group].astype(object).where(table[group].notna(), None)
    keys = [f"\0row{i}" if k is None or k == "" else str(k) for i, k in enumerate(keys)]
    counts = pd.Series(keys).map(pd.Series(keys).value_counts())
    return 1.0 / counts.to_numpy(float)


def calibrated_table(
    model: QualityModel, table: pd.DataFrame, detectors, fusion: str | None = None
) -> pd.DataFrame:
    """A copy of ``table`` whose detector columns hold their quality-calibrated LLRs (and,
    with ``fusion``, a fusion column recomputed from them)."""
    from clipdet.constants import FUSION_COLUMN, NO_FUSION
    from clipdet.pipeline.fusion import apply_fusion

    q = quality_features(table)
    out = table.copy()
    for name in detectors:
        out[name] = model.llr(name, table[name].to_numpy(float), q)
    if fusion and fusion != NO_FUSION and FUSION_COLUMN in out.columns and len(out):
        out[FUSION_COLUMN] = apply_fusion(out[list(detectors)].to_numpy(float), fusion, axis=1)
    return out
