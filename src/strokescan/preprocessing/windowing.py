"""CT windowing with named presets, and the path for 8-bit images that carry no HU."""

from __future__ import annotations

import numpy as np
from monai.transforms import ScaleIntensityRange

from strokescan.config import WINDOW_PRESETS, Window
from strokescan.errors import InputError


def get_window(name: str) -> Window:
    """A preset by name (brain, subdural, stroke, bone)."""
    try:
        return WINDOW_PRESETS[name]
    except KeyError:
        raise InputError(f"unknown window preset {name!r}; choose from {', '.join(WINDOW_PRESETS)}") from None


def apply_window(hu: np.ndarray, window: Window | str) -> np.ndarray:
    """Map Hounsfield units to [0, 1] through a display window (values outside are clipped)."""
    w = get_window(window) if isinstance(window, str) else window
    scale = ScaleIntensityRange(a_min=w.low, a_max=w.high, b_min=0.0, b_max=1.0, clip=True)
    return np.asarray(scale(np.asarray(hu, np.float32)), dtype=np.float32)


def to_unit_range(pixels: np.ndarray, is_hu: bool, window: Window | str = "brain") -> np.ndarray:
    """Pixels of any scan as display values in [0, 1].

    With HU the named window is applied. Without HU (8-bit JPEG/PNG, already windowed by whoever exported
    them) the values are only rescaled from 0..255: the window cannot be changed after export.
    """
    if is_hu:
        return apply_window(pixels, window)
    return np.clip(np.asarray(pixels, np.float32) / 255.0, 0.0, 1.0)
