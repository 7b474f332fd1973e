"""Rotation estimate and correction on a few real slices (skipped where the shared data is missing)."""

from __future__ import annotations

import numpy as np
import pytest

from strokescan.config import data_root
from strokescan.io import load_scan
from strokescan.preprocessing.orientation import (
    correct_rotation,
    estimate_rotation,
    estimate_scan_rotation,
    rotate_image,
)

CTICH_UPRIGHT = "ctich-kaggle/Brain_Data_Organised/Normal/57 (20).jpg"  # mid-level slice, head straight
CTICH_TILTED = "ctich-kaggle/Brain_Data_Organised/Normal/53 (22).jpg"  # head turned about 25 deg clockwise
PHE = "phe-sich/images/0012/0012_14.png"  # stored face-left: upright turned 90 deg counter-clockwise
GE = "head-ct-dicom/ge-hispeed-dual_gantry-tilt"


def _err(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


def _path(rel: str):
    p = data_root() / rel
    if not p.exists():
        pytest.skip(f"shared data missing: {p}")
    return p


def test_rotate_image_is_counter_clockwise() -> None:
    a = np.zeros((9, 9), dtype=np.float32)
    a[0, 4] = 1.0  # top centre
    r = rotate_image(a, 90.0, order=0)
    assert r[4, 0] == 1.0  # moved to the left: counter-clockwise as displayed
    m = rotate_image(a > 0, 90.0)
    assert m.dtype == bool and m[4, 0]


@pytest.mark.parametrize("angle", [0.0, 37.0, 90.0, 180.0, 203.0, 270.0])
def test_round_trip_known_angles(angle: float) -> None:
    scan = load_scan(_path(CTICH_UPRIGHT))
    est = estimate_rotation(rotate_image(scan.pixels[0], angle), scan.is_hu)
    assert 0.0 <= est < 360.0
    assert _err(est, angle) <= 10.0


def test_tilted_head_is_measured_against_its_midline() -> None:
    scan = load_scan(_path(CTICH_TILTED))
    assert _err(estimate_rotation(scan.pixels[0], scan.is_hu), 335.0) <= 10.0


def test_phe_sich_face_left_and_its_correction() -> None:
    # Tolerance 25 deg: this patient's head is itself turned in the face-left frame (see docs/rotation.md).
    scan = load_scan(_path(PHE))
    est = estimate_rotation(scan.pixels[0], scan.is_hu)
    assert _err(est, 90.0) <= 25.0
    upright, applied = correct_rotation(scan.pixels[0], scan.is_hu)
    assert upright.shape == scan.pixels[0].shape
    assert _err(applied, -est) <= 0.1
    assert _err(estimate_rotation(upright, scan.is_hu), 0.0) <= 10.0


def test_scan_rotation_on_dicom_volume_and_single_jpeg() -> None:
    vol = load_scan(_path(GE))
    assert vol.is_hu and vol.pixels.shape[0] > 1
    est = estimate_scan_rotation(vol)
    assert est is not None and _err(est, 0.0) <= 15.0
    jpg = estimate_scan_rotation(load_scan(_path(CTICH_UPRIGHT)))
    assert jpg is not None and _err(jpg, 0.0) <= 10.0


def test_blank_slice_gives_no_scan_estimate() -> None:
    from strokescan.io import Scan

    blank = Scan(pixels=np.zeros((1, 64, 64), np.float32), is_hu=False, modality="CT", source_format="image",
                 source_path=data_root())
    assert estimate_scan_rotation(blank) is None
