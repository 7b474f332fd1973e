"""Head, skull and brain masks.

The skull is as bright as blood on a brain window and must not drive a hemorrhage detector: the brain mask
is the cavity enclosed by the skull, and :func:`suppress_skull` blanks everything outside it.

The morphology runs on OpenCV (``head_masks`` is the inference hot spot) but gives bit-for-bit the masks of
the scipy.ndimage / scikit-image formulation it replaced, which is what the comments refer to:
``binary_opening``/``binary_closing``/``binary_dilation`` with a ``disk`` and outside-the-image = 0,
``binary_fill_holes`` and ``label`` with 4-connectivity, ``convex_hull_image`` with its default options.
``tests/test_masking.py`` keeps that formulation as the reference and checks equality on real slices.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from scipy.spatial import ConvexHull
from skimage.morphology import disk

from strokescan.config import BONE_THRESHOLD_8BIT, BONE_THRESHOLD_HU, SKULL_RING_FRACTION

# Room around the head's bounding box for the brain steps: closing (disk(3)) grows the skull by 3 px and
# fill-holes needs one more ring of background around that, so anything >= 4 gives the uncropped result.
_CROP_PAD = 8


@dataclass
class HeadMasks:
    head: np.ndarray  # everything of the patient (no air, no table where separable)
    skull: np.ndarray  # bone
    brain: np.ndarray  # intracranial cavity: brain, CSF and any blood inside the skull


@lru_cache(maxsize=None)
def _disk(radius: int) -> np.ndarray:
    """skimage ``disk(radius)`` as an OpenCV kernel."""
    return np.ascontiguousarray(disk(radius), dtype=np.uint8)


def _u8(mask: np.ndarray) -> np.ndarray:
    """C-contiguous 0/1 uint8 of a bool mask."""
    return np.ascontiguousarray(mask, dtype=bool).view(np.uint8)


def _opening(mask: np.ndarray, radius: int) -> np.ndarray:
    """``ndi.binary_opening(mask, disk(radius))``: pixels outside the image count as 0."""
    out = cv2.morphologyEx(_u8(mask), cv2.MORPH_OPEN, _disk(radius),
                           borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return out.view(bool)


def _closing(mask: np.ndarray, radius: int) -> np.ndarray:
    """``ndi.binary_closing(mask, disk(radius))``: outside = 0 in the erosion too, so it eats in at the border."""
    out = cv2.morphologyEx(_u8(mask), cv2.MORPH_CLOSE, _disk(radius),
                           borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return out.view(bool)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``ndi.binary_fill_holes(mask)``: background not 4-connected to the image border becomes foreground."""
    h, w = mask.shape
    padded = np.zeros((h + 2, w + 2), np.uint8)
    padded[1:-1, 1:-1] = mask
    cv2.floodFill(padded, None, (0, 0), 2, flags=4)
    return padded[1:-1, 1:-1] != 2


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """Largest 4-connected component (``ndi.label``); a tie goes to the one that starts first in raster order."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(_u8(mask), connectivity=4, ltype=cv2.CV_32S)
    if n <= 1:
        return np.zeros(mask.shape, dtype=bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    best = np.flatnonzero(areas == areas.max()) + 1
    if best.size > 1:  # scipy numbers components by their first pixel; OpenCV's order need not be that
        flat = labels.ravel()
        best = best[[int(np.argmin([np.argmax(flat == b) for b in best]))]]
    return labels == int(best[0])


def _convex_hull(mask: np.ndarray) -> np.ndarray:
    """``skimage.morphology.convex_hull_image(mask)`` of a non-empty mask.

    Same hull (qhull on the midpoints of the pixel edges), then the pixels whose centres lie in the closed
    hull, found row by row in exact integer arithmetic (doubled coordinates) rather than by testing every
    pixel: skimage's point-in-polygon test is exact on these half-integer coordinates, so the sets agree.
    """
    h, w = mask.shape
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    left = mask[rows].argmax(axis=1)
    right = w - 1 - mask[rows, ::-1].argmax(axis=1)
    top = mask[:, cols].argmax(axis=0)
    bottom = h - 1 - mask[::-1, cols].argmax(axis=0)
    extreme = np.concatenate([np.stack([rows, left], 1), np.stack([rows, right], 1),
                              np.stack([top, cols], 1), np.stack([bottom, cols], 1)]).astype(np.int64)
    offsets = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]], np.int64)
    points = (2 * extreme[:, None, :] + offsets + 1).reshape(-1, 2)  # + 1: all >= 0
    key = np.unique(points[:, 0] * (2 * w + 1) + points[:, 1])  # without repeats (qhull dislikes them)
    points = np.stack([key // (2 * w + 1), key % (2 * w + 1)], 1) - 1
    verts = points[ConvexHull(points.astype(np.float64)).vertices]
    nxt = np.roll(verts, -1, axis=0)
    if np.sum(verts[:, 0] * nxt[:, 1] - nxt[:, 0] * verts[:, 1]) < 0:
        verts, nxt = verts[::-1], np.roll(verts[::-1], -1, axis=0)
    # Inside edge P->Q: da * (2c - Pb) - db * (2r - Pa) >= 0, i.e. da * 2c >= k.
    da, db = nxt[:, 0] - verts[:, 0], nxt[:, 1] - verts[:, 1]
    k = da * verts[:, 1] + db * (2 * np.arange(h, dtype=np.int64)[:, None] - verts[:, 0])
    lo = np.full(h, 0, np.int64)
    hi = np.full(h, w - 1, np.int64)
    pos, neg, flat = da > 0, da < 0, da == 0
    if pos.any():
        lo = np.maximum(lo, (-((-k[:, pos]) // (2 * da[pos]))).max(axis=1))
    if neg.any():
        hi = np.minimum(hi, ((-k[:, neg]) // (-2 * da[neg])).min(axis=1))
    ok = (k[:, flat] <= 0).all(axis=1)
    c = np.arange(w)
    return (c >= lo[:, None]) & (c <= hi[:, None]) & ok[:, None]


def _brain(head: np.ndarray, skull: np.ndarray) -> np.ndarray:
    """Brain mask of a (cropped) slice; ``skull`` is inside ``head``."""
    closed = _closing(skull, 3)
    cavity = _fill_holes(closed) & ~closed & head
    cavity = _opening(cavity, 3)
    brain = _largest_component(cavity) if cavity.any() else cavity
    if brain.sum() < 0.02 * head.sum() and skull.any():
        # Open skull (skull base, craniectomy): fall back to the hull of the bone.
        brain = _convex_hull(skull) & ~skull & head
        brain = _largest_component(_opening(brain, 3)) if brain.any() else brain
    return brain


def _outer_ring_only(skull: np.ndarray, head: np.ndarray) -> np.ndarray:
    """The bright components of ``skull`` that reach the outer ring of ``head`` (within
    :data:`~strokescan.config.SKULL_RING_FRACTION` of the head's equivalent radius from its edge): the skull and
    the bones of the face. A bright component wholly inside the ring (a saturated clot or calcification on a narrow
    window) is not bone."""
    if not skull.any():
        return skull
    radius = np.sqrt(head.sum() / np.pi)
    depth = cv2.distanceTransform(_u8(head), cv2.DIST_L2, 3)  # distance to the nearest pixel outside the head
    n, labels = cv2.connectedComponents(_u8(skull), connectivity=8)
    if n <= 1:
        return skull
    nearest = np.full(n, np.inf, np.float32)
    np.minimum.at(nearest, labels[skull], depth[skull])
    keep = nearest <= SKULL_RING_FRACTION * radius
    keep[0] = False
    return keep[labels]


def head_masks(pixels: np.ndarray, is_hu: bool, skull_by_shape: bool = False) -> HeadMasks:
    """Masks of one 2-D slice given in HU (``is_hu``) or in 8-bit display values.

    With ``skull_by_shape`` (8-bit input) only the bright components that reach the head's outer ring are skull
    (:func:`_outer_ring_only`), so a clot saturated by a narrow window stays inside the brain mask; without it,
    every pixel at or above :data:`~strokescan.config.BONE_THRESHOLD_8BIT` is bone (what the older models saw)."""
    pixels = np.asarray(pixels)
    if pixels.ndim != 2:
        raise ValueError(f"head_masks needs a 2-D slice, got shape {pixels.shape}")
    if is_hu:
        head = pixels > -300
        skull = pixels >= BONE_THRESHOLD_HU
    else:
        head = pixels > 10
        skull = pixels >= BONE_THRESHOLD_8BIT
    brain = np.zeros(pixels.shape, dtype=bool)
    if pixels.size == 0:
        return HeadMasks(head=head, skull=skull, brain=brain)
    head = _fill_holes(_largest_component(_opening(head, 2)))
    skull &= head
    if skull_by_shape and not is_hu:
        skull = _outer_ring_only(skull, head)
    rows = np.flatnonzero(head.any(axis=1))
    if rows.size:
        cols = np.flatnonzero(head.any(axis=0))
        r0, r1 = max(rows[0] - _CROP_PAD, 0), min(rows[-1] + 1 + _CROP_PAD, head.shape[0])
        c0, c1 = max(cols[0] - _CROP_PAD, 0), min(cols[-1] + 1 + _CROP_PAD, head.shape[1])
        brain[r0:r1, c0:c1] = _brain(head[r0:r1, c0:c1], skull[r0:r1, c0:c1])
    return HeadMasks(head=head, skull=skull, brain=brain)


def suppress_skull(image: np.ndarray, brain: np.ndarray, margin_px: int = 2) -> np.ndarray:
    """``image`` with everything outside the (slightly dilated) brain mask set to 0."""
    if margin_px > 0:
        brain = np.asarray(brain)
        if brain.ndim != 2:
            raise ValueError(f"suppress_skull needs a 2-D mask, got shape {brain.shape}")
        keep = cv2.dilate(_u8(brain != 0), _disk(margin_px)).view(bool) if brain.size else brain != 0
    else:
        keep = brain
    return np.where(keep, image, 0).astype(image.dtype)
