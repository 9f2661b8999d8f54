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


@pytest.mark.parametrize("n, dim", [(60, 16), (120, 300)], ids=["n > dim", "n < dim"])
def test_the_exact_solver_finds_liblinears_optimum(n, dim):
    """The dual solved exactly is the problem LinearSVC solves: at a tight tolerance liblinear
    converges to the same decision values, at every C of the grid and with unequal classes."""
    from sklearn.svm import LinearSVC

    from clipdet.models.heads import ExactSquaredHingeSVM

    rng = np.random.default_rng(3)
    y = (rng.random(n) < 0.35).astype(int)
    X = rng.normal(size=(n, dim)) + 0.8 * y[:, None] * rng.normal(size=dim)
    exact = ExactSquaredHingeSVM(X, y)
    train, test = np.arange(0, n, 3), np.setdiff1d(np.arange(n), np.arange(0, n, 3))
    for C in (1e-3, 1e-1, 10.0, 1e3):
        tight = LinearSVC(C=C, class_weight="balanced", tol=1e-10, max_iter=10**6)
        expected = tight.fit(X[train], y[train]).decision_function(X[test])
        got = exact.held_out(train, test, C)
        np.testing.assert_allclose(got, expected, atol=1e-6 * max(1.0, np.abs(expected).max()))


def test_a_head_fitted_exactly_gives_the_liblinear_heads_llrs_and_c():
    X, y = _blobs(n=200, dim=64, shift=0.6, seed=4)
    default = LinearSVMHead().fit(X, y)
    exact = LinearSVMHead(solver="exact").fit(X, y)
    assert exact.C_ == default.C_
    np.testing.assert_allclose(exact.decision_function(X), default.decision_function(X),
                               atol=1e-3)  # fmt: skip
    with pytest.raises(ValueError, match="unknown solver 'newton'; valid: liblinear, exact"):
        LinearSVMHead(solver="newton").fit(X, y)
