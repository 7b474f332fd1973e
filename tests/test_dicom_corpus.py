"""Every DICOM file of pydicom's test corpora through `strokescan inspect`: a JSON summary or one typed error line.

The corpora are files no one here wrote: pydicom's own ``pydicom/data/test_files`` (always installed with
pydicom) and, when installed, the ``pydicom-data`` package (module ``data_store``; ``pip install pydicom-data``,
not a project dependency). A file may be read or refused, never end in a traceback or hang. docs/inputs.md
tabulates what is read and what is refused, and why.
"""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest

from strokescan.errors import NoPixelDataError, StrokescanError, UnreadableFileError
from strokescan.io import load_scan

PER_FILE_SECONDS = 30  # the slowest file (120 colour frames) takes about 5 s
SKIP_SUFFIXES = {".py", ".pyc", ".json", ".txt", ".dump", ".icc", ".md"}  # the corpora's own notes and scripts


def _pydicom_files() -> Path:
    import pydicom.data

    return Path(pydicom.data.__file__).parent / "test_files"


def _pydicom_data_files() -> Path | None:
    try:
        import data_store  # the pydicom-data package
    except ImportError:
        return None
    folder = Path(data_store.__file__).parent / "data"
    return folder if folder.is_dir() else None


def corpus_files() -> list[tuple[str, Path]]:
    """(id, path) of every file of the corpora that could be DICOM (suffix .dcm or none, e.g. DICOMDIR)."""
    found = []
    for name, root in (("pydicom", _pydicom_files()), ("pydicom-data", _pydicom_data_files())):
        if root is None or not root.is_dir():
            continue
        for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            if path.suffix.lower() not in SKIP_SUFFIXES:
                found.append((f"{name}/{path.relative_to(root).as_posix()}", path))
    return found


CORPUS = corpus_files()


def _cli_main():
    from strokescan.app.cli import main

    return main


