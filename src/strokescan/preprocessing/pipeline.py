"""From one slice of a :class:`~strokescan.io.Scan` to the model input, the same way in training and use.

Steps: display values in [0, 1] (HU through the window the training JPEGs were exported with), rotation
by the angle the caller gives (estimated by :class:`strokescan.models.rotation.RotationEstimator`), head crop, skull suppression, three channels (image, skull-suppressed image, blood
range stretched), resize to a square. The parameters are a :class:`SlicePlan`, stored with every model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import cv2
import numpy as np

from strokescan.config import BONE_THRESHOLD_8BIT, MODEL_INPUT_SIZE
from strokescan.core.geometry import Box, rotate_image
from strokescan.core.windows import display_unit
from strokescan.preprocessing.masking import head_masks, suppress_skull


@dataclass(frozen=True)
class SlicePlan:
    """Preprocessing parameters written beside a model and read back with it."""

    size: int = MODEL_INPUT_SIZE
    crop_margin: float = 0.04  # fraction of the head box added on each side
    correct_rotation: bool = True  # at inference the Predictor estimates and removes the rotation; training data is upright
    blood_low: float = 0.55  # display value range stretched in channel 3 (about 45..90 HU on a 40/120 window)
    blood_high: float = 0.95
    # skull found by its place (the outer ring), not by brightness alone: a clot saturated by a narrow 8-bit window
    # stays brain and stays in the blood channel (False: every pixel >= BONE_THRESHOLD_8BIT is bone, as older models saw)
    skull_by_shape: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PreparedSlice:
    """Model input of one slice and how it maps back to the original pixel grid."""

    channels: np.ndarray  # (3, size, size) float32 in [0, 1]
    box: Box  # (row0, col0, row1, col1) of the crop in the (rotated) slice
    rotation_deg: float  # angle removed by rotation correction (0 when not applied)
    brain_fraction: float  # brain mask area / slice area, to tell slices without brain


def head_box(head: np.ndarray, margin: float) -> Box:
    """Square box around the head mask, with a margin, clipped to the image."""
    rows, cols = np.nonzero(head)
    h, w = head.shape
    if rows.size == 0:
        return 0, 0, h, w
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    side = int(max(r1 - r0, c1 - c0) * (1 + 2 * margin))
    rc, cc = (r0 + r1) // 2, (c0 + c1) // 2
    r0, c0 = max(0, rc - side // 2), max(0, cc - side // 2)
    return r0, c0, min(h, r0 + side), min(w, c0 + side)


def prepare_slice(pixels: np.ndarray, is_hu: bool, plan: SlicePlan, rotation_deg: float = 0.0) -> PreparedSlice:
    """Model input for one 2-D slice turned back by ``rotation_deg`` (its counter-clockwise angle from upright)."""
    return prepare_slices(pixels, is_hu, [plan], rotation_deg)[0]


def prepare_slices(pixels: np.ndarray, is_hu: bool, plans: Sequence[SlicePlan],
                   rotation_deg: float = 0.0) -> list[PreparedSlice]:
    """:func:`prepare_slice` for several models' plans at once (the classifier's and the U-Net's): windowing,
    rotation and masks run once for plans that differ only in ``size``."""
    full: dict[SlicePlan, tuple] = {}
    out = []
    for plan in plans:
        key = replace(plan, size=0)
        if key not in full:
            full[key] = _full_resolution(pixels, is_hu, plan, rotation_deg)
        stack, box, angle, brain_fraction = full[key]
        resized = cv2.resize(stack, (plan.size, plan.size), interpolation=cv2.INTER_AREA)
        out.append(PreparedSlice(channels=np.ascontiguousarray(resized.transpose(2, 0, 1), dtype=np.float32),
                                 box=box, rotation_deg=angle, brain_fraction=brain_fraction))
    return out


def _full_resolution(pixels: np.ndarray, is_hu: bool, plan: SlicePlan, rotation_deg: float
                     ) -> tuple[np.ndarray, Box, float, float]:
    """(cropped 3-channel stack before resizing, crop box, rotation applied, brain fraction)."""
    unit = display_unit(pixels, is_hu)
    angle = float(rotation_deg or 0.0)
    if angle:
        unit = rotate_image(unit, -angle)
    masks = head_masks(unit * 255.0, is_hu=False, skull_by_shape=plan.skull_by_shape)
    brain_only = suppress_skull(unit, masks.brain)
    if plan.skull_by_shape and not is_hu:
        not_bone = masks.brain  # the window is unknown: a saturated pixel inside the skull may be blood
    else:  # HU: saturated on 40/120 means above 100 HU, calcification or bone, never blood
        not_bone = masks.brain & (unit < BONE_THRESHOLD_8BIT / 255.0)
    blood = np.where(not_bone, np.clip((unit - plan.blood_low) / (plan.blood_high - plan.blood_low), 0, 1), 0.0)
    r0, c0, r1, c1 = head_box(masks.head, plan.crop_margin)
    stack = np.stack([unit, brain_only, blood], axis=-1)[r0:r1, c0:c1]
    return stack, (int(r0), int(c0), int(r1), int(c1)), angle, float(masks.brain.mean())
