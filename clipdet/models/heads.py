"""Trainable heads on frozen features, as scikit-learn estimators."""

import logging

import numpy as np
import torch
from scipy.special import logsumexp, softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import LinearSVC
from sklearn.utils.validation import check_is_fitted, check_X_y, validate_data

logger = logging.getLogger(__name__)

DEFAULT_C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3)


def float32_logits(X, coef, intercept) -> np.ndarray:
    """Logits as scoring computes them from a saved head: float32 features, float32 weights,
    torch's linear layer on C-ordered weights as a loaded ``nn.Linear`` holds them (then
    widened to float64). A threshold fitted on these values holds for the scores a run writes;
    one fitted on float64 logits, or on another memory layout, can miss by a rounding step."""
    weight = torch.tensor(np.ascontiguousarray(np.atleast_2d(coef)), dtype=torch.float32)
    bias = torch.as_tensor(np.atleast_1d(intercept), dtype=torch.float32)
    features = torch.as_tensor(np.asarray(X), dtype=torch.float32)
    with torch.inference_mode():
        return torch.nn.functional.linear(features, weight, bias).numpy().astype(np.float64)


def _folds(y, smallest_class: int, cv: int, random_state) -> tuple[int, list]:
    """Stratified, shuffled folds: ``cv`` of them, fewer when the smallest class is smaller."""
    n_splits = int(min(cv, smallest_class))
    folds = StratifiedKFold(n_splits, shuffle=True, random_state=random_state)
    return n_splits, list(folds.split(np.zeros((len(y), 1)), y))


class LinearSVMHead(ClassifierMixin, BaseEstimator):
    """Class-balanced linear SVM whose decision value is calibrated into an LLR.

    ``C=None`` picks C from ``C_grid`` by stratified cross-validation (mean ROC AUC, ties to the
    smaller C). With ``calibrate=True`` a Platt scaling ``a * d + b``, fitted with balanced
    class weights on cross-validated decision values, is folded into ``coef_`` and
    ``intercept_``: ``decision_function`` then returns log-likelihood ratios (> 0: synthetic),
    the posterior log-odds under equal priors.

    ``solver``: "liblinear" (the default, what trained heads were fitted with: dual coordinate
    descent to its tolerance) or "exact": the same problem's exact optimum
    (``ExactSquaredHingeSVM``), faster on up to a few thousand images (what ``clipdet sweep``
    uses; decision values agree with liblinear's to its tolerance, about 1e-4).
    """

    def __init__(
        self, C=None, C_grid=DEFAULT_C_GRID, cv=5, calibrate=True, random_state=0,
        solver="liblinear",
    ):  # fmt: skip
        self.C = C
        self.C_grid = C_grid
        self.cv = cv
        self.calibrate = calibrate
        self.random_state = random_state
        self.solver = solver

    def fit(self, X, y):
        X, y = check_X_y(X, y, dtype=np.float64)
        self.classes_ = np.unique(y)
        if not np.array_equal(self.classes_, [0, 1]):
            raise ValueError(f"labels must be 0 (real) and 1 (synthetic), got {self.classes_}")
        counts = np.bincount(y)
        if counts.min() < 2:
            raise ValueError(f"need at least 2 images of each class, got {counts.tolist()}")
        self.n_features_in_ = X.shape[1]
        self.n_splits_, splits = _folds(y, counts.min(), self.cv, self.random_state)
        if self.solver not in ("liblinear", "exact"):
            raise ValueError(f"unknown solver {self.solver!r}; valid: liblinear, exact")
        exact = ExactSquaredHingeSVM(X, y) if self.solver == "exact" else None
        held_out = {}  # C -> cross-validated decision values (Platt reuses the chosen C's)
        if self.C is None:
            for c in self.C_grid:
                held_out[c] = self._held_out(X, y, splits, c, exact)
            self.cv_scores_ = {c: float(roc_auc_score(y, held_out[c])) for c in self.C_grid}
            self.C_ = max(self.C_grid, key=lambda c: (self.cv_scores_[c], -c))
            logger.info(
                "C grid (cv ROC AUC): %s -> C=%g",
                ", ".join(f"{c:g}: {s:.4f}" for c, s in self.cv_scores_.items()),
                self.C_,
            )
        else:
            self.cv_scores_ = {}
            self.C_ = float(self.C)
        if exact is not None:
            w, b = exact.weights(self.C_)
        else:
            svm = self._svm(self.C_).fit(X, y)
            w, b = svm.coef_[0], float(svm.intercept_[0])
        self.calibration_ = {"method": "none", "scale": 1.0, "offset": 0.0}
        if self.calibrate:
            if self.C_ not in held_out:
                held_out[self.C_] = self._held_out(X, y, splits, self.C_, exact)
            scale, offset = _platt(held_out[self.C_], y)
            if scale > 0:
                self.calibration_ = {
                    "method": "platt",
                    "scale": scale,
                    "offset": offset,
                    "fitted_on": f"{self.n_splits_}-fold cross-validated decision values",
                    "class_weight": "balanced",
                }
            else:
                logger.warning("Platt scaling found no positive slope; scores left uncalibrated")
        a, c = self.calibration_["scale"], self.calibration_["offset"]
        self.coef_ = (a * w)[None, :]
        self.intercept_ = np.array([a * b + c])
        return self

    def _svm(self, C: float) -> LinearSVC:
        return LinearSVC(
            C=C, class_weight="balanced", max_iter=20000, random_state=self.random_state
        )

    def _held_out(self, X, y, splits, C, exact=None) -> np.ndarray:
        """Each image's decision value from the SVM fitted on the other folds."""
        scores = np.empty(len(y))
        for train, test in splits:
            if exact is not None:
                scores[test] = exact.held_out(train, test, C)
            else:
                scores[test] = self._svm(C).fit(X[train], y[train]).decision_function(X[test])
        return scores

    def decision_function(self, X) -> np.ndarray:
        """LLR of each row (> 0: synthetic)."""
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return X @ self.coef_[0] + self.intercept_[0]

    def predict(self, X) -> np.ndarray:
        return (self.decision_function(X) > 0).astype(int)


