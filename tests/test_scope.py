"""Scope: only axial head CT (and the 8-bit brain-window JPEG/PNG exports) is analysed; the rest is refused with
the reason, checked on real files and on real CT headers edited in memory."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

import strokescan
from strokescan.errors import InputError, NoPixelDataError, OutOfScopeError
from strokescan.io import load_scan, require_in_scope, scan_from_datasets, scope_problem
from strokescan.io.scope import MAX_TILT_FROM_AXIAL_DEG, tilt_from_axial_deg

SAMPLES = Path(strokescan.__file__).resolve().parent / "samples"
CQ0 = "cq500-ct-0_thin_jpeg-lossless"
CQ1 = "cq500-ct-1_single-slice/CT000000.dcm"


def _refusal(scan) -> str:
    reason = scope_problem(scan)
    assert reason, f"{scan.source_path} should be out of scope"
    assert "\n" not in reason
    with pytest.raises(OutOfScopeError) as info:
        require_in_scope(scan)
    assert isinstance(info.value, InputError) and info.value.reason == reason
    assert str(info.value) == f"{scan.source_path}: out of scope: {reason}"
    return reason


def _in_scope(scan) -> None:
    assert scope_problem(scan) is None, (scan.source_path, scope_problem(scan))
    require_in_scope(scan)


# --------------------------------------------------------------------------- in scope


def test_head_ct_series_are_in_scope(head_ct):
    for path in (head_ct / CQ0, head_ct / CQ1, SAMPLES / "ge-hispeed-head-series.zip"):
        scan = load_scan(path)
        assert scan.modality == "CT" and scan.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
        assert "LOCALIZER" not in scan.image_type and "AXIAL" in scan.image_type
        _in_scope(scan)
    ge = load_scan(SAMPLES / "ge-hispeed-head-series.zip")
    assert ge.body_part == "HEAD"
    assert tilt_from_axial_deg(ge) == pytest.approx(18.5, abs=0.1)  # the gantry tilt: still axial


def test_sample_images_are_in_scope():
    images = sorted(p for p in SAMPLES.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    assert len(images) >= 2 and {p.suffix for p in images} >= {".png"}
    for path in images:
        scan = load_scan(path)
        assert scan.source_format == "image" and scan.references is None
        _in_scope(scan)


def test_ct_small_is_in_scope(pydicom_file):
    scan = load_scan(pydicom_file("CT_small.dcm"))
    # pydicom's CT_small.dcm has no BodyPartExamined: an absent body part is not a refusal.
    assert scan.modality == "CT" and scan.body_part is None and scan.orientation == "axial"
    _in_scope(scan)


def test_nifti_in_scope_only_in_hu(tmp_path):
    data = np.full((8, 8, 3), -1000, np.int16)
    data[2:6, 2:6] = 40
    data[0, 0, 0] = 1500
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "ct.nii.gz"))
    _in_scope(load_scan(tmp_path / "ct.nii.gz"))
    nib.save(nib.Nifti1Image(np.arange(192, dtype=np.int16).reshape(8, 8, 3), np.eye(4)), str(tmp_path / "m.nii.gz"))
    assert "not Hounsfield units" in _refusal(load_scan(tmp_path / "m.nii.gz"))


# --------------------------------------------------------------------------- refused: real files


def test_mr_is_refused(mr_dir, pydicom_file):
    for path in [*sorted(mr_dir.glob("*.dcm")), pydicom_file("MR_small.dcm")]:
        scan = load_scan(path)
        assert _refusal(scan).startswith("modality MR, not CT")


def test_mr_refusal_carries_no_patient_data(mr_dir):
    scan = load_scan(mr_dir / "1.dcm")
    with pytest.raises(OutOfScopeError) as info:
        require_in_scope(scan)
    ds = pydicom.dcmread(mr_dir / "1.dcm", stop_before_pixels=True)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "StudyInstanceUID", "SeriesInstanceUID",
                    "SOPInstanceUID", "InstitutionAddress", "StudyDate"):
        value = str(ds.get(keyword, "") or "")
        if len(value) >= 4:
            assert value not in str(info.value), keyword


def test_segmentation_object_is_refused(pydicom_file):
    scan = load_scan(pydicom_file("liver_1frame.dcm"))  # DICOM SEG: it has pixels (a mask), but is no image
    assert scan.modality == "SEG"
    assert _refusal(scan).startswith("SOP class Segmentation Storage")


def test_rt_dose_is_refused(pydicom_file):
    assert _refusal(load_scan(pydicom_file("rtdose.dcm"))).startswith("SOP class RT Dose Storage")


@pytest.mark.parametrize(
    "name, words",
    [("test-SR.dcm", "Comprehensive SR Storage"), ("rtstruct.dcm", "RT Structure Set Storage"),
     ("rtplan.dcm", "RT Plan Storage")],
)
def test_objects_without_pixels_fail_at_reading(pydicom_file, name, words):
    with pytest.raises(NoPixelDataError, match=words):
        load_scan(pydicom_file(name))


def test_other_modalities_are_refused(pydicom_file):
    for name, modality in (("JPEG2000.dcm", "NM"), ("SC_rgb_rle.dcm", "OT"), ("examples_rgb_color.dcm", "US")):
        assert _refusal(load_scan(pydicom_file(name))).startswith(f"modality {modality}, not CT")


# --------------------------------------------------------------------------- refused: real CT headers edited


@pytest.fixture()
def cq_slice(head_ct) -> pydicom.Dataset:
    """A real head CT slice (CQ500), read fresh for each test so that edits stay local."""
    return pydicom.dcmread(head_ct / CQ1)


def test_body_part_other_than_head_is_refused(cq_slice):
    for part in ("HEAD", "BRAIN", "SKULL", "HEAD NECK", "HEADNECK"):
        cq_slice.BodyPartExamined = part
        _in_scope(scan_from_datasets([cq_slice], source="edited"))
    for part in ("CHEST", "ABDOMEN", "NECK"):
        cq_slice.BodyPartExamined = part
        assert _refusal(scan_from_datasets([cq_slice], source="edited")) == f"body part examined is {part}, not the head"


def test_localizer_is_refused(cq_slice):
    cq_slice.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    scan = scan_from_datasets([cq_slice], source="localizer")
    assert scan.image_type == ("ORIGINAL", "PRIMARY", "LOCALIZER")
    assert "localizer" in _refusal(scan)
    assert json.loads(json.dumps(scan.summary()))["image_type"] == "ORIGINAL\\PRIMARY\\LOCALIZER"


def _tilted(ds: pydicom.Dataset, degrees: float) -> pydicom.Dataset:
    """The slice turned about the patient's x axis: ``degrees`` from axial (90 = coronal)."""
    a = math.radians(degrees)
    ds.ImageOrientationPatient = [1, 0, 0, 0, round(math.cos(a), 6), round(-math.sin(a), 6)]
    return ds


