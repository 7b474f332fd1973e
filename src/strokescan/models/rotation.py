"""Rotation estimation: the in-plane angle of a head slice, so that preprocessing can bring it upright.

Upright means anterior (face) at the top of the image and the midline vertical. Angles are degrees,
counter-clockwise as the image is displayed (row 0 at the top): ``rotate_image(upright, a)`` is the upright
slice turned ``a`` degrees counter-clockwise, and :meth:`RotationEstimator.estimate` of it returns about ``a``.

Method (see docs/rotation.md): a tiny CNN (:mod:`strokescan.models.orientation`, bundled fp16 weights,
checksum-verified) reads (cos, sin) of the angle from the head-masked slice cropped around the head's centroid,
with test-time turns and flips; a mirror-symmetry search within 20 degrees refines the midline. The earlier
classical estimator (symmetry search for the midline + head-outline vote for front/back) is kept as
:func:`classical_estimate_rotation`, the baseline the benchmark reports next to the network.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage as ndi

from strokescan.core.geometry import circular_median_deg
from strokescan.core.windows import display_unit
from strokescan.io.scan import Scan
from strokescan.models import orientation as onet
from strokescan.preprocessing.masking import head_masks

_WORK_PX = 128  # side of the working copy
_ELONGATION_WEIGHT = 0.5  # weight of the long-axis bonus against the symmetry correlation
MIN_HEAD_FRACTION = 0.05  # slices whose head covers less of the image give no estimate in a volume


def _to_display(small: np.ndarray, is_hu: bool) -> np.ndarray:
    """8-bit-like display values: HU through the CT-ICH export window (40/120), 8-bit values as they are."""
    if is_hu:
        return display_unit(small, is_hu) * np.float32(255.0)
    return np.clip(small, 0.0, 255.0).astype(np.float32)  # a no-op on 8-bit exports; bounds anything else


def _warp(a: np.ndarray, cy: float, cx: float, theta: float, nearest: bool = False) -> np.ndarray:
    """Turn ``a`` by ``theta`` degrees counter-clockwise about (cy, cx) and move that point to the centre."""
    m = cv2.getRotationMatrix2D((float(cx), float(cy)), float(theta), 1.0)
    m[0, 2] += _WORK_PX / 2 - cx
    m[1, 2] += _WORK_PX / 2 - cy
    flags = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.warpAffine(a, m, (_WORK_PX, _WORK_PX), flags=flags)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum() + 1e-9))


def _axis_score(f: np.ndarray, head: np.ndarray, cy: float, cx: float, theta: float) -> float:
    """Mirror symmetry about the vertical after turning by ``theta``, plus the long-axis-vertical bonus."""
    r = _warp(f, cy, cx, theta)
    h = _warp(head, cy, cx, theta, nearest=True)
    ys, xs = np.nonzero(h)
    elong = (ys.var() - xs.var()) / (ys.var() + xs.var() + 1e-9) if ys.size else 0.0
    return _ncc(r, r[:, ::-1]) + _ELONGATION_WEIGHT * float(elong)


def _anterior_up_vote(head: np.ndarray, cy: float, cx: float, theta: float) -> float:
    """Positive when anterior is at the top after turning the slice by ``theta``, negative when at the bottom."""
    h = _warp(head.astype(np.uint8), cy, cx, theta, nearest=True) > 0
    rows = np.nonzero(h.any(axis=1))[0]
    if rows.size < 5:
        return 0.0
    top, bottom = rows[0], rows[-1]
    length = bottom - top
    widths = h.sum(axis=1).astype(float)
    front, back = widths[int(top + 0.2 * length)], widths[int(top + 0.8 * length)]
    ys = np.nonzero(h)[0].astype(float)
    skew = ((ys - ys.mean()) ** 3).mean() / (ys.std() ** 3 + 1e-9)
    return float(np.sign(back - front) + np.sign(-skew))


def _classical_estimate(image: np.ndarray, is_hu: bool) -> tuple[float, float]:
    """Classical estimate (symmetry axis + outline vote): (angle in [0, 360), head fraction of the image)."""
    zoom = _WORK_PX / max(image.shape)
    small = ndi.zoom(np.asarray(image, dtype=np.float32), zoom, order=1)
    pad_y, pad_x = _WORK_PX - small.shape[0], _WORK_PX - small.shape[1]
    small = np.pad(small, ((0, pad_y), (0, pad_x)), constant_values=float(small.min()))
    head = head_masks(small, is_hu).head
    head_fraction = float(head.mean())
    if head.sum() < 50:
        return 0.0, head_fraction
    disp = _to_display(small, is_hu)
    cy, cx = ndi.center_of_mass(head)
    f = disp * head
    head_u8 = head.astype(np.uint8)
    coarse = np.arange(0.0, 180.0, 3.0)
    best = coarse[int(np.argmax([_axis_score(f, head_u8, cy, cx, t) for t in coarse]))]
    fine = np.arange(best - 3.0, best + 3.01, 0.5)
    theta = float(fine[int(np.argmax([_axis_score(f, head_u8, cy, cx, t) for t in fine]))])
    vote = _anterior_up_vote(head, cy, cx, theta)
    # Turning by theta makes the slice upright (vote > 0) or upside down: the slice's own angle is -theta.
    angle = -theta if vote >= 0 else 180.0 - theta
    return round(angle % 360.0, 1) % 360.0, head_fraction


def classical_estimate_rotation(image: np.ndarray, is_hu: bool) -> float:
    """The classical (symmetry + outline) estimate, degrees in [0, 360); the benchmark's baseline."""
    return _classical_estimate(image, is_hu)[0]


