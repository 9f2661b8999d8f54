"""Fusion of several detectors' LLRs into one score, computed in log space.

Every function takes an array of logits (LLRs) and reduces it along ``axis``. The probability
fusions work on log-probabilities so that very confident scores (|x| of several hundred) neither
overflow nor collapse to 0 or 1.
"""

from collections.abc import Callable

import numpy as np
from scipy.special import log_expit, logsumexp

from clipdet.constants import NO_FUSION


def soft_or_prob(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """logit of 1 - prod(1 - sigmoid(x_i)): the image is fake if any detector says so."""
    log_all_real = np.sum(log_expit(-x), axis=axis)  # s = log prod(1 - p_i) <= 0
    with np.errstate(divide="ignore"):
        log_any_fake = np.log(-np.expm1(log_all_real))  # log(1 - e^s)
    # When every p_i is tiny, e^s rounds to 1; then 1 - prod(1 - p_i) = sum p_i to first order.
    tiny = log_all_real > -1e-8
    if np.any(tiny):
        log_any_fake = np.where(tiny, logsumexp(log_expit(x), axis=axis), log_any_fake)
    return log_any_fake - log_all_real


def mean_prob(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """logit of the mean of sigmoid(x_i) = log mean p_i - log mean (1 - p_i)."""
    return logsumexp(log_expit(x), axis=axis) - logsumexp(log_expit(-x), axis=axis)


FUSIONS: dict[str, Callable[..., np.ndarray]] = {
    "mean_logit": lambda x, axis=-1: np.mean(x, axis=axis),
    "max_logit": lambda x, axis=-1: np.max(x, axis=axis),
    "median_logit": lambda x, axis=-1: np.median(x, axis=axis),
    "lse_logit": lambda x, axis=-1: logsumexp(x, axis=axis),
    "mean_prob": mean_prob,
    "soft_or_prob": soft_or_prob,
}


def apply_fusion(scores: np.ndarray, name: str, axis: int = -1) -> np.ndarray:
    """Fuse ``scores`` (LLRs, NaN where a model failed) along ``axis`` with the fusion ``name``."""
    try:
        function = FUSIONS[name]
    except KeyError:
        valid = ", ".join([*FUSIONS, NO_FUSION])
        raise ValueError(f"unknown fusion {name!r}; valid choices: {valid}") from None
    return function(np.asarray(scores, dtype=np.float64), axis=axis)
