"""Probability calibration: fitting Platt scaling on held-out logits, and the expected calibration error.
(Applying a fitted calibrator is :class:`strokescan.core.calibration.PlattCalibrator`.)"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from strokescan.core.calibration import PlattCalibrator


def fit_platt(logits: np.ndarray, y: np.ndarray) -> PlattCalibrator:
    """Platt scaling fitted on held-out ``(logits, y)`` (practically unregularised logistic regression)."""
    lr = LogisticRegression(C=1e4, max_iter=1000)
    lr.fit(np.asarray(logits, float).reshape(-1, 1), np.asarray(y, int))
    return PlattCalibrator(a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """Weighted mean |observed rate - mean probability| over equal-width probability bins."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            ece += sel.mean() * abs(y[sel].mean() - p[sel].mean())
    return float(ece)
