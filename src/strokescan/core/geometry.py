"""In-plane geometry shared by training and inference: turning slices, and mapping label maps between a
slice's own pixel grid and a model's square frame.

Angles are degrees, counter-clockwise as the image is displayed (row 0 at the top).
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage as ndi

Box = tuple[int, int, int, int]  # (row0, col0, row1, col1) of a crop


def rotate_image(image: np.ndarray, angle_deg: float, order: int = 1) -> np.ndarray:
    """``image`` turned ``angle_deg`` counter-clockwise about its centre, same shape (``order=0`` for masks)."""
    if image.dtype == bool:
        return ndi.rotate(image.astype(np.uint8), angle_deg, reshape=False, order=0, mode="constant") > 0
    fill = float(image.min()) if image.size else 0.0
    return ndi.rotate(image, angle_deg, reshape=False, order=order, mode="constant", cval=fill)


def circular_median_deg(angles: np.ndarray) -> float:
    """The angle (degrees, [0, 360)) with the smallest summed circular distance to ``angles``."""
    angles = np.asarray(angles, dtype=float) % 360.0
    diffs = np.abs((angles[None, :] - angles[:, None] + 180.0) % 360.0 - 180.0)
    return float(angles[int(np.argmin(diffs.sum(axis=1)))])


def to_model_frame(label_map: np.ndarray, box: Box, rotation_deg: float, size: int) -> np.ndarray:
    """A label image (class ids or bitmask) in the input grid -> the model's square frame (nearest)."""
    a = label_map
    if rotation_deg:
        a = rotate_image(a, -rotation_deg, order=0)
    r0, c0, r1, c1 = box
    a = np.ascontiguousarray(a[r0:r1, c0:c1])
    return cv2.resize(a, (size, size), interpolation=cv2.INTER_NEAREST)


def from_model_frame(probs: np.ndarray, box: Box, rotation_deg: float, shape: tuple[int, int]) -> np.ndarray:
    """Class probabilities ``(C, size, size)`` in the model frame -> class ids ``(rows, cols)`` in the input grid.

    Probabilities are resized (linear) to the crop box, argmax'ed, pasted into the rotated slice's grid,
    and turned back by ``rotation_deg`` (nearest), so the mask lies on the input's own pixels.
    """
    r0, c0, r1, c1 = box
    h, w = r1 - r0, c1 - c0
    up = np.stack([cv2.resize(p.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) for p in probs])
    ids = np.zeros(shape, np.uint8)
    ids[r0:r1, c0:c1] = np.argmax(up, axis=0).astype(np.uint8)
    if rotation_deg and ids.any():  # an all-background map turns into itself
        ids = rotate_image(ids, rotation_deg, order=0).astype(np.uint8)
    return ids


def circular_error_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Absolute angular difference in degrees, in [0, 180]."""
    return np.abs((np.asarray(a, float) - np.asarray(b, float) + 180.0) % 360.0 - 180.0)