class ExactSquaredHingeSVM:
    """The problem liblinear's LinearSVC solves (squared hinge, L2 penalty on the weights and
    on the intercept as a constant feature, balanced class weights), solved exactly in its
    dual for any subset of the samples: min 1/2 a'(Q + D)a - sum(a), a >= 0, with Q the
    signed Gram matrix of the subset and D = 1 / (2 C_i), a non-negative least-squares
    problem on the Cholesky factor of Q + D (scipy's NNLS). The Gram matrix of all samples is
    computed once and shared by every subset and C: for up to a few thousand samples."""

    def __init__(self, X, y):
        self.Z = np.hstack([X, np.ones((len(X), 1))])
        self.y = np.asarray(y)
        self.sign = np.where(self.y == 1, 1.0, -1.0)
        self.gram = self.Z @ self.Z.T

    def dual(self, rows: np.ndarray, C: float) -> np.ndarray:
        """The optimal dual variables (times the labels' signs) of a fit on ``rows``."""
        from scipy.linalg import cho_solve, cholesky, solve_triangular
        from scipy.optimize import nnls

        sign, y = self.sign[rows], self.y[rows]
        weight = len(y) / (2.0 * np.bincount(y, minlength=2)[y])  # class_weight="balanced"
        Q = self.gram[np.ix_(rows, rows)] * np.outer(sign, sign)
        Q[np.diag_indices_from(Q)] += 1.0 / (2.0 * C * weight)
        L = cholesky(Q, lower=True, check_finite=False)
        ones = np.ones(len(rows))
        alpha = cho_solve((L, True), ones, check_finite=False)
        if alpha.min() < 0:  # some samples beyond the margin: the bound is active
            b = solve_triangular(L, ones, lower=True, check_finite=False)
            alpha, _ = nnls(L.T, b, maxiter=20 * len(rows))
        return alpha * sign

    def held_out(self, train: np.ndarray, test: np.ndarray, C: float) -> np.ndarray:
        """Decision values of the ``test`` rows from the fit on the ``train`` rows."""
        return self.gram[np.ix_(test, train)] @ self.dual(train, C)

    def weights(self, C: float) -> tuple[np.ndarray, float]:
        """(coef [D], intercept) of the fit on every sample."""
        w = self.Z.T @ self.dual(np.arange(len(self.y)), C)
        return w[:-1], float(w[-1])


