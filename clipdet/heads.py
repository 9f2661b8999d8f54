"""Trainable heads on frozen features, as scikit-learn estimators."""

import logging

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import LinearSVC
from sklearn.utils.validation import check_is_fitted, check_X_y, validate_data

logger = logging.getLogger(__name__)

DEFAULT_C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3)


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
        self.n_splits_ = int(min(self.cv, counts.min()))
        folds = StratifiedKFold(self.n_splits_, shuffle=True, random_state=self.random_state)
        splits = list(folds.split(X, y))
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
