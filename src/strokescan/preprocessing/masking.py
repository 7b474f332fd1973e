"""Head, skull and brain masks.

The skull is as bright as blood on a brain window and must not drive a hemorrhage detector: the brain mask
is the cavity enclosed by the skull, and :func:`suppress_skull` blanks everything outside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import convex_hull_image, disk

from strokescan.config import BONE_THRESHOLD_8BIT, BONE_THRESHOLD_HU


@dataclass
class HeadMasks:
    head: np.ndarray  # everything of the patient (no air, no table where separable)
    skull: np.ndarray  # bone
    brain: np.ndarray  # intracranial cavity: brain, CSF and any blood inside the skull


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndi.label(mask)
    if n == 0:
        return mask
    sizes = ndi.sum(mask, labels, index=np.arange(1, n + 1))
    return labels == (int(np.argmax(sizes)) + 1)


def head_masks(pixels: np.ndarray, is_hu: bool) -> HeadMasks:
    """Masks of one 2-D slice given in HU (``is_hu``) or in 8-bit display values."""
    if is_hu:
        head = pixels > -300
        skull = pixels >= BONE_THRESHOLD_HU
    else:
        head = pixels > 10
        skull = pixels >= BONE_THRESHOLD_8BIT
    head = ndi.binary_fill_holes(_largest_component(ndi.binary_opening(head, disk(2))))
    skull &= head
    closed = ndi.binary_closing(skull, disk(3))
    cavity = ndi.binary_fill_holes(closed) & ~closed & head
    cavity = ndi.binary_opening(cavity, disk(3))
    brain = _largest_component(cavity) if cavity.any() else cavity
    if brain.sum() < 0.02 * head.sum() and skull.any():
        # Open skull (skull base, craniectomy): fall back to the hull of the bone.
        brain = convex_hull_image(skull) & ~skull & head
        brain = _largest_component(ndi.binary_opening(brain, disk(3))) if brain.any() else brain
    return HeadMasks(head=head, skull=skull, brain=brain)


def suppress_skull(image: np.ndarray, brain: np.ndarray, margin_px: int = 2) -> np.ndarray:
    """``image`` with everything outside the (slightly dilated) brain mask set to 0."""
    keep = ndi.binary_dilation(brain, disk(margin_px)) if margin_px > 0 else brain
    return np.where(keep, image, 0).astype(image.dtype)
