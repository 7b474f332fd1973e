"""Readers (strokescan.io): real files, made-up files, and every refusal as a typed error."""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from strokescan.config import InputLimits
from strokescan.errors import (
    EmptyInputError,
    InconsistentSeriesError,
    InputTooLargeError,
    MultipleSeriesError,
    NoPixelDataError,
    PathNotFoundError,
    StrokescanError,
    UnreadableFileError,
    UnsupportedFormatError,
)
from strokescan.io import discover_inputs, load_scan, sniff_format

CQ0 = "cq500-ct-0_thin_jpeg-lossless"
GE = "ge-hispeed-dual_gantry-tilt"
CQ1 = "cq500-ct-1_single-slice/CT000000.dcm"


@pytest.fixture(scope="module")
def cq0_scan(head_ct):
    return load_scan(head_ct / CQ0)


@pytest.fixture(scope="module")
def ge_scan(head_ct):
    return load_scan(head_ct / GE)


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and "\r" not in text, text
    assert text
    return text


# --------------------------------------------------------------------------- images


def test_jpeg_grayscale(data_root):
    path = sorted((data_root / "ctich-kaggle").rglob("*.jpg"))[0]
    assert sniff_format(path) == "image"
    scan = load_scan(path)
    assert scan.source_format == "image" and not scan.is_hu and not scan.was_rgb
    assert scan.pixels.dtype == np.float32 and scan.pixels.ndim == 3 and scan.n_slices == 1
    assert 0 <= scan.pixels.min() and scan.pixels.max() <= 255 and scan.pixels.max() > 100
    assert scan.pixel_spacing_mm is None


def test_png_rgb(data_root):
    path = sorted((data_root / "aisd-mini" / "images").glob("*.png"))[0]
    with Image.open(path) as img:
        assert img.mode == "RGB"
    scan = load_scan(path)
    assert scan.was_rgb and not scan.is_hu and scan.pixels.shape[0] == 1
    assert 0 <= scan.pixels.min() and scan.pixels.max() <= 255


@pytest.mark.parametrize("mode", ["L", "RGB", "I;16"])
def test_made_images(tmp_path, mode):
    arr = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (16, 1))
    img = Image.fromarray(arr).convert(mode) if mode != "I;16" else Image.fromarray(arr.astype(np.uint16) * 200)
    for suffix in (".png", ".jpg") if mode != "I;16" else (".png",):
        path = tmp_path / f"x{suffix}"
        img.save(path)
        scan = load_scan(path)
        assert scan.pixels.shape == (1, 16, 64)
        assert 0 <= scan.pixels.min() and scan.pixels.max() <= 255
        assert scan.pixels[0, 0, -1] > scan.pixels[0, 0, 0] + 200  # gradient kept, left dark
        assert scan.was_rgb == (mode == "RGB")


# --------------------------------------------------------------------------- DICOM


def test_dicom_single_file(head_ct):
    scan = load_scan(head_ct / CQ1)
    assert scan.source_format == "dicom" and scan.modality == "CT" and scan.is_hu
    assert scan.pixels.shape == (1, 512, 512)
    assert scan.pixel_spacing_mm == pytest.approx((0.564453, 0.564453))
    assert scan.slice_thickness_mm == 5.0 and scan.gantry_tilt_deg == 15.0
    assert np.median(scan.pixels[0, 236:276, 236:276]) == pytest.approx(30, abs=25)


def test_series_sorted_by_position_not_name(head_ct, cq0_scan):
    scan = cq0_scan
    assert scan.pixels.shape == (48, 512, 512) and scan.is_hu and scan.orientation == "axial"
    steps = np.diff(scan.slice_positions_mm)
    assert np.all(steps > 0)
    expected = 3.125 * math.cos(math.radians(8.5))
    assert scan.slice_spacing_mm == pytest.approx(expected, abs=0.01)
    assert np.allclose(steps, expected, atol=0.02)
    assert scan.slice_thickness_mm == 0.625  # header thickness kept apart from the spacing
    names = [Path(s).name for s in scan.slice_sources]
    assert names != sorted(names)  # file names are not in anatomical order
    # The order matches ImagePositionPatient z (inferior first).
    z = [float(pydicom.dcmread(s, stop_before_pixels=True).ImagePositionPatient[2]) for s in scan.slice_sources]
    assert z == sorted(z)
    assert scan.gantry_tilt_deg == 8.5


