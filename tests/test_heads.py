import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from clipdet.models.heads import LinearSVMHead


def _blobs(n=40, dim=16, shift=1.5, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    X = rng.normal(size=(n, dim))
    X[:, 0] += shift * (2 * y - 1)
    return X, y


def test_fit_returns_self_and_learned_state_ends_in_underscore():
    X, y = _blobs()
    head = LinearSVMHead()
    assert head.fit(X, y) is head
    assert head.coef_.shape == (1, 16) and head.intercept_.shape == (1,)
    assert head.C_ in head.C_grid and set(head.cv_scores_) == set(head.C_grid)
    assert head.get_params()["C"] is None  # __init__ stores parameters only


def test_unfitted_head_raises_not_fitted():
    with pytest.raises(NotFittedError):
        LinearSVMHead().decision_function(np.zeros((1, 3)))


def test_llr_sign_means_synthetic_and_is_calibrated():
    X, y = _blobs(n=400, shift=1.0)
    head = LinearSVMHead(C=1.0).fit(X, y)
    llr = head.decision_function(X)
    assert llr[y == 1].mean() > 0 > llr[y == 0].mean()
    assert head.calibration_["method"] == "platt" and head.calibration_["scale"] > 0
    # calibrated: the mean predicted probability of "synthetic" per LLR bin tracks the truth
    p = 1 / (1 + np.exp(-llr))
    for lo, hi in ((0.0, 0.3), (0.7, 1.0)):
        sel = (p >= lo) & (p < hi)
        assert abs(y[sel].mean() - p[sel].mean()) < 0.1


def test_calibration_folds_into_coef_and_intercept():
    X, y = _blobs()
    raw = LinearSVMHead(C=1.0, calibrate=False).fit(X, y)
    cal = LinearSVMHead(C=1.0).fit(X, y)
    a, b = cal.calibration_["scale"], cal.calibration_["offset"]
    np.testing.assert_allclose(
        cal.decision_function(X), a * raw.decision_function(X) + b, atol=1e-6
    )


@pytest.mark.parametrize(
    "y,message",
    [([0, 0, 0, 1], "at least 2 images of each class"), ([0, 0, 2, 2], "labels must be 0")],
)
def test_bad_labels(y, message):
    with pytest.raises(ValueError, match=message):
        LinearSVMHead().fit(np.random.default_rng(0).normal(size=(4, 3)), np.array(y))
