"""DICOM: one file, a folder or a .zip holding a series.

Slices are ordered by their position along the slice normal (ImagePositionPatient projected on the cross
product of the ImageOrientationPatient rows), not by file name or InstanceNumber. Stored values become
Hounsfield units through the Modality LUT (RescaleSlope/Intercept). Compressed transfer syntaxes decode
with pydicom's plug-ins (pylibjpeg, gdcm, pydicom's own RLE).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
import zipfile
import zlib
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut

from strokescan.config import LIMITS, InputLimits
from strokescan.errors import (
    EmptyInputError,
    InconsistentSeriesError,
    InputTooLargeError,
    MultipleSeriesError,
    NoPixelDataError,
    StrokescanError,
    UnreadableFileError,
)
from strokescan.io.limits import check_file, check_pixels
from strokescan.io.scan import Scan, ScanIdentifiers

DICOM_SUFFIXES = {".dcm", ".dicom", ".ima", ""}

_PYDICOM_LOG = logging.getLogger("pydicom")


class _DropRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:  # noqa: ARG002
        return False


@contextlib.contextmanager
def _quiet_pydicom() -> Iterator[list[warnings.WarningMessage]]:
    """Silence pydicom's warnings and log lines while reading.

    They can quote tag values (a malformed date, a name) and would reach stderr or a log; the reader turns
    what matters (a truncated file) into a typed error instead.
    """
    drop = _DropRecords()
    _PYDICOM_LOG.addFilter(drop)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield caught
    finally:
        _PYDICOM_LOG.removeFilter(drop)


def one_line(exc: BaseException | str, limit: int = 300) -> str:
    """An exception text on one line, shortened: error messages must be one line."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_truncated(path: Path, ds: Dataset, caught: list[warnings.WarningMessage]) -> bool:
    """True when pydicom hit the end of the file inside an element (it reads such files silently)."""
    if any("end of file" in str(w.message).lower() for w in caught):
        return True
    try:
        size = path.stat().st_size
    except OSError:
        return False
    for elem in ds._dict.values():  # raw elements keep where their value started and its declared length
        if isinstance(elem, RawDataElement) and elem.length != 0xFFFFFFFF and elem.value_tell is not None:
            if elem.value_tell + elem.length > size:
                return True
    return False


def has_dicom_magic(path: Path) -> bool:
    """True for a file with the 128-byte preamble and 'DICM' prefix."""
    with open(path, "rb") as fh:
        head = fh.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def read_header(path: Path) -> Dataset | None:
    """The header of ``path`` if it is a DICOM image object, else None (a README beside a series...)."""
    try:
        with _quiet_pydicom():
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            _ = "Rows" in ds and "SOPClassUID" in ds and "Modality" in ds
    except Exception:  # noqa: BLE001 - any failure means "not a DICOM header we can use"
        return None
    # force=True also "reads" text files; a real image header has these.
    if "Rows" not in ds and "SOPClassUID" not in ds and "Modality" not in ds:
        return None
    return ds


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    return str(value) if value not in (None, "") else None


def _identifiers(ds: Dataset) -> ScanIdentifiers:
    return ScanIdentifiers(
        patient_id=_text(ds, "PatientID"),
        patient_name=_text(ds, "PatientName"),
        study_instance_uid=_text(ds, "StudyInstanceUID"),
        series_instance_uid=_text(ds, "SeriesInstanceUID"),
        accession_number=_text(ds, "AccessionNumber"),
        study_date=_text(ds, "StudyDate"),
    )