@contextlib.contextmanager
def _deadline(seconds: int, what: str) -> Iterator[None]:
    """Fail instead of hanging: SIGALRM where the platform has it (the main thread of a Unix process)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def _expired(signum, frame):
        raise TimeoutError(f"{what} took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, _expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.skipif(not CORPUS, reason="pydicom's test files are not installed")
@pytest.mark.parametrize("path", [p for _, p in CORPUS], ids=[i for i, _ in CORPUS])
def test_inspect_reads_or_refuses_cleanly(capfd, path):
    main = _cli_main()
    with _deadline(PER_FILE_SECONDS, f"strokescan inspect {path.name}"):
        code = main(["inspect", str(path), "--compact"])
    out, err = capfd.readouterr()  # file descriptors: also what C decoders print
    assert "Traceback" not in out + err
    if code == 0:
        summary = json.loads(out)
        frames = pydicom.dcmread(path, stop_before_pixels=True, force=True).get("NumberOfFrames", 1)
        assert summary["n_slices"] == summary["shape"][0] == int(frames or 1)  # one slice per frame
        assert "identifiers" not in summary and "references" not in summary
    else:
        assert code == 2, (code, err)
        assert out == ""
        assert err.startswith("strokescan: error: ") and err.count("\n") == 1, err
        assert path.name in err


def _corpus_file(name: str) -> Path:
    for _, path in CORPUS:
        if path.name == name:
            return path
    pytest.skip(f"{name} is not in the installed corpora")


@pytest.mark.parametrize(
    "name",
    # Multi-frame RGB and YBR images: a traceback before; now grey values, one slice per frame.
    ["SC_rgb_rle_2frame.dcm", "SC_rgb_rle_16bit_2frame.dcm", "SC_rgb_rle_32bit_2frame.dcm", "examples_ybr_color.dcm",
     "SC_rgb_2frame.dcm", "SC_rgb_16bit_2frame.dcm", "SC_rgb_32bit_2frame.dcm", "SC_rgb_expb_2frame.dcm",
     "SC_rgb_expb_16bit_2frame.dcm", "SC_rgb_expb_32bit_2frame.dcm"],  # color3d_jpeg_baseline.dcm: above
)
def test_colour_multiframe_files_are_read(name):
    path = _corpus_file(name)
    frames = int(pydicom.dcmread(path, stop_before_pixels=True).NumberOfFrames)
    with _deadline(PER_FILE_SECONDS, name):
        scan = load_scan(path)
    assert scan.was_rgb and scan.n_slices == frames and np.isfinite(scan.pixels).all()
    assert [r.frame_number for r in scan.references] == list(range(1, frames + 1))


@pytest.mark.parametrize(
    "name, error, words",
    [
        ("test-SR.dcm", NoPixelDataError, "Comprehensive SR Storage"),
        ("rtplan.dcm", NoPixelDataError, "RT Plan Storage"),
        ("rtstruct.dcm", NoPixelDataError, "RT Structure Set Storage"),
        ("waveform_ecg.dcm", NoPixelDataError, "Waveform"),
        ("DICOMDIR", NoPixelDataError, "DICOMDIR"),
        ("MR_truncated.dcm", UnreadableFileError, "truncated"),
        ("rtplan_truncated.dcm", UnreadableFileError, "truncated"),
        ("nested_priv_SQ.dcm", UnreadableFileError, "image header is incomplete"),
        ("JPEG-lossy.dcm", UnreadableFileError, "cannot decode the pixel data"),
    ],
)
def test_refusals_are_typed(name, error, words):
    with pytest.raises(error, match=words) as info:
        load_scan(_corpus_file(name))
    assert type(info.value) is error and "\n" not in str(info.value)


def test_file_meta_without_transfer_syntax_is_read():
    scan = load_scan(_corpus_file("OT-PAL-8-face.dcm"))  # palette colour, meta lacks (0002,0010): pydicom-data
    assert scan.was_rgb and scan.pixels.shape == (1, 480, 640)


def test_enhanced_ct_gets_its_rescale():
    scan = load_scan(_corpus_file("eCT_Supplemental.dcm"))  # pydicom-data: rescale in the functional groups
    assert scan.is_hu and scan.pixels.shape == (2, 512, 512)
    assert scan.pixels.min() == -1024 and scan.slice_spacing_mm == pytest.approx(10.0)
    assert scan.orientation == "axial" and [r.frame_number for r in scan.references] == [1, 2]


def test_damaged_files_give_typed_errors(tmp_path):
    """Files pydicom itself cannot parse (cut short, bytes overwritten) become one typed error line."""
    names = ["CT_small.dcm", "MR_small_RLE.dcm", "SC_rgb_rle_2frame.dcm", "JPEG2000.dcm", "liver_1frame.dcm",
             "examples_palette.dcm", "rtdose.dcm", "ExplVR_BigEndNoMeta.dcm"]
    rng = np.random.default_rng(14)
    tried = 0
    for name in names:
        data = (_pydicom_files() / name).read_bytes()
        for k in range(30):
            damaged = bytearray(data)
            if k % 3 == 0:
                damaged = damaged[: int(rng.integers(1, len(damaged)))]
            else:  # overwrite a few bytes, mostly in the header
                span = min(len(damaged), 2000) if k % 3 == 1 else len(damaged)
                for i in rng.integers(0, span, size=int(rng.integers(1, 8))):
                    damaged[int(i)] = int(rng.integers(0, 256))
            path = tmp_path / f"{Path(name).stem}_{k}.dcm"
            path.write_bytes(bytes(damaged))
            tried += 1
            with _deadline(PER_FILE_SECONDS, path.name):
                try:
                    scan = load_scan(path)
                except StrokescanError as exc:
                    text = str(exc)
                    assert text and "\n" not in text, (path.name, text)
                    continue
            json.dumps(scan.summary())
            assert np.isfinite(scan.pixels).all()
    assert tried == 30 * len(names)
