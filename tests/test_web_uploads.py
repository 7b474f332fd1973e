"""The upload-safety layer of the web app: what store_upload refuses (with which status) and what it keeps."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest

from strokescan.app.web.uploads import StoredUpload, UploadLimits, UploadRejected, store_upload
from strokescan.config import SAMPLES_DIR
from strokescan.errors import InputError
from strokescan.io import load_scan

PNG = SAMPLES_DIR / "phe-sich_0021_13.png"
GE_ZIP = SAMPLES_DIR / "ge-hispeed-head-series.zip"


@pytest.fixture(scope="session")
def ge_dir(head_ct: Path) -> Path:
    """28 GE HiSpeed slices without the DICOM preamble."""
    return head_ct / "ge-hispeed-dual_gantry-tilt"


@pytest.fixture(scope="session")
def dicom_bytes(ge_dir: Path) -> bytes:
    return (ge_dir / "01.dcm").read_bytes()


@pytest.fixture(scope="session")
def cq500_bytes(head_ct: Path) -> bytes:
    """A CT slice with the 128-byte preamble and 'DICM'."""
    return (head_ct / "cq500-ct-1_single-slice" / "CT000000.dcm").read_bytes()


def _parts(*named: tuple[str, bytes]) -> list[tuple[str, io.BytesIO]]:
    return [(name, io.BytesIO(data)) for name, data in named]


def _zip(*members: tuple[str | zipfile.ZipInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buffer.getvalue()


def _jpeg() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    with Image.open(PNG) as image:
        image.convert("L").save(buffer, format="JPEG")
    return buffer.getvalue()


def _refused(parts, dest: Path, status: int, name: str, limits: UploadLimits = UploadLimits()) -> UploadRejected:
    """store_upload refuses with ``status``, a one-line message naming ``name`` (no server path), and leaves nothing."""
    with pytest.raises(UploadRejected) as caught:
        store_upload(parts, dest, limits)
    message = str(caught.value)
    assert caught.value.status == status, message
    assert name in message
    assert "\n" not in message and str(dest) not in message
    assert isinstance(caught.value, InputError)
    assert list(dest.iterdir()) == []
    return caught.value


# --- refusals -------------------------------------------------------------------------------------------------


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    error = _refused(_parts(("scan.dcm", b"")), tmp_path / "up", 400, "scan.dcm")
    assert "the file is empty" in str(error)


@pytest.mark.parametrize("parts", [[], [(".DS_Store", b"junk")]], ids=["nothing", "only-junk"])
def test_an_upload_without_files_is_refused(tmp_path: Path, parts: list[tuple[str, bytes]]) -> None:
    _refused(_parts(*parts), tmp_path / "up", 400, "no files")


@pytest.mark.parametrize(
    "name",
    ["../../etc/passwd", "series/../../x.dcm", "..\\..\\x.dcm", "\uff0e\uff0e/x.dcm", "/etc/passwd", "\\\\host\\share\\x.dcm",
     "C:\\Windows\\x.dcm", "C:x.dcm"],
)
def test_traversal_or_absolute_client_names_are_refused(tmp_path: Path, name: str, dicom_bytes: bytes) -> None:
    _refused(_parts((name, dicom_bytes)), tmp_path / "up", 400, name)


def test_an_empty_client_name_is_refused(tmp_path: Path, dicom_bytes: bytes) -> None:
    _refused(_parts(("", dicom_bytes)), tmp_path / "up", 400, "no name")


def test_traversal_inside_a_zip_is_refused(tmp_path: Path, dicom_bytes: bytes) -> None:
    data = _zip(("ok.dcm", dicom_bytes), ("../evil.dcm", dicom_bytes))
    _refused(_parts(("series.zip", data)), tmp_path / "up", 400, "series.zip!../evil.dcm")
    assert not (tmp_path / "evil.dcm").exists()


def test_an_absolute_zip_member_is_refused(tmp_path: Path, dicom_bytes: bytes) -> None:
    data = _zip(("/tmp/evil.dcm", dicom_bytes))
    assert zipfile.ZipFile(io.BytesIO(data)).namelist() == ["/tmp/evil.dcm"]
    _refused(_parts(("series.zip", data)), tmp_path / "up", 400, "/tmp/evil.dcm")


def test_a_symlink_zip_member_is_refused(tmp_path: Path) -> None:
    link = zipfile.ZipInfo("link.dcm")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    error = _refused(_parts(("series.zip", _zip((link, b"/etc/passwd")))), tmp_path / "up", 400, "series.zip!link.dcm")
    assert "symbolic link" in str(error)


def test_an_encrypted_zip_member_is_refused(tmp_path: Path, dicom_bytes: bytes) -> None:
    data = bytearray(_zip(("secret.dcm", dicom_bytes)))
    for signature, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # set the 'encrypted' flag bit
        data[data.index(signature) + flags_at] |= 0x1
    error = _refused(_parts(("series.zip", bytes(data))), tmp_path / "up", 400, "series.zip!secret.dcm")
    assert "encrypted" in str(error)


def test_a_zip_bomb_is_refused_by_its_ratio(tmp_path: Path) -> None:
    data = _zip(("zeros.dcm", bytes(50 << 20)))
    assert len(data) < 1 << 20
    error = _refused(_parts(("bomb.zip", data)), tmp_path / "up", 413, "bomb.zip!zeros.dcm")
    assert "zip bomb" in str(error)


def test_a_zip_over_the_unpacked_limit_is_refused(tmp_path: Path) -> None:
    with GE_ZIP.open("rb") as fh:
        _refused([("series.zip", fh)], tmp_path / "up", 413, "series.zip", UploadLimits(max_unpacked_bytes=1 << 20))


def test_an_upload_over_the_file_count_is_refused(tmp_path: Path) -> None:
    png = PNG.read_bytes()
    parts = _parts(("a.png", png), ("b.png", png), ("c.png", png))
    _refused(parts, tmp_path / "up", 413, "c.png", UploadLimits(max_files=2))


def test_a_zip_over_the_file_count_is_refused(tmp_path: Path) -> None:
    with GE_ZIP.open("rb") as fh:
        _refused([("series.zip", fh)], tmp_path / "up", 413, "series.zip", UploadLimits(max_files=10))


def test_an_upload_over_the_byte_limit_is_refused(tmp_path: Path) -> None:
    png = PNG.read_bytes()
    limits = UploadLimits(max_total_bytes=len(png) + 100)
    _refused(_parts(("a.png", png), ("b.png", png)), tmp_path / "up", 413, "b.png", limits)


@pytest.mark.parametrize(
    ("name", "label"),
    [("scan.dcm", "DICOM"), ("slice.png", "PNG"), ("photo.jpg", "JPEG"), ("brain.nii", "NIfTI"), ("brain.nii.gz", "NIfTI")],
)
def test_a_text_file_named_like_a_scan_is_refused(tmp_path: Path, name: str, label: str) -> None:
    error = _refused(_parts((name, b"Patient John Doe, no scan here\n" * 20)), tmp_path / "up", 415, name)
    assert f"not a {label} file (content does not match its name)" in str(error)
    assert "John" not in str(error)


def test_a_jpeg_named_dcm_is_refused(tmp_path: Path) -> None:
    error = _refused(_parts(("IM0001.dcm", _jpeg())), tmp_path / "up", 415, "IM0001.dcm")
    assert "not a DICOM file" in str(error)


def test_a_file_of_no_known_kind_is_refused(tmp_path: Path) -> None:
    _refused(_parts(("notes.txt", b"hello\n")), tmp_path / "up", 415, "notes.txt")


def test_a_zip_member_of_no_known_kind_is_ignored_beside_dicom_files(tmp_path: Path, dicom_bytes: bytes) -> None:
    data = _zip(("01.dcm", dicom_bytes), ("series/readme.txt", b"hello\n"), ("viewer.exe", b"MZ" + bytes(300)))
    stored = store_upload(_parts(("series.zip", data)), tmp_path / "up")
    assert stored.kind == "dicom" and stored.n_files == 1
    assert stored.ignored == ["series.zip!series/readme.txt", "series.zip!viewer.exe"]
    assert [p.name for p in stored.root.rglob("*") if p.is_file()] == ["0002.dcm"]  # the others are gone


def test_a_file_of_no_known_kind_beside_an_image_is_refused(tmp_path: Path) -> None:
    _refused(_parts(("a.png", PNG.read_bytes()), ("notes.txt", b"hello\n")), tmp_path / "up", 415, "notes.txt")


def test_stored_files_have_neutral_names_and_are_private(tmp_path: Path, dicom_bytes: bytes) -> None:
    dest = tmp_path / "up"
    stored = store_upload(_parts(("Doe_Jane_19800707.png", PNG.read_bytes())), dest)
    assert stored.analyse_path.name == "0001.png" and "Doe" not in str(stored.analyse_path)
    data = _zip(("Doe_Jane/01.dcm", dicom_bytes), ("Doe_Jane/02.dcm", dicom_bytes))
    series = store_upload(_parts(("Doe_Jane.zip", data)), dest)
    assert sorted(p.name for p in series.root.rglob("*")) == ["0002.dcm", "0003.dcm"]
    for path in [dest, stored.root, series.root, *series.root.rglob("*"), stored.analyse_path]:
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path


def test_mixed_kinds_are_refused(tmp_path: Path, dicom_bytes: bytes) -> None:
    error = _refused(_parts(("01.dcm", dicom_bytes), ("b.png", PNG.read_bytes())), tmp_path / "up", 400, "b.png")
    assert "one kind at a time" in str(error)


def test_two_files_with_one_name_are_refused(tmp_path: Path) -> None:
    png = PNG.read_bytes()
    _refused(_parts(("dir/a.png", png), ("dir\\a.png", png)), tmp_path / "up", 400, "dir/a.png")


def test_a_corrupt_zip_is_refused(tmp_path: Path) -> None:
    _refused(_parts(("series.zip", b"PK\x03\x04" + bytes(200))), tmp_path / "up", 400, "series.zip")


def test_a_refusal_keeps_earlier_uploads(tmp_path: Path) -> None:
    dest = tmp_path / "up"
    kept = store_upload(_parts(("a.png", PNG.read_bytes())), dest)
    with pytest.raises(UploadRejected):
        store_upload(_parts(("b.png", b"")), dest)
    assert list(dest.iterdir()) == [kept.root] and kept.analyse_path.is_file()


# --- acceptance -----------------------------------------------------------------------------------------------


def test_a_single_png_is_kept_as_the_file_to_analyse(tmp_path: Path) -> None:
    dest = tmp_path / "up"
    stored = store_upload(_parts(("My Slice (1).png", PNG.read_bytes())), dest, keep_names=True)
    assert isinstance(stored, StoredUpload)
    assert stored.kind == "image" and stored.n_files == 1 and stored.n_bytes == PNG.stat().st_size
    assert stored.root.parent == dest and stored.analyse_path.parent == stored.root
    assert stored.analyse_path.name == "My_Slice__1_.png"
    assert load_scan(stored.analyse_path).source_format == "image"


def test_the_ge_zip_is_unpacked_into_a_folder_load_scan_reads(tmp_path: Path) -> None:
    with GE_ZIP.open("rb") as fh:
        stored = store_upload([("ge-hispeed-head-series.zip", fh)], tmp_path / "up", keep_names=True)
    assert stored.kind == "dicom" and stored.n_files == 28
    assert stored.analyse_path == stored.root and stored.root.is_dir()
    assert sorted(p.name for p in stored.root.iterdir()) == [f"{k:02d}.dcm" for k in range(1, 29)]
    assert stored.n_bytes == sum(i.file_size for i in zipfile.ZipFile(GE_ZIP).infolist())
    assert load_scan(stored.analyse_path).pixels.shape[0] == 28


def test_a_folder_upload_keeps_its_relative_names(tmp_path: Path, ge_dir: Path) -> None:
    files = sorted(ge_dir.glob("*.dcm"))[:4]
    parts = [(f"series/{p.name}", p.open("rb")) for p in files]
    parts.append(("series/.DS_Store", io.BytesIO(b"junk")))
    try:
        stored = store_upload(parts, tmp_path / "up", keep_names=True)
    finally:
        for _, fh in parts:
            fh.close()
    assert stored.kind == "dicom" and stored.n_files == 4 and stored.analyse_path == stored.root
    assert sorted(p.name for p in (stored.root / "series").iterdir()) == [p.name for p in files]
    assert load_scan(stored.analyse_path).pixels.shape[0] == 4


def test_a_dicom_with_preamble_is_accepted(tmp_path: Path, cq500_bytes: bytes) -> None:
    stored = store_upload(_parts(("CT000000", cq500_bytes)), tmp_path / "up", keep_names=True)
    assert stored.kind == "dicom" and stored.analyse_path.name == "CT000000"
    assert store_upload(_parts(("CT000000", cq500_bytes)), tmp_path / "up").analyse_path.name == "0001"


def test_junk_and_folders_inside_a_zip_are_skipped(tmp_path: Path, dicom_bytes: bytes) -> None:
    data = _zip(
        ("series/", b""),
        ("series/01.dcm", dicom_bytes),
        ("series/02.dcm", dicom_bytes),
        ("series/.DS_Store", b"junk"),
        ("__MACOSX/series/._01.dcm", b"junk"),
        ("DICOMDIR", b"index"),
    )
    stored = store_upload(_parts(("upload.zip", data)), tmp_path / "up", keep_names=True)
    assert stored.n_files == 2 and stored.kind == "dicom"
    assert sorted(str(p.relative_to(stored.root)) for p in stored.root.rglob("*") if p.is_file()) == [
        "series/01.dcm",
        "series/02.dcm",
    ]


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_a_nifti_volume_is_accepted(tmp_path: Path, suffix: str) -> None:
    import nibabel as nib

    volume = np.full((32, 32, 6), -1000, dtype=np.int16)
    written = tmp_path / f"brain{suffix}"
    nib.save(nib.Nifti1Image(volume, np.eye(4)), written)
    stored = store_upload(_parts((f"brain{suffix}", written.read_bytes())), tmp_path / "up")
    assert stored.kind == "nifti" and stored.n_files == 1
    assert stored.analyse_path.name == f"0001{suffix}"
    assert load_scan(stored.analyse_path).source_format == "nifti"