def _platt(held_out: np.ndarray, y) -> tuple[float, float]:
    """Platt scaling (slope, offset) fitted with balanced class weights on held-out values."""
    platt = LogisticRegression(C=1e4, class_weight="balanced").fit(held_out[:, None], y)
    return float(platt.coef_[0, 0]), float(platt.intercept_[0])


class AttributionHead(ClassifierMixin, BaseEstimator):
    """Class-balanced multinomial logistic regression: one logit per class (origin attribution).

    ``C=None`` picks C from ``C_grid`` by stratified cross-validation: best balanced accuracy,
    ties to the lower log loss, then to the smaller C. ``oof_logits_`` holds the out-of-fold
    logits at the chosen C (each image scored by a head that did not see it), on which an
    open-set threshold can be fitted without a separate validation set; like
    ``scoring_logits``, they are computed in float32 as a saved head is at scoring time.
    """

    def __init__(self, C=None, C_grid=DEFAULT_C_GRID, cv=5, random_state=0):
        self.C = C
        self.C_grid = C_grid
        self.cv = cv
        self.random_state = random_state

    def fit(self, X, y):
        X, y = check_X_y(X, y, dtype=np.float64)
        self.classes_, counts = np.unique(y, return_counts=True)
        if len(self.classes_) < 2:
            raise ValueError(f"need at least 2 classes, got {self.classes_.tolist()}")
        if counts.min() < 2:
            raise ValueError(f"need at least 2 images of each class, got {counts.tolist()}")
        self.n_features_in_ = X.shape[1]
        self.n_splits_, splits = _folds(y, counts.min(), self.cv, self.random_state)
        grid = self.C_grid if self.C is None else (float(self.C),)
        results = {c: self._cross_validate(X, y, splits, c) for c in grid}
        self.cv_scores_ = {
            c: {"balanced_accuracy": r[0], "log_loss": r[1]} for c, r in results.items()
        }
        self.C_ = min(grid, key=lambda c: (-results[c][0], results[c][1], c))
        self.oof_logits_ = results[self.C_][2]
        if self.C is None:
            logger.info(
                "C grid (cv balanced accuracy / log loss): %s -> C=%g",
                ", ".join(f"{c:g}: {r[0]:.3f}/{r[1]:.3f}" for c, r in results.items()),
                self.C_,
            )
        self.coef_, self.intercept_ = self._logits_layer(self._model(self.C_).fit(X, y))
        return self

    def _model(self, C: float) -> LogisticRegression:
        return LogisticRegression(C=C, class_weight="balanced", max_iter=5000)

    def _logits_layer(self, model: LogisticRegression) -> tuple[np.ndarray, np.ndarray]:
        """[C, D] weights and [C] biases; a binary model's single logit z becomes (-z/2, z/2),
        whose softmax is the model's probabilities."""
        w, b = model.coef_, model.intercept_
        if len(self.classes_) == 2:
            w, b = np.vstack([-w[0] / 2, w[0] / 2]), np.array([-b[0] / 2, b[0] / 2])
        return w, b

    def _cross_validate(self, X, y, splits, C) -> tuple[float, float, np.ndarray]:
        logits = np.empty((len(y), len(self.classes_)))
        for train, test in splits:
            model = self._model(C).fit(X[train], y[train])
            w, b = self._logits_layer(model)
            logits[test] = float32_logits(X[test], w, b)
        index = np.searchsorted(self.classes_, y)
        log_prob = logits - logsumexp(logits, axis=1, keepdims=True)
        predicted = self.classes_[logits.argmax(axis=1)]
        return (
            float(balanced_accuracy_score(y, predicted)),
            float(-log_prob[np.arange(len(y)), index].mean()),
            logits,
        )

    def decision_function(self, X) -> np.ndarray:
        """[n, C] logits, columns in the order of ``classes_``."""
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return X @ self.coef_.T + self.intercept_

    def scoring_logits(self, X) -> np.ndarray:
        """[n, C] logits exactly as scoring computes them with the saved (float32) head."""
        check_is_fitted(self, "coef_")
        return float32_logits(X, self.coef_, self.intercept_)

    def predict_proba(self, X) -> np.ndarray:
        return softmax(self.decision_function(X), axis=1)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.decision_function(X).argmax(axis=1)]