_TTA = [(t, f) for f in (False, True) for t in (0.0, 90.0, 180.0, 270.0)]  # test-time turns and mirror flips


def _net_estimates(model: onet.OrientationNet, images: list[np.ndarray], is_hu: bool, tta: bool = True
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(angles in [0, 360), network confidences, head fractions) for 2-D slices.

    With ``tta`` each slice is also read turned by 90/180/270 degrees and mirrored (a slice at angle a, mirrored and then
    turned by t, reads t - a); the readings, turned back, are averaged as unit vectors (confidence = their
    resultant length, 1 when all agree).
    """
    views = [onet.head_view(im, is_hu) for im in images]
    plan = _TTA if tta else [(0.0, False)]
    x = np.stack([onet.net_input(v, t, flip=f) for v in views for t, f in plan])
    raw, _ = onet.predict_angles(model, x)
    raw = raw.reshape(len(views), len(plan))
    back = np.array([[(t - a) if f else (a - t) for a, (t, f) in zip(row, plan)] for row in raw])
    rad = np.radians(back)
    c, s = np.cos(rad).mean(axis=1), np.sin(rad).mean(axis=1)
    return np.degrees(np.arctan2(s, c)) % 360.0, np.hypot(c, s), np.array([v.head_fraction for v in views])


_REFINE_SPAN = 20.0  # symmetry refinement searches this far either side of the network's angle (0: off)


def _refine(image: np.ndarray, is_hu: bool, angle: float, span: float | None = None) -> float:
    """The angle within ``span`` degrees of ``angle`` whose midline gives the best mirror symmetry."""
    span = _REFINE_SPAN if span is None else span  # read at call time: the benchmark overrides it
    zoom = _WORK_PX / max(image.shape)
    small = ndi.zoom(np.asarray(image, dtype=np.float32), zoom, order=1)
    small = np.pad(small, ((0, _WORK_PX - small.shape[0]), (0, _WORK_PX - small.shape[1])),
                   constant_values=float(small.min()))
    head = head_masks(small, is_hu).head
    if head.sum() < 50:
        return angle
    cy, cx = ndi.center_of_mass(head)
    f = _to_display(small, is_hu) * head

    def score(t: float) -> float:
        r = _warp(f, cy, cx, t)
        return _ncc(r, r[:, ::-1])

    coarse = np.arange(-angle - span, -angle + span + 0.01, 1.0)
    best = coarse[int(np.argmax([score(t) for t in coarse]))]
    fine = np.arange(best - 0.5, best + 0.51, 0.5)
    return float(-fine[int(np.argmax([score(t) for t in fine]))]) % 360.0


_MAX_SCAN_SLICES = 12  # slices read per volume (evenly spaced)


class RotationEstimator:
    """Owns the orientation network; estimates the rotation of a slice or of a whole scan.

    Holds no per-call state: one instance may be shared by the threads of a server.
    """

    def __init__(self, model_dir: Path | str | None = None) -> None:
        self.model, self.plan = onet.load_orientation_net(Path(model_dir) if model_dir is not None else None)

    def estimate_with_head(self, image: np.ndarray, is_hu: bool) -> tuple[float, float]:
        """(angle in [0, 360), head fraction of the image); angle 0 when no head is found."""
        angles, _, frac = _net_estimates(self.model, [image], is_hu)
        if frac[0] <= 0.0 or not np.isfinite(angles[0]):
            return 0.0, float(frac[0])
        angle = float(angles[0])
        if _REFINE_SPAN > 0:
            angle = _refine(image, is_hu, angle)
        return round(angle, 1) % 360.0, float(frac[0])

    def estimate(self, image: np.ndarray, is_hu: bool) -> float:
        """Degrees in [0, 360) by which the 2-D head slice is turned counter-clockwise from upright."""
        return self.estimate_with_head(image, is_hu)[0]

    def _scan_readings(self, scan: Scan) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(slice indices, angles, confidences, head fractions) of the network on up to 12 evenly spaced slices."""
        n = scan.pixels.shape[0]
        picks = np.unique(np.linspace(0, n - 1, min(n, _MAX_SCAN_SLICES)).round().astype(int))
        return (picks, *_net_estimates(self.model, [scan.pixels[i] for i in picks], scan.is_hu))

    def estimate_scan(self, scan: Scan) -> float | None:
        """Angle in degrees (counter-clockwise) by which the scan's slices are rotated from upright.

        Per-slice estimates (network + symmetry refinement) on up to 12 evenly spaced slices whose head covers
        at least 5% of the image, leaving out the quarter with the smallest head (skull base, vertex) when 8 or
        more qualify; combined by a circular median. None when no slice shows a head.
        """
        picks, angles, _, frac = self._scan_readings(scan)
        ok = frac >= MIN_HEAD_FRACTION
        if not ok.any():
            return None
        # Slice order is not known to be feet-first or head-first, so the level is judged by the head's size.
        use = ok
        if ok.sum() >= 8:
            use = ok & (frac >= np.quantile(frac[ok], 0.25))
        refined = [_refine(scan.pixels[i], scan.is_hu, float(a)) if _REFINE_SPAN > 0 else float(a)
                   for i, a in zip(picks[use], angles[use])]
        return round(circular_median_deg(np.array(refined)), 1) % 360.0

    def slice_angles(self, scan: Scan, correct_rotation: bool = True) -> list[float]:
        """The angle to remove from each slice before analysis (:func:`turn_rule`, docs/rotation.md): 0 everywhere
        when the plan (or the operator) does not correct rotation; for a DICOM axial series the in-plane angle its
        ImageOrientationPatient states (the header, not the pixels); otherwise the network's estimate, per volume
        or per 2-D image, applied only when it confidently reads a quarter turn."""
        if not correct_rotation:
            return [0.0] * scan.n_slices
        header = header_angle(scan)
        if header is not None:
            return [header] * scan.n_slices
        if scan.is_volume:
            return [self.confident_turn_scan(scan)] * scan.n_slices
        return [self.confident_turn(scan.pixels[i], scan.is_hu) for i in range(scan.n_slices)]

    def confident_turn(self, image: np.ndarray, is_hu: bool) -> float:
        """:func:`turn_rule` of the network's reading of one 2-D slice: 0, 90, 180 or 270."""
        angles, confidence, frac = _net_estimates(self.model, [image], is_hu)
        return turn_rule(float(angles[0]), float(confidence[0])) if frac[0] > 0 else 0.0

    def confident_turn_scan(self, scan: Scan) -> float:
        """:func:`turn_rule` of the circular median of the network's readings of up to 12 slices showing a head."""
        _, angles, confidence, frac = self._scan_readings(scan)
        ok = frac >= MIN_HEAD_FRACTION
        if not ok.any():
            return 0.0
        return turn_rule(circular_median_deg(angles[ok]), float(np.median(confidence[ok])))


#: the network's reading is applied only when it is at least this sure (resultant length of its test-time readings)
MIN_TURN_CONFIDENCE = 0.95
#: ... and lies this close to a quarter turn; a head tilt is never corrected (the training slices were not either)
MAX_TURN_OFFSET_DEG = 15.0


def turn_rule(angle: float, confidence: float) -> float:
    """The turn to remove for a network reading ``angle`` (degrees counter-clockwise) of ``confidence``: the nearest
    multiple of 90 degrees when the reading is confident and within :data:`MAX_TURN_OFFSET_DEG` of it, else 0.

    Exports of unknown orientation are upright or turned by a quarter (phe-sich's are turned by 90); a reading in
    between (the 73-degree turn of an upright CQ500 slice) is an error of the estimate, not a turn of the image.
    """
    quarter = round(angle / 90.0) % 4 * 90.0
    offset = abs((angle - quarter + 180.0) % 360.0 - 180.0)
    if confidence < MIN_TURN_CONFIDENCE or offset > MAX_TURN_OFFSET_DEG:
        return 0.0
    return float(quarter)


def header_angle(scan: Scan) -> float | None:
    """In-plane angle (degrees counter-clockwise, [0, 360)) of an axial DICOM series from its ImageOrientationPatient:
    the row direction's angle from the patient's x axis (0 for the usual 1\\0\\0\\0\\1\\0; a gantry tilt turns the
    column direction out of the plane, not the image within it). None when the scan is not an axial DICOM series
    with that tag."""
    if scan.source_format != "dicom" or scan.orientation != "axial" or not scan.references:
        return None
    iop = scan.references[0].image_orientation_patient
    if iop is None:
        return None
    row = np.asarray(iop[:3], float)
    if np.hypot(row[0], row[1]) < 0.5:
        return None
    return round(float(np.degrees(np.arctan2(row[1], row[0]))) % 360.0, 1) % 360.0
