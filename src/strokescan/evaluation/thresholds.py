"""Operating thresholds chosen by a stated rule on validation predictions."""

from __future__ import annotations

import numpy as np


def threshold_for_sensitivity(y: np.ndarray, p: np.ndarray, sensitivity: float) -> float:
    """The highest threshold whose sensitivity (p >= t) on (y, p) is at least ``sensitivity``."""
    y, p = np.asarray(y, int), np.asarray(p, float)
    positives = np.sort(p[y == 1])
    if positives.size == 0:
        return 0.5
    k = int(np.floor((1.0 - sensitivity) * positives.size + 1e-9))  # positives we may miss
    return float(positives[min(k, positives.size - 1)])


def balanced_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The threshold (p >= t positive) maximising Youden's J = sensitivity + specificity - 1 on (y, p);
    of equal J, the highest."""
    y, p = np.asarray(y, int), np.asarray(p, float)
    if not (y == 1).any() or not (y == 0).any():
        return 0.5
    candidates = np.unique(p)
    pos, neg = p[y == 1], p[y == 0]
    sens = (pos[None, :] >= candidates[:, None]).mean(axis=1)
    spec = (neg[None, :] < candidates[:, None]).mean(axis=1)
    j = sens + spec - 1
    return float(candidates[np.flatnonzero(j == j.max())[-1]])