def test_hounsfield_units(cq0_scan, ge_scan):
    for scan in (cq0_scan, ge_scan):
        mid = scan.pixels[scan.n_slices // 2]
        assert 20 <= float(np.median(mid[200:312, 200:312])) <= 45  # brain
        assert float(np.median(mid[5:30, 236:276])) == pytest.approx(-1000, abs=30)  # air in front of the head
    # RescaleIntercept -1024 was applied: raw stored values would be near 1000 in brain.
    assert cq0_scan.pixels.min() == -3024


def test_ge_without_preamble_uneven_steps(tmp_path, head_ct, ge_scan):
    first = head_ct / GE / "01.dcm"
    bare = tmp_path / "01"  # no preamble, no "DICM", no suffix: read with force
    bare.write_bytes(first.read_bytes()[132:])
    assert sniff_format(bare) == "dicom"
    np.testing.assert_array_equal(load_scan(bare).pixels, load_scan(first).pixels)
    scan = ge_scan
    assert scan.pixels.shape == (28, 512, 512) and scan.gantry_tilt_deg == 18.5
    steps = np.diff(scan.slice_positions_mm)
    assert np.all(steps > 0)
    assert steps.min() == pytest.approx(1.08, abs=0.05) and steps.max() == pytest.approx(6.99, abs=0.05)
    assert any("uneven" in n for n in scan.notes)
    single = load_scan(first)
    assert single.pixels.shape == (1, 512, 512) and single.is_hu


def test_zip_of_series(tmp_path, head_ct, ge_scan):
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted((head_ct / GE).iterdir()):
            zf.write(p, f"nested/{p.name}")  # README and LICENSE ride along and are skipped
    assert sniff_format(archive) == "zip"
    scan = load_scan(archive)
    assert scan.pixels.shape == ge_scan.pixels.shape
    np.testing.assert_array_equal(scan.pixels, ge_scan.pixels)
    assert all(s.startswith(f"{archive}!nested/") for s in scan.slice_sources)


def test_mr_transfer_syntaxes_decode_identically(mr_dir):
    syntaxes = {}
    ref = None
    for name in ("1", "4", "5", "7", "9"):
        path = mr_dir / f"{name}.dcm"
        syntaxes[name] = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        scan = load_scan(path)
        assert scan.modality == "MR" and not scan.is_hu and scan.pixels.shape == (1, 384, 384)
        if ref is None:
            ref = scan.pixels
        np.testing.assert_array_equal(scan.pixels, ref, err_msg=f"{name}.dcm ({syntaxes[name]})")
    assert syntaxes == {
        "1": "1.2.840.10008.1.2.1",
        "4": "1.2.840.10008.1.2.5",
        "5": "1.2.840.10008.1.2.4.70",
        "7": "1.2.840.10008.1.2.4.80",
        "9": "1.2.840.10008.1.2.4.90",
    }
    assert ref.max() > 1000


def test_copies_of_one_slice_are_refused(mr_dir):
    with pytest.raises(InconsistentSeriesError, match="5 files share one slice position") as info:
        load_scan(mr_dir)
    _one_line(info.value)
    scan = load_scan(mr_dir / "1.dcm")
    assert scan.n_slices == 1


@pytest.mark.parametrize(
    "name",
    ["CT_small.dcm", "JPEG2000.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
     "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "JPGExtended.dcm", "SC_rgb_rle.dcm", "rtdose_rle.dcm"],
)
def test_pydicom_test_files(pydicom_file, name):
    scan = load_scan(pydicom_file(name))
    assert scan.pixels.ndim == 3 and scan.pixels.dtype == np.float32 and np.isfinite(scan.pixels).all()
    json.dumps(scan.summary())
    if name.startswith("MR_small"):  # every syntax of MR_small decodes to the same pixels
        ref = load_scan(pydicom_file("MR_small.dcm")).pixels
        np.testing.assert_array_equal(scan.pixels, ref)
    if name == "CT_small.dcm":
        assert scan.is_hu and scan.modality == "CT" and scan.pixels.min() < -500


def test_monochrome1_is_inverted(tmp_path, pydicom_file):
    src = pydicom_file("MR_small.dcm")
    ds = pydicom.dcmread(src)
    assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.Modality != "CT"
    ds.PhotometricInterpretation = "MONOCHROME1"
    path = tmp_path / "mono1.dcm"
    ds.save_as(path)
    m2 = load_scan(src).pixels[0]
    m1 = load_scan(path).pixels[0]
    total = m1 + m2
    assert np.allclose(total, total.flat[0])  # an exact inversion
    assert np.argmax(m1) == np.argmin(m2) or m1.flat[np.argmin(m2)] == m1.max()
    assert not np.array_equal(m1, m2)


def _write_series(folder: Path, src: Path, n: int, series_uid: str, rows: int | None = None, dz: float = 2.0):
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        ds = pydicom.dcmread(src)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = f"{series_uid}.{k + 1}"
        ds.ImagePositionPatient = [0.0, 0.0, float(k) * dz]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.InstanceNumber = n - k  # reversed: position, not instance number, must decide
        if rows is not None and k == n - 1:
            ds.Rows = rows
            ds.PixelData = ds.PixelData[: rows * ds.Columns * 2]
        ds.save_as(folder / f"{series_uid}_{k:02d}.dcm")


def test_several_series(tmp_path, pydicom_file):
    src = pydicom_file("CT_small.dcm")
    _write_series(tmp_path / "a", src, 3, "1.2.3.4.1")
    _write_series(tmp_path / "b", src, 4, "1.2.3.4.2")
    with pytest.raises(MultipleSeriesError) as info:
        load_scan(tmp_path)
    assert len(info.value.series) == 2 and {s["n_files"] for s in info.value.series} == {3, 4}
    _one_line(info.value)
    assert "#0" in str(info.value) and "#1" in str(info.value)
    by_index = load_scan(tmp_path, series="1")
    assert by_index.n_slices == 4 and by_index.slice_spacing_mm == pytest.approx(2.0)
    assert load_scan(tmp_path, series="1.2.3.4.1").n_slices == 3
    with pytest.raises(MultipleSeriesError):
        load_scan(tmp_path, series="7")


def test_mixed_sizes(tmp_path, pydicom_file):
    _write_series(tmp_path / "s", pydicom_file("CT_small.dcm"), 3, "1.2.3.5", rows=64)
    with pytest.raises(InconsistentSeriesError, match="mixes slice sizes") as info:
        load_scan(tmp_path / "s")
    _one_line(info.value)


# --------------------------------------------------------------------------- NIfTI


def _nifti(tmp_path: Path, name: str, affine: np.ndarray, hu: bool = True) -> tuple[Path, np.ndarray]:
    shape = (6, 5, 4)  # x, y, z in the file's own axes
    data = np.zeros(shape, np.int16) - 1000 if hu else np.zeros(shape, np.int16)
    data[...] += np.arange(np.prod(shape), dtype=np.int16).reshape(shape)
    if hu:
        data[0, 0, 0] = 1500
    img = nib.Nifti1Image(data, affine)
    path = tmp_path / name
    nib.save(img, str(path))
    return path, data


def _marker_world(affine, data, value):
    idx = np.argwhere(data == value)[0]
    return affine[:3, :3] @ idx + affine[:3, 3]


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("kind", ["ras", "lps"])
def test_nifti_orientation(tmp_path, suffix, kind):
    zooms = np.array([0.5, 0.8, 3.0])
    flips = np.array([1, 1, 1]) if kind == "ras" else np.array([-1, -1, 1])
    affine = np.diag(list(zooms * flips) + [1.0])
    path, data = _nifti(tmp_path, f"v_{kind}{suffix}", affine)
    assert sniff_format(path) == "nifti"
    scan = load_scan(path)
    assert scan.source_format == "nifti" and scan.is_hu and scan.orientation == "axial"
    assert scan.pixels.shape == (4, 5, 6)  # (slices=z, rows=y, cols=x)
    assert scan.pixel_spacing_mm == pytest.approx((0.8, 0.5)) and scan.slice_spacing_mm == pytest.approx(3.0)
    # World (RAS) coordinates of what lands at each end of each axis.
    world = {}
    for name, index in {"row0": (1, 0, 2), "rowN": (1, -1, 2), "col0": (1, 2, 0), "colN": (1, 2, -1),
                        "sl0": (0, 2, 2), "slN": (-1, 2, 2)}.items():
        value = scan.pixels[index]
        world[name] = _marker_world(affine, data, value)
    assert world["row0"][1] > world["rowN"][1]  # row 0 anterior (+y in RAS)
    assert world["col0"][0] > world["colN"][0]  # column 0 patient right (+x in RAS)
    assert world["sl0"][2] < world["slN"][2]  # slices inferior -> superior


def test_nifti_not_hu(tmp_path):
    path, _ = _nifti(tmp_path, "mask.nii.gz", np.eye(4), hu=False)
    scan = load_scan(path)
    assert not scan.is_hu


# --------------------------------------------------------------------------- refusals


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, data_root):
    """name -> (path, expected error type); the CLI test module reuses the same cases."""
    return make_bad_inputs(tmp_path_factory.mktemp("bad"), data_root)


def make_bad_inputs(tmp: Path, data_root: Path) -> dict[str, tuple[Path, type]]:
    import pydicom.data

    test_files = Path(pydicom.data.__file__).parent / "test_files"
    cases: dict[str, tuple[Path, type]] = {}
    cases["missing"] = (tmp / "does-not-exist.dcm", PathNotFoundError)
    (tmp / "empty.dcm").write_bytes(b"")
    cases["empty_file"] = (tmp / "empty.dcm", EmptyInputError)
    (tmp / "empty_dir").mkdir()
    cases["empty_folder"] = (tmp / "empty_dir", EmptyInputError)
    (tmp / "notes.txt").write_text("not an image\nat all\n")
    cases["text"] = (tmp / "notes.txt", UnsupportedFormatError)
    rng = np.random.default_rng(0)
    (tmp / "random.bin").write_bytes(rng.bytes(4000))
    cases["random_bytes"] = (tmp / "random.bin", UnsupportedFormatError)
    jpg = sorted((data_root / "ctich-kaggle").rglob("*.jpg"))[0]
    png = sorted((data_root / "aisd-mini" / "images").glob("*.png"))[0]
    dcm = data_root / "head-ct-dicom" / CQ0 / "CT000001.dcm"
    ge = data_root / "head-ct-dicom" / GE / "01.dcm"
    for label, src in {"jpeg": jpg, "png": png, "dicom": dcm, "dicom_ge": ge}.items():
        data = src.read_bytes()
        target = tmp / f"half_{label}{src.suffix}"
        target.write_bytes(data[: len(data) // 2])
        cases[f"truncated_{label}"] = (target, UnreadableFileError)
    (tmp / "corrupt.zip").write_bytes(b"PK\x03\x04" + rng.bytes(3000))
    cases["corrupt_zip"] = (tmp / "corrupt.zip", UnreadableFileError)
    (tmp / "random.nii.gz").write_bytes(rng.bytes(3000))
    cases["corrupt_nifti"] = (tmp / "random.nii.gz", UnreadableFileError)
    ds = pydicom.dcmread(test_files / "CT_small.dcm")
    del ds.PixelData
    ds.save_as(tmp / "no_pixels.dcm")
    cases["no_pixel_data"] = (tmp / "no_pixels.dcm", NoPixelDataError)
    if (test_files / "test-SR.dcm").is_file():
        cases["structured_report"] = (test_files / "test-SR.dcm", NoPixelDataError)
    mixed = tmp / "mixed"
    _write_series(mixed, test_files / "CT_small.dcm", 3, "1.2.3.9", rows=64)
    cases["mixed_sizes"] = (mixed, InconsistentSeriesError)
    return cases


def test_refusals(bad_inputs):
    assert len(bad_inputs) >= 14
    for name, (path, expected) in bad_inputs.items():
        with pytest.raises(expected) as info:
            load_scan(path)
        assert type(info.value) is expected, name
        text = _one_line(info.value)
        assert str(path.name) in text or name == "mixed_sizes", (name, text)


def test_truncated_zip_member_and_archive(tmp_path, head_ct):
    archive = tmp_path / "s.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted((head_ct / GE).glob("0[1-3].dcm")):
            zf.write(p, p.name)
    data = archive.read_bytes()
    (tmp_path / "half.zip").write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableFileError):
        load_scan(tmp_path / "half.zip")
    broken = bytearray(data)
    broken[200:260] = bytes(60)  # damage the first member's compressed stream
    (tmp_path / "broken.zip").write_bytes(bytes(broken))
    with pytest.raises(UnreadableFileError) as info:
        load_scan(tmp_path / "broken.zip")
    _one_line(info.value)
    with zipfile.ZipFile(tmp_path / "empty.zip", "w"):
        pass
    with pytest.raises((EmptyInputError, UnreadableFileError)):
        load_scan(tmp_path / "empty.zip")


def test_limits(tmp_path, head_ct, data_root):
    small_file = InputLimits(max_file_bytes=1000)
    with pytest.raises(InputTooLargeError) as info:
        load_scan(head_ct / CQ1, limits=small_file)
    _one_line(info.value)
    few_pixels = InputLimits(max_pixels_per_slice=100 * 100)
    png = sorted((data_root / "aisd-mini" / "images").glob("*.png"))[0]
    for path in (png, head_ct / CQ1, head_ct / GE):
        with pytest.raises(InputTooLargeError):
            load_scan(path, limits=few_pixels)
    with pytest.raises(InputTooLargeError):
        load_scan(head_ct / GE, limits=InputLimits(max_voxels=512 * 512 * 10))
    path, _ = _nifti(tmp_path, "v.nii", np.eye(4))
    with pytest.raises(InputTooLargeError):
        load_scan(path, limits=InputLimits(max_voxels=50))
    archive = tmp_path / "s.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted((head_ct / GE).glob("0[1-3].dcm")):
            zf.write(p, p.name)
    with pytest.raises(InputTooLargeError):
        load_scan(archive, limits=InputLimits(max_archive_members=2))
    with pytest.raises(InputTooLargeError):
        load_scan(archive, limits=InputLimits(max_archive_bytes=100_000))


def test_all_errors_are_strokescan_errors(bad_inputs):
    for path, expected in bad_inputs.values():
        assert issubclass(expected, StrokescanError)


# --------------------------------------------------------------------------- discovery


def test_discover_images_folder(data_root):
    folder = data_root / "aisd-mini" / "images"
    found = discover_inputs(folder)
    assert len(found) == len(list(folder.glob("*.png"))) and all(p.suffix == ".png" for p in found)


def test_discover_dicom_folder(head_ct):
    assert discover_inputs(head_ct / GE) == [head_ct / GE]  # README/LICENSE beside the series are ignored
    assert discover_inputs(head_ct / CQ1) == [head_ct / CQ1]


def test_discover_nested(tmp_path, head_ct, data_root):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "c").mkdir()
    (tmp_path / "empty").mkdir()
    src = sorted((data_root / "ctich-kaggle").rglob("*.jpg"))[:2]
    for p in src:
        (tmp_path / "a" / p.name).write_bytes(p.read_bytes())
    for p in sorted((head_ct / GE).glob("0[1-3].dcm")):
        (tmp_path / "a" / "b" / p.name).write_bytes(p.read_bytes())
    (tmp_path / "c" / "readme.txt").write_text("x")
    _nifti(tmp_path / "c", "v.nii.gz", np.eye(4))
    found = discover_inputs(tmp_path)
    assert set(found) == {tmp_path / "a" / p.name for p in src} | {tmp_path / "a" / "b", tmp_path / "c" / "v.nii.gz"}
    for p in found:
        load_scan(p)
    with pytest.raises(EmptyInputError):
        discover_inputs(tmp_path / "empty")
    with pytest.raises(PathNotFoundError):
        discover_inputs(tmp_path / "nope")


# --------------------------------------------------------------------------- privacy


def test_identifiers_hidden(mr_dir):
    scan = load_scan(mr_dir / "1.dcm")
    assert scan.identifiers.patient_id and scan.identifiers.patient_name
    for value in scan.identifiers.as_dict().values():
        if value:
            assert value not in json.dumps(scan.summary())
            assert value not in repr(scan.identifiers)
    shown = json.dumps(scan.summary(include_identifiers=True))
    assert scan.identifiers.patient_id in shown


# --------------------------------------------------------------------------- DICOM identity, in-memory datasets

GE_SAMPLE = Path(__file__).resolve().parents[1] / "src" / "strokescan" / "samples" / "ge-hispeed-head-series.zip"


def _zip_datasets(archive: Path) -> list[pydicom.Dataset]:
    """The archive's DICOM members parsed in memory, as a DICOM listener would hand them over."""
    import io

    with zipfile.ZipFile(archive) as zf:
        return [pydicom.dcmread(io.BytesIO(zf.read(m)), force=True) for m in zf.infolist() if m.filename.endswith(".dcm")]


@pytest.fixture(scope="module")
def ge_sample() -> Path:
    if not GE_SAMPLE.is_file():
        pytest.skip("the bundled GE sample series is missing")
    return GE_SAMPLE


def test_references_from_zip_and_datasets_agree(ge_sample):
    from strokescan.io import SliceIdentity, scan_from_datasets

    from_zip = load_scan(ge_sample)
    datasets = _zip_datasets(ge_sample)
    shuffled = datasets[::-1]  # arrival order must not matter: the same sorting as files
    from_memory = scan_from_datasets(shuffled, source="listener")
    assert from_zip.n_slices == from_memory.n_slices == 28
    np.testing.assert_array_equal(from_zip.pixels, from_memory.pixels)
    assert from_zip.references == from_memory.references
    np.testing.assert_array_equal(from_zip.slice_positions_mm, from_memory.slice_positions_mm)
    assert from_memory.slice_sources[0].startswith("listener[") and from_memory.source_path == Path("listener")
    assert load_scan(datasets).references == from_zip.references  # load_scan takes a list of datasets too

    refs = from_zip.references
    assert len(refs) == from_zip.n_slices and all(isinstance(r, SliceIdentity) for r in refs)
    assert len({r.sop_instance_uid for r in refs}) == 28
    assert len({r.series_instance_uid for r in refs}) == 1 and len({r.study_instance_uid for r in refs}) == 1
    assert all(r.frame_of_reference_uid and r.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2" for r in refs)
    assert all(r.frame_number is None and len(r.image_orientation_patient) == 6 for r in refs)
    # Each reference is the header of the slice at its index (the scan's order, inferior first).
    by_uid = {str(ds.SOPInstanceUID): ds for ds in datasets}
    for ref, z in zip(refs, from_zip.slice_positions_mm):
        ds = by_uid[ref.sop_instance_uid]
        assert ref.image_position_patient == pytest.approx([float(v) for v in ds.ImagePositionPatient])
        assert float(np.dot(ref.image_position_patient, from_zip.slice_normal)) == pytest.approx(z)
        assert ref.series_instance_uid == str(ds.SeriesInstanceUID)
        assert ref.study_instance_uid == str(ds.StudyInstanceUID)
        assert ref.frame_of_reference_uid == str(ds.FrameOfReferenceUID)


def test_references_stay_out_of_summaries_and_reprs(ge_sample):
    scan = load_scan(ge_sample)
    uids = {v for r in scan.references for v in (r.sop_instance_uid, r.series_instance_uid, r.study_instance_uid,
                                                  r.frame_of_reference_uid) if v}
    assert len(uids) == 28 + 3
    plain = json.dumps(scan.summary()) + repr(scan) + repr(scan.references) + str(scan.references[0])
    assert not [u for u in uids if u in plain]
    shown = scan.summary(include_identifiers=True)
    assert len(shown["references"]) == 28
    assert shown["references"][0]["sop_instance_uid"] == scan.references[0].sop_instance_uid
    json.dumps(shown)


def test_references_none_for_other_formats(data_root, tmp_path):
    jpg = sorted((data_root / "ctich-kaggle").rglob("*.jpg"))[0]
    path, _ = _nifti(tmp_path, "v.nii.gz", np.eye(4))
    for scan in (load_scan(jpg), load_scan(path)):
        assert scan.references is None and scan.sop_class_uid is None
        assert "references" not in scan.summary(include_identifiers=True)


def test_datasets_get_the_same_refusals(pydicom_file, head_ct):
    from strokescan.io import scan_from_datasets

    ct = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    with pytest.raises(EmptyInputError):
        scan_from_datasets([])
    with pytest.raises(UnsupportedFormatError, match=r"<datasets>\[1\]: not a pydicom Dataset"):
        scan_from_datasets([ct, b"bytes"])
    sr = pydicom.dcmread(pydicom_file("test-SR.dcm"))
    with pytest.raises(NoPixelDataError, match="Comprehensive SR Storage"):
        scan_from_datasets([sr])
    small = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    small.Rows = 64
    small.PixelData = small.PixelData[: 64 * small.Columns * 2]
    small.ImagePositionPatient = [0, 0, 10]
    with pytest.raises(InconsistentSeriesError, match="mixes slice sizes"):
        scan_from_datasets([ct, small])
    copy = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    with pytest.raises(InconsistentSeriesError, match="2 files share one slice position"):
        scan_from_datasets([ct, copy])
    other = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    other.SeriesInstanceUID = "1.2.3.4.5"
    with pytest.raises(MultipleSeriesError, match="2 series found"):
        scan_from_datasets([ct, other])
    assert scan_from_datasets([ct, other], series="1.2.3.4.5").n_slices == 1
    with pytest.raises(InputTooLargeError):
        scan_from_datasets([ct], limits=InputLimits(max_pixels_per_slice=100))
    # One file and its dataset give the same scan.
    cq1 = head_ct / CQ1
    np.testing.assert_array_equal(load_scan(cq1).pixels, load_scan(pydicom.dcmread(cq1)).pixels)


def test_dataset_without_transfer_syntax(pydicom_file):
    from strokescan.io import scan_from_datasets

    ref = load_scan(pydicom_file("CT_small.dcm"))
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    del ds.file_meta.TransferSyntaxUID  # what a dataset built in memory or a headerless file lacks
    scan = scan_from_datasets(ds)
    np.testing.assert_array_equal(scan.pixels, ref.pixels)
    assert scan.is_hu


def _enhanced_ct(src: Path, z: list[float], intercepts: list[float]) -> pydicom.Dataset:
    """A multi-frame 'enhanced' CT built from a single-frame one: geometry and rescale per frame."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = pydicom.dcmread(src)
    frames = len(z)
    ds.PixelData = ds.PixelData * frames
    ds.NumberOfFrames = frames
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT Image Storage
    orientation = [float(v) for v in ds.ImageOrientationPatient]
    spacing = [float(v) for v in ds.PixelSpacing]
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
                    "RescaleSlope", "RescaleIntercept", "RescaleType"):
        if keyword in ds:
            delattr(ds, keyword)
    shared = Dataset()
    shared.PlaneOrientationSequence = Sequence([Dataset()])
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = orientation
    shared.PixelMeasuresSequence = Sequence([Dataset()])
    shared.PixelMeasuresSequence[0].PixelSpacing = spacing
    shared.PixelMeasuresSequence[0].SliceThickness = 2.0
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for zk, bk in zip(z, intercepts):
        item = Dataset()
        item.PlanePositionSequence = Sequence([Dataset()])
        item.PlanePositionSequence[0].ImagePositionPatient = [0.0, 0.0, zk]
        item.PixelValueTransformationSequence = Sequence([Dataset()])
        item.PixelValueTransformationSequence[0].RescaleSlope = 1
        item.PixelValueTransformationSequence[0].RescaleIntercept = bk
        item.PixelValueTransformationSequence[0].RescaleType = "HU"
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    return ds


def test_enhanced_multiframe_geometry_and_rescale(tmp_path, pydicom_file):
    src = pydicom_file("CT_small.dcm")
    stored = pydicom.dcmread(src).pixel_array.astype(np.float32)
    ds = _enhanced_ct(src, z=[20.0, 10.0, 0.0], intercepts=[-1000.0, -1010.0, -1020.0])
    path = tmp_path / "enhanced.dcm"
    ds.save_as(path)
    scan = load_scan(path)
    assert scan.pixels.shape == (3, 128, 128) and scan.is_hu and scan.orientation == "axial"
    # Frames are sorted inferior first (z 0, 10, 20 = frames 3, 2, 1) and rescaled with their own intercept.
    assert [r.frame_number for r in scan.references] == [3, 2, 1]
    assert scan.slice_sources == [f"{path}#2", f"{path}#1", f"{path}#0"]
    np.testing.assert_array_equal(scan.pixels[0], stored - 1020)
    np.testing.assert_array_equal(scan.pixels[2], stored - 1000)
    np.testing.assert_allclose(scan.slice_positions_mm, [0.0, 10.0, 20.0])
    assert scan.slice_spacing_mm == pytest.approx(10.0) and scan.slice_thickness_mm == 2.0
    assert scan.pixel_spacing_mm == pytest.approx((0.661468, 0.661468))
    assert [r.image_position_patient[2] for r in scan.references] == [0.0, 10.0, 20.0]
    assert all(r.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2.1" for r in scan.references)
    same = _enhanced_ct(src, z=[5.0, 5.0], intercepts=[-1024.0, -1024.0])  # two phases of one slice
    with pytest.raises(InconsistentSeriesError, match="2 frames share one slice position"):
        load_scan(same)


def test_colour_multiframe_becomes_grey(pydicom_file):
    scan = load_scan(pydicom_file("SC_rgb_rle_2frame.dcm"))
    assert scan.pixels.shape == (2, 100, 100) and scan.was_rgb and not scan.is_hu
    assert [r.frame_number for r in scan.references] == [1, 2]
    rgb = pydicom.dcmread(pydicom_file("SC_rgb_rle_2frame.dcm")).pixel_array.astype(np.float32)
    luma = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    np.testing.assert_allclose(scan.pixels, luma, atol=1e-3)
    assert any("colour image" in n for n in scan.notes)
    palette = load_scan(pydicom_file("examples_palette.dcm"))
    assert palette.was_rgb and palette.pixels.shape == (1, 350, 800) and palette.pixels.max() > 255
    ybr = load_scan(pydicom_file("examples_ybr_color.dcm"))  # 30 frames, YBR_FULL_422
    assert ybr.pixels.shape == (30, 240, 320) and ybr.was_rgb
