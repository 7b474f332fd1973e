"""What differs between hospitals, drawn at random on a raw 8-bit training slice before it is preprocessed.

The training exports are CT-ICH-like brain windows (level 40, width 120, :data:`CTICH_EXPORT_WINDOW`). Another
hospital's export differs in: the window (narrower, with blood saturating like bone; wider, with less contrast),
gamma, noise, blur and resolution (224-1024 px), field of view (tightly cropped to the skull, or a small head in a
large frame), JPEG quality, a small head tilt and a turn by a quarter. :func:`hospital_variant` draws one of each from ``rng`` and
returns a new 8-bit slice; the masks, channels and crop are then made from it by the ordinary
:func:`~strokescan.preprocessing.pipeline.prepare_slice`, as at inference.

Re-windowing an 8-bit export: value v stands for HU = low + v / 255 * width of the export window; values the
export saturated (0 or 255) stay saturated, since the tissue behind them (air; bone) lies far outside any brain
window.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from strokescan.core.windows import CTICH_EXPORT_WINDOW


@dataclass(frozen=True)
class HospitalAugmentation:
    """Ranges of the random changes (stored in the model plan beside the training config)."""

    level: tuple[float, float] = (25.0, 55.0)  # HU
    width: tuple[float, float] = (50.0, 220.0)  # HU, drawn log-uniformly
    gamma: tuple[float, float] = (0.7, 1.4)
    noise_sd: tuple[float, float] = (0.0, 0.04)  # of the [0, 1] range
    blur_sd_px: tuple[float, float] = (0.0, 1.5)
    side_px: tuple[int, int] = (224, 1024)  # the longer side after resampling
    zoom_out: tuple[float, float] = (1.0, 1.8)  # frame side / image side: >1 puts the head in a larger frame
    tight_crop_probability: float = 0.25  # crop to the head's box with a 0-3 % margin instead
    jpeg_quality: tuple[int, int] = (35, 95)
    jpeg_probability: float = 0.5
    tilt_deg: float = 12.0  # uniform in +- this
    flip_probability: float = 0.5
    quarter_turn_probability: float = 0.3  # an export turned by 90, 180 or 270 degrees (as phe-sich's are)

    def to_dict(self) -> dict:
        return asdict(self)


def rewindow(image: np.ndarray, level: float, width: float) -> np.ndarray:
    """An 8-bit brain-window export shown through another window (level, width in HU), float32 in [0, 255]."""
    v = np.asarray(image, np.float32)
    hu = CTICH_EXPORT_WINDOW.low + v / 255.0 * CTICH_EXPORT_WINDOW.width
    out = np.clip((hu - (level - width / 2)) / width, 0.0, 1.0) * 255.0
    out[v >= 254.5] = 255.0
    out[v <= 0.5] = 0.0
    return out


def _frame(image: np.ndarray, aug: HospitalAugmentation, rng: np.random.Generator) -> np.ndarray:
    """Field of view: a tight crop around the head, or the slice inside a larger black frame."""
    if rng.random() < aug.tight_crop_probability:
        rows, cols = np.nonzero(image > 10)
        if rows.size:
            h, w = image.shape
            m = int(rng.uniform(0.0, 0.03) * max(h, w))
            return image[max(rows.min() - m, 0):min(rows.max() + 1 + m, h),
                         max(cols.min() - m, 0):min(cols.max() + 1 + m, w)]
        return image
    factor = rng.uniform(*aug.zoom_out)
    if factor <= 1.01:
        return image
    h, w = image.shape
    side = int(round(max(h, w) * factor))
    out = np.zeros((side, side), np.float32)
    r0, c0 = int(rng.integers(0, side - h + 1)), int(rng.integers(0, side - w + 1))
    out[r0:r0 + h, c0:c0 + w] = image
    return out


def hospital_variant(image: np.ndarray, rng: np.random.Generator,
                     aug: HospitalAugmentation | None = None) -> np.ndarray:
    """One random "other hospital" version of an upright 8-bit slice (2-D), as float32 values in [0, 255]."""
    aug = aug or HospitalAugmentation()
    width = float(np.exp(rng.uniform(np.log(aug.width[0]), np.log(aug.width[1]))))
    out = rewindow(image, rng.uniform(*aug.level), width)
    out = 255.0 * (out / 255.0) ** rng.uniform(*aug.gamma)
    if rng.random() < aug.flip_probability:
        out = out[:, ::-1]
    if rng.random() < aug.quarter_turn_probability:
        out = np.rot90(out, int(rng.integers(1, 4)))
    tilt = rng.uniform(-aug.tilt_deg, aug.tilt_deg)
    h, w = out.shape
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), float(tilt), 1.0)
    out = cv2.warpAffine(np.ascontiguousarray(out), m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0.0)
    out = _frame(out, aug, rng)
    side = int(rng.integers(aug.side_px[0], aug.side_px[1] + 1))
    scale = side / max(out.shape)
    size = (max(int(round(out.shape[1] * scale)), 8), max(int(round(out.shape[0] * scale)), 8))
    out = cv2.resize(out, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    blur = rng.uniform(*aug.blur_sd_px)
    if blur > 0.2:
        out = cv2.GaussianBlur(out, (0, 0), blur)
    noise = rng.uniform(*aug.noise_sd)
    if noise > 0:
        out = out + rng.normal(0.0, noise * 255.0, out.shape).astype(np.float32) * (out > 0)
    out = np.clip(out, 0.0, 255.0)
    if rng.random() < aug.jpeg_probability:
        quality = int(rng.integers(aug.jpeg_quality[0], aug.jpeg_quality[1] + 1))
        ok, buf = cv2.imencode(".jpg", out.round().astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE).astype(np.float32)
    return np.ascontiguousarray(out, np.float32)