def _slice_normal(ds: Dataset) -> np.ndarray | None:
    iop = ds.get("ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        return None
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    normal = np.cross(row, col)
    return normal if np.linalg.norm(normal) > 0.5 else None


def _orientation_name(normal: np.ndarray | None) -> str | None:
    if normal is None:
        return None
    axis = int(np.argmax(np.abs(normal)))
    if abs(normal[axis]) < 0.8:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def _gantry_tilt(ds: Dataset) -> float | None:
    if ds.get("GantryDetectorTilt") not in (None, ""):
        return float(ds.GantryDetectorTilt)
    return None


def _decode(path: Path, ds: Dataset) -> np.ndarray:
    """Stored pixels -> modality values (HU for CT), float32, shape (frames, rows, cols)."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        sop = ds.get("SOPClassUID")
        kind = sop.name if sop is not None else "unknown SOP class"
        raise NoPixelDataError(f"{path}: the DICOM object has no pixel data ({kind})")
    try:
        with _quiet_pydicom():
            arr = ds.pixel_array
            arr = apply_modality_lut(arr, ds)
            inverted_range = _monochrome1_range(ds)
    except Exception as exc:  # noqa: BLE001 - decoders raise many types; all mean "cannot decode"
        syntax = ds.file_meta.get("TransferSyntaxUID", "unknown") if hasattr(ds, "file_meta") else "unknown"
        name = getattr(syntax, "name", str(syntax))
        raise UnreadableFileError(f"{path}: cannot decode the pixel data ({name}): {one_line(exc)}") from None
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 3 and int(ds.get("SamplesPerPixel", 1)) > 1:
        arr = arr.mean(axis=-1)  # colour secondary capture -> grey
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if inverted_range is not None:
        # MONOCHROME1: low values are white. Invert over the range the stored bits allow (after the
        # modality LUT), the same for every slice of a series, so that high values are bright.
        arr = np.float32(inverted_range[0] + inverted_range[1]) - arr
    return arr


def _monochrome1_range(ds: Dataset) -> tuple[float, float] | None:
    """(low, high) modality values to invert over for a MONOCHROME1 image that is not in HU, else None."""
    if str(ds.get("PhotometricInterpretation", "")).strip() != "MONOCHROME1" or _is_hu(ds):
        return None
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        lo, hi = 0, 2**bits - 1
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    ends = sorted((lo * slope + intercept, hi * slope + intercept))
    return ends[0], ends[1]


def _is_hu(ds: Dataset) -> bool:
    rescale_type = str(ds.get("RescaleType", "HU") or "HU").upper()
    return str(ds.get("Modality", "")) == "CT" and rescale_type in {"HU", "US"}


def _position(ds: Dataset, normal: np.ndarray | None) -> float | None:
    ipp = ds.get("ImagePositionPatient")
    if ipp is None or normal is None or len(ipp) != 3:
        return None
    return float(np.dot(np.asarray(ipp, float), normal))


def _read_full(path: Path) -> Dataset:
    try:
        with _quiet_pydicom() as caught:
            ds = pydicom.dcmread(path, force=True)
            truncated = _is_truncated(path, ds, caught)
    except (InvalidDicomError, OSError, ValueError, TypeError, EOFError) as exc:
        raise UnreadableFileError(f"{path}: cannot read the DICOM file ({one_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - a malformed file can make the parser raise anything
        raise UnreadableFileError(f"{path}: cannot read the DICOM file ({type(exc).__name__})") from None
    if truncated or len(ds) == 0:
        raise UnreadableFileError(f"{path}: the DICOM file is truncated or corrupt (it ends inside a data element)")
    return ds


def _frames(ds: Dataset) -> int:
    try:
        return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def read_dicom_files(paths: list[Path], source: Path, limits: InputLimits = LIMITS) -> Scan:
    """Read the DICOM files of one series into one :class:`Scan`, sorted by slice position."""
    with _quiet_pydicom():  # tag values are converted lazily: a malformed one warns with its value
        return _read_dicom_files(paths, source, limits)


def _read_dicom_files(paths: list[Path], source: Path, limits: InputLimits) -> Scan:
    datasets = []
    for p in paths:
        check_file(p, limits)
        ds = _read_full(p)
        if "Rows" not in ds and "PixelData" not in ds and "SOPClassUID" not in ds:
            raise UnreadableFileError(f"{p}: not a DICOM file (no DICOM header found)")
        datasets.append((p, ds))
    try:
        shapes = {(int(ds.get("Rows", 0)), int(ds.get("Columns", 0))) for _, ds in datasets}
    except (TypeError, ValueError):
        raise UnreadableFileError(f"{source}: Rows/Columns are not numbers") from None
    if len(shapes) > 1:
        listed = ", ".join(f"{r}x{c}" for r, c in sorted(shapes))
        raise InconsistentSeriesError(f"{source}: the series mixes slice sizes ({listed}); cannot form one volume")
    # Refuse oversized images before decoding anything.
    rows, cols = next(iter(shapes))
    n_frames = sum(_frames(ds) for _, ds in datasets)
    check_pixels(source, (n_frames, rows, cols), limits)
    first = datasets[0][1]
    normal = _slice_normal(first)
    if len(datasets) > 1 and normal is not None:
        for p, ds in datasets[1:]:
            other = _slice_normal(ds)
            if other is not None and abs(float(np.dot(normal, other))) < 0.99:
                raise InconsistentSeriesError(
                    f"{source}: the series mixes slice orientations ({p.name} is not parallel to the others); "
                    "cannot form one volume"
                )
    positions = [_position(ds, normal) for _, ds in datasets]
    if len(datasets) > 1 and all(p is not None for p in positions):
        rounded = np.round(np.asarray(positions, float), 2)
        values, counts = np.unique(rounded, return_counts=True)
        if counts.max() > 1:
            dup = int(counts.max())
            raise InconsistentSeriesError(
                f"{source}: {dup} files share one slice position ({values[np.argmax(counts)]:.2f} mm along the slice "
                f"normal); they are copies or a multi-echo/multi-phase series, not one volume. Read one file instead"
            )
    if all(p is not None for p in positions):
        order = np.argsort(positions, kind="stable")
        ordered_by = "position"
    else:
        order = np.argsort([int(ds.get("InstanceNumber", 0) or 0) for _, ds in datasets], kind="stable")
        ordered_by = "instance number"
    slices, sources, slice_pos = [], [], []
    total = 0
    for i in order:
        p, ds = datasets[i]
        arr = _decode(p, ds)
        total += arr.size
        check_pixels(p, (total,), limits)
        for f in range(arr.shape[0]):
            slices.append(arr[f])
            sources.append(str(p) if arr.shape[0] == 1 else f"{p}#{f}")
            if positions[i] is not None and arr.shape[0] == 1:
                slice_pos.append(positions[i])
    pixels = np.stack(slices)
    notes = []
    if len(datasets) > 1:
        notes.append(f"{len(datasets)} files ordered by {ordered_by}")
    positions_arr = np.asarray(slice_pos, float) if len(slice_pos) == pixels.shape[0] else None
    slice_spacing = None
    if positions_arr is not None and len(positions_arr) > 1:
        steps = np.diff(positions_arr)
        slice_spacing = float(np.median(steps))
        if np.ptp(steps) > 0.1 * abs(slice_spacing):
            notes.append(f"uneven slice steps from {steps.min():.2f} to {steps.max():.2f} mm")
    thickness = float(first.SliceThickness) if first.get("SliceThickness") not in (None, "") else None
    spacing = first.get("PixelSpacing") or first.get("ImagerPixelSpacing")
    tilt = _gantry_tilt(first)
    if tilt is not None and abs(tilt) > 0.5:
        notes.append(f"gantry tilt {tilt:.1f} degrees")
    return Scan(
        pixels=pixels,
        is_hu=_is_hu(first),
        modality=str(first.get("Modality", "OT") or "OT"),
        source_format="dicom",
        source_path=source,
        pixel_spacing_mm=(float(spacing[0]), float(spacing[1])) if spacing else None,
        slice_spacing_mm=slice_spacing,
        slice_thickness_mm=thickness,
        slice_positions_mm=positions_arr,
        slice_sources=sources,
        orientation=_orientation_name(normal),
        gantry_tilt_deg=tilt,
        identifiers=_identifiers(first),
        notes=notes,
    )


def _series_key(ds: Dataset) -> str:
    return str(ds.get("SeriesInstanceUID", "") or "no-series-uid")


def read_dicom_folder(
    folder: Path, series_uid: str | None = None, limits: InputLimits = LIMITS, source: Path | None = None
) -> Scan:
    """Read the one image series in ``folder`` (recursively); several series need ``series_uid``."""
    with _quiet_pydicom():
        return _read_dicom_folder(folder, series_uid, limits, source)


def _read_dicom_folder(folder: Path, series_uid: str | None, limits: InputLimits, source: Path | None) -> Scan:
    source = source or folder
    groups: dict[str, list[Path]] = defaultdict(list)
    headers: dict[str, Dataset] = {}
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        if p.stat().st_size == 0:
            continue
        ds = read_header(p)
        if ds is None or "Rows" not in ds:
            continue
        key = _series_key(ds)
        groups[key].append(p)
        headers.setdefault(key, ds)
    if not groups:
        raise EmptyInputError(f"{source}: no DICOM image files found")
    if series_uid is None and len(groups) > 1:
        series = [
            {
                "series_index": k,
                "n_files": len(groups[key]),
                "modality": str(headers[key].get("Modality", "")),
                "series_description": str(headers[key].get("SeriesDescription", "")),
            }
            for k, key in enumerate(groups)
        ]
        listing = "; ".join(
            f"#{s['series_index']}: {s['modality']} '{s['series_description']}' ({s['n_files']} files)" for s in series
        )
        raise MultipleSeriesError(f"{source}: {len(groups)} series found, choose one with --series: {listing}", series)
    if series_uid is None:
        key = next(iter(groups))
    elif series_uid.isdigit() and int(series_uid) < len(groups):
        key = list(groups)[int(series_uid)]
    elif series_uid in groups:
        key = series_uid
    else:
        available = ", ".join(f"#{k}" for k in range(len(groups)))
        raise MultipleSeriesError(
            f"{source}: no series {series_uid!r} here (choose an index: {available}, or a SeriesInstanceUID)", []
        )
    return read_dicom_files(groups[key], source, limits)


def read_dicom_zip(path: Path, series_uid: str | None = None, limits: InputLimits = LIMITS) -> Scan:
    """Read a series from a .zip archive, refusing archives larger than the limits when unpacked."""
    check_file(path, limits)
    try:
        with zipfile.ZipFile(path) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            if not members:
                raise EmptyInputError(f"{path}: the archive is empty")
            if len(members) > limits.max_archive_members:
                raise InputTooLargeError(f"{path}: {len(members)} files is over the archive limit")
            unpacked = sum(m.file_size for m in members)
            if unpacked > limits.max_archive_bytes:
                raise InputTooLargeError(f"{path}: unpacks to {unpacked / 2**20:.0f} MiB, over the limit")
            too_big = [m for m in members if m.file_size > limits.max_file_bytes]
            if too_big:
                raise InputTooLargeError(f"{path}: a member unpacks to {too_big[0].file_size / 2**20:.0f} MiB, over the limit per file")
            with tempfile.TemporaryDirectory(prefix="strokescan-zip-") as tmp:
                names = {}
                for k, m in enumerate(members):  # flat, numbered names: no path traversal
                    target = Path(tmp) / f"{k:06d}.dcm"
                    target.write_bytes(zf.read(m))
                    names[str(target)] = f"{path}!{m.filename}"
                try:
                    scan = read_dicom_folder(Path(tmp), series_uid, limits, source=path)
                except StrokescanError as exc:  # name the archive member, not the temporary file
                    message = str(exc)
                    for tmp_name, member in names.items():
                        message = message.replace(tmp_name, member)
                    exc.args = (message,)
                    raise
        scan.slice_sources = [names.get(s.split("#")[0], s) for s in scan.slice_sources]
        return scan
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise UnreadableFileError(f"{path}: not a readable zip archive ({one_line(exc)})") from None


def read_dicom_file(path: Path, limits: InputLimits = LIMITS) -> Scan:
    """Read one DICOM file (a slice, or a multi-frame volume)."""
    check_file(path, limits)
    return read_dicom_files([path], path, limits)
