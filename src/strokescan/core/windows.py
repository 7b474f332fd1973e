"""CT display windows: named presets, the window the 8-bit training exports were made with, and the
display values every model and overlay starts from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from strokescan.errors import InputError


@dataclass(frozen=True)
class Window:
    """A CT display window in Hounsfield units."""

    center: float
    width: float

    @property
    def low(self) -> float:
        return self.center - self.width / 2

    @property
    def high(self) -> float:
        return self.center + self.width / 2


#: common neuroradiology presets (center/width, HU)
WINDOW_PRESETS: dict[str, Window] = {
    "brain": Window(40, 80),
    "subdural": Window(75, 215),
    "stroke": Window(40, 40),
    "bone": Window(600, 2800),
}

#: the window the 8-bit CT-ICH JPEGs were exported with (data README): level 40, width 120
CTICH_EXPORT_WINDOW = Window(40, 120)


def get_window(name: str) -> Window:
    """A preset by name (brain, subdural, stroke, bone)."""
    try:
        return WINDOW_PRESETS[name]
    except KeyError:
        raise InputError(f"unknown window preset {name!r}; choose from {', '.join(WINDOW_PRESETS)}") from None


def apply_window(hu: np.ndarray, window: Window | str) -> np.ndarray:
    """Hounsfield units mapped to [0, 1] through a display window (values outside are clipped), float32."""
    w = get_window(window) if isinstance(window, str) else window
    scaled = (np.asarray(hu, np.float32) - np.float32(w.low)) / np.float32(w.high - w.low)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def display_unit(pixels: np.ndarray, is_hu: bool) -> np.ndarray:
    """Slice values in [0, 1] as the models saw them in training: HU through the CT-ICH export window
    (40/120); 8-bit values (already windowed by whoever exported them) / 255."""
    if is_hu:
        return apply_window(pixels, CTICH_EXPORT_WINDOW)
    return np.clip(np.asarray(pixels, np.float32) / 255.0, 0.0, 1.0)
