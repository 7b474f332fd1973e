"""Where a slice is as dense as fresh blood: the intensity rule shared by the classical clot baseline
(:func:`strokescan.evaluation.segmentation.threshold_baseline`) and the derived phe-sich clot label
(:func:`strokescan.datasets.lesion_masks.phe_derived_clot`)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from strokescan.config import BONE_THRESHOLD_8BIT

BLOOD_HU = (50.0, 90.0)  # acute clot on CT


def blood_range(pixels: np.ndarray, is_hu: bool, brain: np.ndarray, k: float = 2.0) -> tuple[float, float] | None:
    """(low, high) values of fresh blood on this slice, None when the slice has no brain to measure.

    HU: 50-90 HU. 8-bit images come with unknown, different windows (CT-ICH 40/120, BHSD much wider), so the
    cut is relative to the slice's own brain: from ``median + k * IQR`` of the (2-px eroded) brain pixels (both
    scale with the window width, so ``k`` carries over between windows) up to the bone threshold.
    """
    inner = ndi.binary_erosion(brain, iterations=2)
    if not inner.any():
        return None
    if is_hu:
        return BLOOD_HU
    q25, q50, q75 = np.percentile(np.asarray(pixels, np.float32)[inner], [25, 50, 75])
    return float(q50 + k * max(q75 - q25, 1.0)), float(BONE_THRESHOLD_8BIT)


def hyperdense(pixels: np.ndarray, is_hu: bool, brain: np.ndarray, k: float = 2.0) -> np.ndarray:
    """Pixels of the (2-px eroded) brain in :func:`blood_range`, after a 3x3 median filter."""
    img = ndi.median_filter(np.asarray(pixels, np.float32), size=3)
    cut = blood_range(img, is_hu, brain, k)
    if cut is None:
        return np.zeros(img.shape, bool)
    low, high = cut
    blood = (img >= low) & (img <= high) if is_hu else (img >= low) & (img < high)
    return blood & ndi.binary_erosion(brain, iterations=2)
