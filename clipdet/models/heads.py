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
    """

    def __init__(self, C=None, C_grid=DEFAULT_C_GRID, cv=5, calibrate=True, random_state=0):
        self.C = C
        self.C_grid = C_grid
        self.cv = cv
        self.calibrate = calibrate
        self.random_state = random_state

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
        if self.C is None:
            self.cv_scores_ = {c: self._cv_auc(X, y, splits, c) for c in self.C_grid}
            self.C_ = max(self.C_grid, key=lambda c: (self.cv_scores_[c], -c))
            logger.info(
                "C grid (cv ROC AUC): %s -> C=%g",
                ", ".join(f"{c:g}: {s:.4f}" for c, s in self.cv_scores_.items()),
                self.C_,
            )
        else:
            self.cv_scores_ = {}
            self.C_ = float(self.C)
        svm = self._svm(self.C_).fit(X, y)
        w, b = svm.coef_[0], float(svm.intercept_[0])
        self.calibration_ = {"method": "none", "scale": 1.0, "offset": 0.0}
        if self.calibrate:
            scale, offset = self._platt(X, y, splits)
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

    def _cv_auc(self, X, y, splits, C) -> float:
        scores = np.empty(len(y))
        for train, test in splits:
            scores[test] = self._svm(C).fit(X[train], y[train]).decision_function(X[test])
        return float(roc_auc_score(y, scores))

    def _platt(self, X, y, splits) -> tuple[float, float]:
        held_out = np.empty(len(y))
        for train, test in splits:
            held_out[test] = self._svm(self.C_).fit(X[train], y[train]).decision_function(X[test])
        platt = LogisticRegression(C=1e4, class_weight="balanced").fit(held_out[:, None], y)
        return float(platt.coef_[0, 0]), float(platt.intercept_[0])

    def decision_function(self, X) -> np.ndarray:
        """LLR of each row (> 0: synthetic)."""
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return X @ self.coef_[0] + self.intercept_[0]

    def predict(self, X) -> np.ndarray:
        return (self.decision_function(X) > 0).astype(int)


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
