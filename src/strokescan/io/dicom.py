"""DICOM: one file, a folder or a .zip holding a series.

Slices are ordered by their position along the slice normal (ImagePositionPatient projected on the cross
product of the ImageOrientationPatient rows), not by file name or InstanceNumber. Stored values become
Hounsfield units through the Modality LUT (RescaleSlope/Intercept). Compressed transfer syntaxes decode
with pydicom's plug-ins (pylibjpeg, gdcm, pydicom's own RLE).
"""

from __future__ import annotations

import tempfile
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
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
    UnreadableFileError,
)
from strokescan.io.limits import check_file, check_pixels
from strokescan.io.scan import Scan, ScanIdentifiers

DICOM_SUFFIXES = {".dcm", ".dicom", ".ima", ""}


def has_dicom_magic(path: Path) -> bool:
    """True for a file with the 128-byte preamble and 'DICM' prefix."""
    with open(path, "rb") as fh:
        head = fh.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def read_header(path: Path) -> Dataset | None:
    """The header of ``path`` if it is a DICOM image object, else None (a README beside a series...)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except (InvalidDicomError, OSError, ValueError, TypeError, KeyError, AttributeError, EOFError):
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
        arr = ds.pixel_array
        arr = apply_modality_lut(arr, ds)
    except (ValueError, NotImplementedError, RuntimeError, AttributeError, TypeError, KeyError, OSError) as exc:
        syntax = ds.file_meta.get("TransferSyntaxUID", "unknown") if hasattr(ds, "file_meta") else "unknown"
        name = getattr(syntax, "name", str(syntax))
        raise UnreadableFileError(f"{path}: cannot decode the pixel data ({name}): {exc}") from None
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 3 and int(ds.get("SamplesPerPixel", 1)) > 1:
        arr = arr.mean(axis=-1)  # colour secondary capture -> grey
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1" and not _is_hu(ds):
        arr = arr.max() + arr.min() - arr  # MONOCHROME1: low values are white
    return arr


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
        return pydicom.dcmread(path, force=True)
    except (InvalidDicomError, OSError, ValueError, TypeError, EOFError) as exc:
        raise UnreadableFileError(f"{path}: cannot read the DICOM file ({exc})") from None


def read_dicom_files(paths: list[Path], source: Path, limits: InputLimits = LIMITS) -> Scan:
    """Read the DICOM files of one series into one :class:`Scan`, sorted by slice position."""
    datasets = []
    for p in paths:
        check_file(p, limits)
        ds = _read_full(p)
        if "Rows" not in ds and "PixelData" not in ds and "SOPClassUID" not in ds:
            raise UnreadableFileError(f"{p}: not a DICOM file (no DICOM header found)")
        datasets.append((p, ds))
    shapes = {(int(ds.get("Rows", 0)), int(ds.get("Columns", 0))) for _, ds in datasets}
    if len(shapes) > 1:
        listed = ", ".join(f"{r}x{c}" for r, c in sorted(shapes))
        raise InconsistentSeriesError(f"{source}: the series mixes slice sizes ({listed}); cannot form one volume")
    first = datasets[0][1]
    normal = _slice_normal(first)
    positions = [_position(ds, normal) for _, ds in datasets]
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
        if np.any(steps <= 1e-3):
            notes.append("two or more slices share one position")
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
        raise MultipleSeriesError(f"{source}: no series {series_uid!r} here", [])
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
            with tempfile.TemporaryDirectory(prefix="strokescan-zip-") as tmp:
                names = {}
                for k, m in enumerate(members):  # flat, numbered names: no path traversal
                    target = Path(tmp) / f"{k:06d}.dcm"
                    target.write_bytes(zf.read(m))
                    names[str(target)] = f"{path}!{m.filename}"
                scan = read_dicom_folder(Path(tmp), series_uid, limits, source=path)
        scan.slice_sources = [names.get(s.split("#")[0], s) for s in scan.slice_sources]
        return scan
    except zipfile.BadZipFile as exc:
        raise UnreadableFileError(f"{path}: not a readable zip archive ({exc})") from None


def read_dicom_file(path: Path, limits: InputLimits = LIMITS) -> Scan:
    """Read one DICOM file (a slice, or a multi-frame volume)."""
    check_file(path, limits)
    return read_dicom_files([path], path, limits)
