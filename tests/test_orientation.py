"""Rotation estimate and correction: the bundled network, its checksum, and real slices (skipped where the shared
data is missing). Slices used here are from held-out ctich-kaggle fold-0 patients (never trained on) and from
phe-sich (external)."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

from strokescan.config import data_root
from strokescan.core.geometry import circular_error_deg, rotate_image
from strokescan.errors import ModelError
from strokescan.io import Scan, load_scan
from strokescan.models.orientation import BUNDLED_DIR, WEIGHTS_FILE, OrientationNet, load_orientation_net
from strokescan.models.rotation import RotationEstimator, header_angle, turn_rule

# Held-out fold-0 patients (100, 101), mid-level slices.
HELD_OUT = ["ctich-kaggle/Brain_Data_Organised/Normal/100 (18).jpg",
            "ctich-kaggle/Brain_Data_Organised/Normal/101 (20).jpg"]
PHE = "phe-sich/images/0005/0005_14.png"  # stored face-left (upright turned 90 deg CCW), head straight in that frame
GE = "head-ct-dicom/ge-hispeed-dual_gantry-tilt"


def _err(a: float, b: float) -> float:
    return float(circular_error_deg(a, b))


@pytest.fixture(scope="module")
def estimator() -> RotationEstimator:
    return RotationEstimator()


def _path(rel: str):
    p = data_root() / rel
    if not p.exists():
        pytest.skip(f"shared data missing: {p}")
    return p


def test_bundled_model_loads_and_is_tiny() -> None:
    model, plan = load_orientation_net()
    assert isinstance(model, OrientationNet)
    assert (BUNDLED_DIR / WEIGHTS_FILE).stat().st_size < 2_000_000
    assert len(plan.weights_sha256) == 64 and "phe-sich never used" in plan.training["data"]


def test_checksum_mismatch_is_refused(tmp_path) -> None:
    for f in BUNDLED_DIR.iterdir():
        shutil.copy(f, tmp_path / f.name)
    raw = bytearray((tmp_path / WEIGHTS_FILE).read_bytes())
    raw[-10] ^= 0xFF
    (tmp_path / WEIGHTS_FILE).write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="checksum"):
        load_orientation_net(tmp_path)
    with pytest.raises(ModelError):
        load_orientation_net(tmp_path / "nothing-here")


def test_rotate_image_is_counter_clockwise() -> None:
    a = np.zeros((9, 9), dtype=np.float32)
    a[0, 4] = 1.0  # top centre
    r = rotate_image(a, 90.0, order=0)
    assert r[4, 0] == 1.0  # moved to the left: counter-clockwise as displayed
    m = rotate_image(a > 0, 90.0)
    assert m.dtype == bool and m[4, 0]


@pytest.mark.parametrize("rel", HELD_OUT)
@pytest.mark.parametrize("angle", [0.0, 37.0, 90.0, 180.0, 203.0, 270.0])
def test_round_trip_known_angles(rel: str, angle: float, estimator: RotationEstimator) -> None:
    scan = load_scan(_path(rel))
    est = estimator.estimate(rotate_image(scan.pixels[0], angle), scan.is_hu)
    assert 0.0 <= est < 360.0
    assert _err(est, angle) <= 12.0


def test_phe_sich_face_left_and_its_correction(estimator: RotationEstimator) -> None:
    scan = load_scan(_path(PHE))
    est = estimator.estimate(scan.pixels[0], scan.is_hu)
    assert _err(est, 90.0) <= 15.0
    upright = rotate_image(scan.pixels[0], -est)
    assert upright.shape == scan.pixels[0].shape
    assert _err(estimator.estimate(upright, scan.is_hu), 0.0) <= 10.0
    assert estimator.slice_angles(scan) == [90.0]  # a confident quarter turn is removed as a quarter turn
    assert estimator.slice_angles(scan, correct_rotation=False) == [0.0]


def test_scan_rotation_on_dicom_volume_and_single_jpeg(estimator: RotationEstimator) -> None:
    vol = load_scan(_path(GE))
    assert vol.is_hu and vol.pixels.shape[0] > 1
    est = estimator.estimate_scan(vol)
    assert est is not None and _err(est, 0.0) <= 15.0
    assert estimator.slice_angles(vol) == [0.0] * vol.n_slices  # an axial DICOM series: the header's angle
    turned = dataclasses.replace(vol, pixels=np.stack([rotate_image(s, 90.0) for s in vol.pixels]))
    est90 = estimator.estimate_scan(turned)
    assert est90 is not None and _err(est90, 90.0) <= 15.0
    assert estimator.slice_angles(dataclasses.replace(turned, source_format="nifti")) == [90.0] * vol.n_slices
    jpg = estimator.estimate_scan(load_scan(_path(HELD_OUT[0])))
    assert jpg is not None and _err(jpg, 0.0) <= 12.0


def test_blank_slice_gives_no_scan_estimate(estimator: RotationEstimator) -> None:
    blank = Scan(pixels=np.zeros((1, 64, 64), np.float32), is_hu=False, modality="CT", source_format="image",
                 source_path=data_root())
    assert estimator.estimate_scan(blank) is None
    assert estimator.slice_angles(blank) == [0.0]


@pytest.mark.parametrize(("angle", "confidence", "turn"), [
    (0.0, 1.0, 0.0), (12.0, 1.0, 0.0), (348.0, 1.0, 0.0),  # a head tilt is never corrected
    (73.0, 1.0, 0.0), (286.7, 1.0, 0.0),  # between quarters: an error of the estimate, not a turn
    (95.0, 1.0, 90.0), (181.0, 0.95, 180.0), (262.0, 0.99, 270.0),
    (90.0, 0.9, 0.0),  # not confident
])
def test_turn_rule(angle: float, confidence: float, turn: float) -> None:
    assert turn_rule(angle, confidence) == turn


def test_upright_by_the_header() -> None:
    """The real CQ500 slice whose pixels the network read as turned by 73 degrees: upright by its header."""
    scan = load_scan(_path("head-ct-dicom/cq500-ct-1_single-slice"))
    assert scan.orientation == "axial"
    assert header_angle(scan) == 0.0
    turned = [dataclasses.replace(r, image_orientation_patient=(0.0, 1.0, 0.0, -1.0, 0.0, 0.0)) for r in scan.references]
    assert header_angle(dataclasses.replace(scan, references=turned)) == 90.0  # rows run to the patient's back
    assert header_angle(dataclasses.replace(scan, source_format="image")) is None