def test_sagittal_and_coronal_reformats_are_refused(cq_slice):
    cq_slice.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]  # sagittal: rows run anterior-posterior
    scan = scan_from_datasets([cq_slice], source="sagittal")
    assert scan.orientation == "sagittal" and tilt_from_axial_deg(scan) == pytest.approx(90)
    assert _refusal(scan).startswith("sagittal slices (90 degrees from axial")
    cq_slice.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    assert _refusal(scan_from_datasets([cq_slice], source="coronal")).startswith("coronal slices")


def test_tilt_threshold(cq_slice):
    _in_scope(scan_from_datasets([_tilted(cq_slice, 25)]))  # a steep gantry tilt is still an axial series
    scan = scan_from_datasets([_tilted(cq_slice, MAX_TILT_FROM_AXIAL_DEG + 5)])
    assert _refusal(scan).startswith("oblique slices (35 degrees from axial, over 30)")


def test_scope_facts_carry_no_identifiers(mr_dir):
    """The header facts scope reads are plain, non-identifying values, shown in the summary."""
    scan = load_scan(mr_dir / "1.dcm")
    summary = scan.summary()
    assert summary["sop_class"] == "MR Image Storage" and summary["body_part"] is None
    assert summary["image_type"] == "ORIGINAL\\PRIMARY\\M\\ND\\MOSAIC"
    assert scan.slice_normal is not None and abs(float(np.linalg.norm(scan.slice_normal)) - 1) < 1e-6
    assert "identifiers" not in summary and "references" not in summary


def test_real_localizers_are_refused(pydicom_file):
    """pydicom's DICOMDIR test set holds two CT localizers (one lateral, one frontal) among its CT images."""
    for name in ("dicomdirtests/98892001/CT2N/6293", "dicomdirtests/98892001/CT2N/6924"):
        scan = load_scan(pydicom_file(name))
        assert scan.modality == "CT" and "LOCALIZER" in scan.image_type
        assert _refusal(scan) == "a localizer (scout) image, not a slice of an axial series"
