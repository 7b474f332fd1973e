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
