"""Intensity normalization and contrast-limited adaptive histogram equalization (CLAHE)."""

from __future__ import annotations

import numpy as np
from skimage.exposure import equalize_adapthist


def normalize_zscore(image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Zero mean, unit variance, with statistics taken inside ``mask`` when given."""
    values = image[mask] if mask is not None and mask.any() else image
    std = float(values.std())
    return ((image - float(values.mean())) / (std if std > 1e-6 else 1.0)).astype(np.float32)


def clahe(image01: np.ndarray, clip_limit: float = 0.01, kernel_size: int | None = None) -> np.ndarray:
    """CLAHE on an image in [0, 1] (the seed's histogram equalization, limited so noise is not amplified)."""
    return equalize_adapthist(np.clip(image01, 0, 1), kernel_size=kernel_size, clip_limit=clip_limit).astype(
        np.float32
    )
