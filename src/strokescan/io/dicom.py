"""DICOM: one file, a folder or a .zip holding a series.

Slices (files, and the frames of an enhanced multi-frame object) are ordered by their position along the
slice normal (ImagePositionPatient projected on the cross product of the ImageOrientationPatient rows, turned
to point to the head), not by file name or InstanceNumber. Stored values become
Hounsfield units through the Modality LUT (RescaleSlope/Intercept, or the Pixel Value Transformation of an
enhanced multi-frame object). Compressed transfer syntaxes decode with pydicom's plug-ins (pylibjpeg, gdcm,
pydicom's own RLE). Colour images (RGB, YBR, palette) become grey values, as JPEG/PNG slices do.

Files, folders, archives and in-memory :class:`pydicom.Dataset` objects (what a DICOM listener receives,
:func:`scan_from_datasets`) all go through one function, so they are sorted, checked and refused alike.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import warnings
import zipfile
import zlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from strokescan.config import LIMITS, InputLimits
from strokescan.errors import (
    EmptyInputError,
    InconsistentSeriesError,
    InputTooLargeError,
    MultipleSeriesError,
    NoPixelDataError,
    StrokescanError,
    UnreadableFileError,
    UnsupportedFormatError,
)
from strokescan.io.limits import check_file, check_pixels
from strokescan.io.scan import Scan, ScanIdentifiers, SliceIdentity, sop_class_name

DICOM_SUFFIXES = {".dcm", ".dicom", ".ima", ""}
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
# Where an enhanced (multi-frame) object keeps what a classic one has at the top level.
_GROUP_OF = {
    "ImagePositionPatient": "PlanePositionSequence",
    "ImageOrientationPatient": "PlaneOrientationSequence",
    "PixelSpacing": "PixelMeasuresSequence",
    "SliceThickness": "PixelMeasuresSequence",
    "RescaleSlope": "PixelValueTransformationSequence",
    "RescaleIntercept": "PixelValueTransformationSequence",
    "RescaleType": "PixelValueTransformationSequence",
}

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


@contextlib.contextmanager
def _native_stderr_held() -> Iterator[None]:
    """Hold what C decoders print on file descriptor 2 while they run; pass it on only if decoding succeeds.

    Some (openjpeg inside gdcm) print their own lines before raising, which would break the one-line error
    of the command line. Only in the main thread: a server's worker threads leave the descriptor alone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as held:
        ok = False
        try:
            os.dup2(held.fileno(), 2)
            yield
            ok = True
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if ok and held.tell():
                held.seek(0)
                with contextlib.suppress(OSError):
                    os.write(2, held.read())


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


def _frame_value(ds: Dataset, keyword: str, frame: int = 0) -> object:
    """A classic top-level value, else the one an enhanced object keeps for ``frame`` (per-frame, then shared)."""
    value = ds.get(keyword)
    if value not in (None, ""):
        return value
    sequence = _GROUP_OF.get(keyword)
    if sequence is None:
        return None
    for groups_keyword, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        groups = ds.get(groups_keyword)
        if groups and index < len(groups):
            items = groups[index].get(sequence)
            if items:
                value = items[0].get(keyword)
                if value not in (None, ""):
                    return value
    return None


def _floats(value: object, n: int) -> tuple[float, ...] | None:
    """``n`` finite floats from a multi-valued element, else None (absent, wrong count, not numbers)."""
    if value is None or isinstance(value, (str, bytes)):
        return None
    try:
        out = tuple(float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(np.isfinite(out)) else None


def _frame_position(ds: Dataset, frame: int, n_frames: int) -> tuple[float, float, float] | None:
    """ImagePositionPatient of one frame; a multi-frame object has it only per frame (an enhanced one)."""
    if n_frames == 1:
        return _floats(_frame_value(ds, "ImagePositionPatient"), 3)  # type: ignore[return-value]
    groups = ds.get("PerFrameFunctionalGroupsSequence")
    if not groups or frame >= len(groups):
        return None  # frames of a classic multi-frame object (RT dose, ultrasound) share one top-level position
    items = groups[frame].get("PlanePositionSequence")
    return _floats(items[0].get("ImagePositionPatient"), 3) if items else None  # type: ignore[return-value]


def _positive(value: object) -> float | None:
    """A header value as a positive float (a thickness), else None."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if number > 0 and np.isfinite(number) else None


def _normal_of(iop: tuple[float, ...] | None) -> np.ndarray | None:
    if iop is None:
        return None
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    normal = np.cross(row, col)
    length = float(np.linalg.norm(normal))
    return normal / length if length > 0.5 else None


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


def _fill_transfer_syntax(ds: Dataset) -> None:
    """Give a dataset without (0002,0010) Transfer Syntax UID the uncompressed one it was parsed with.

    pydicom reads such files (no file meta, or a meta without the syntax) with ``force`` but will not decode
    their pixels. Encapsulated (compressed) pixel data cannot be guessed: that stays an error.
    """
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID"):
        return
    elem = ds.get("PixelData") if "PixelData" in ds else None
    if elem is not None and getattr(elem, "is_undefined_length", False):
        return
    implicit, little = ds.original_encoding
    if little is None:  # built in memory: native pixel bytes
        implicit, little = False, True
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian if implicit and little else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    )


def _require_image(label: str, ds: Dataset) -> None:
    """Refuse a DICOM object that holds no image, or whose image header is too incomplete to decode."""
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        meta = getattr(ds, "file_meta", None)
        sop = ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta is not None else None)
        if str(sop or "") == _DICOMDIR_CLASS or "DirectoryRecordSequence" in ds:
            raise NoPixelDataError(
                f"{label}: a DICOMDIR (the index of a DICOM disc), not an image: read the folder of the series instead"
            )
        if sop or "Rows" in ds or "Modality" in ds:
            kind = sop_class_name(str(sop)) or "unknown SOP class"
            raise NoPixelDataError(f"{label}: the DICOM object has no pixel data ({kind})")
        raise UnreadableFileError(f"{label}: not a DICOM image (no image header and no pixel data found)")
    missing = [k for k in ("Rows", "Columns", "BitsAllocated") if ds.get(k) in (None, "")]
    if missing:
        raise UnreadableFileError(f"{label}: the image header is incomplete (no {', '.join(missing)}); cannot decode it")


def _to_grey(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) colour -> grey: grey pictures stored as colour keep their values, coloured ones become luma."""
    rgb = np.asarray(rgb, dtype=np.float32)
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
        return rgb[..., 0]
    return rgb[..., 0] * np.float32(0.299) + rgb[..., 1] * np.float32(0.587) + rgb[..., 2] * np.float32(0.114)


def _is_colour(ds: Dataset) -> bool:
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    return photometric == "PALETTE COLOR" or int(ds.get("SamplesPerPixel", 1) or 1) > 1


def _decode(label: str, ds: Dataset, n_frames: int, rows: int, cols: int) -> np.ndarray:
    """Stored pixels -> modality values (HU for CT), float32, shape (frames, rows, cols); colour -> grey."""
    _require_image(label, ds)
    _fill_transfer_syntax(ds)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    try:
        with _quiet_pydicom(), _native_stderr_held():
            arr = ds.pixel_array
            if photometric == "PALETTE COLOR":
                arr = apply_color_lut(arr, ds)
                samples = 3
            elif samples == 1:
                arr = _modality_values(arr, ds, n_frames)
            inverted_range = _monochrome1_range(ds) if samples == 1 else None
    except MemoryError:
        raise InputTooLargeError(f"{label}: not enough memory to decode the pixel data") from None
    except Exception as exc:  # noqa: BLE001 - decoders raise many types; all mean "cannot decode"
        syntax = ds.file_meta.get("TransferSyntaxUID", "unknown") if hasattr(ds, "file_meta") else "unknown"
        name = getattr(syntax, "name", str(syntax))
        raise UnreadableFileError(f"{label}: cannot decode the pixel data ({name}): {one_line(exc)}") from None
    arr = np.asarray(arr)
    if samples > 1:
        if arr.ndim < 3 or arr.shape[-1] != samples or samples not in (3, 4):
            raise UnreadableFileError(f"{label}: a colour image with {samples} samples per pixel in an unexpected layout")
        arr = _to_grey(arr[..., :3])
    else:
        arr = np.asarray(arr, dtype=np.float32)
    if arr.size != n_frames * rows * cols:
        raise UnreadableFileError(
            f"{label}: the pixel data decodes to {arr.size} values, not the {n_frames}x{rows}x{cols} the header declares"
        )
    arr = arr.reshape(n_frames, rows, cols)
    if not np.isfinite(arr).all():
        raise UnreadableFileError(f"{label}: the pixel data holds values that are not finite numbers (NaN, infinity)")
    if inverted_range is not None:
        # MONOCHROME1: low values are white. Invert over the range the stored bits allow (after the
        # modality LUT), the same for every slice of a series, so that high values are bright.
        arr = np.float32(inverted_range[0] + inverted_range[1]) - arr
    return arr


def _modality_values(arr: np.ndarray, ds: Dataset, n_frames: int) -> np.ndarray:
    """The Modality LUT: classic top-level rescale or LUT, else an enhanced object's per-frame rescale."""
    if "ModalityLUTSequence" in ds or "RescaleSlope" in ds or "RescaleIntercept" in ds:
        return apply_modality_lut(arr, ds)
    if "PerFrameFunctionalGroupsSequence" not in ds and "SharedFunctionalGroupsSequence" not in ds:
        return arr
    out = np.asarray(arr, dtype=np.float64).reshape((n_frames, *np.shape(arr)[-2:]))
    for f in range(n_frames):
        slope = _frame_value(ds, "RescaleSlope", f)
        intercept = _frame_value(ds, "RescaleIntercept", f)
        if slope is not None or intercept is not None:
            out[f] = out[f] * float(slope if slope is not None else 1) + float(intercept or 0)
    return out


def _monochrome1_range(ds: Dataset) -> tuple[float, float] | None:
    """(low, high) modality values to invert over for a MONOCHROME1 image that is not in HU, else None."""
    if str(ds.get("PhotometricInterpretation", "")).strip() != "MONOCHROME1" or _is_hu(ds):
        return None
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        lo, hi = 0, 2**bits - 1
    slope = float(_frame_value(ds, "RescaleSlope") or 1)  # type: ignore[arg-type]
    intercept = float(_frame_value(ds, "RescaleIntercept") or 0)  # type: ignore[arg-type]
    ends = sorted((lo * slope + intercept, hi * slope + intercept))
    return ends[0], ends[1]


def _is_hu(ds: Dataset) -> bool:
    rescale_type = str(_frame_value(ds, "RescaleType") or "HU").strip().upper()
    return str(ds.get("Modality", "")) == "CT" and rescale_type in {"HU", "US"} and not _is_colour(ds)


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
        items = []
        for p in paths:
            check_file(p, limits)
            items.append((str(p), _read_full(p)))
        return _scan_from_items(items, source, limits)


def scan_from_datasets(
    datasets: Dataset | Sequence[Dataset],
    source: str | Path = "<datasets>",
    series: str | None = None,
    limits: InputLimits = LIMITS,
) -> Scan:
    """Read in-memory :class:`pydicom.Dataset` objects (what a DICOM listener receives) into one :class:`Scan`.

    A list of datasets is one series, read exactly as files are: the same sorting, checks and typed errors.
    Where they hold several series, ``series`` picks one (index or SeriesInstanceUID) as for a folder.
    ``source`` names the input in messages; dataset ``k`` is called ``{source}[k]``. A dataset without a
    Transfer Syntax UID gets the uncompressed one it was parsed with (its ``file_meta`` is filled in).
    """
    if isinstance(datasets, Dataset):
        datasets = [datasets]
    source = Path(source)
    items = []
    for k, ds in enumerate(datasets):
        if not isinstance(ds, Dataset):
            raise UnsupportedFormatError(f"{source}[{k}]: not a pydicom Dataset ({type(ds).__name__})")
        items.append((f"{source}[{k}]", ds))
    if not items:
        raise EmptyInputError(f"{source}: no DICOM datasets given")
    with _quiet_pydicom():
        groups: dict[str, list[tuple[str, Dataset]]] = defaultdict(list)
        for label, ds in items:
            groups[_series_key(ds)].append((label, ds))
        key = _choose_series(source, series, {k: (len(v), v[0][1]) for k, v in groups.items()})
        return _scan_from_items(groups[key], source, limits)


class _Slice:
    """One slice to be: which dataset and frame it comes from, and where it lies."""

    __slots__ = ("frame", "iop", "item", "n_frames", "position")

    def __init__(self, item: int, frame: int, n_frames: int, position: tuple | None, iop: tuple | None) -> None:
        self.item, self.frame, self.n_frames, self.position, self.iop = item, frame, n_frames, position, iop


def _scan_from_items(items: list[tuple[str, Dataset]], source: Path, limits: InputLimits) -> Scan:
    """The one path from parsed datasets (each named by a label: its file) to a :class:`Scan`."""
    try:
        return _build_scan(items, source, limits)
    except StrokescanError:
        raise
    except MemoryError:
        raise InputTooLargeError(f"{source}: not enough memory to read this scan") from None
    except Exception as exc:  # noqa: BLE001 - a malformed header value can make any access raise
        raise UnreadableFileError(
            f"{source}: malformed DICOM header ({type(exc).__name__}: {one_line(exc, 160)})"
        ) from None


def _build_scan(items: list[tuple[str, Dataset]], source: Path, limits: InputLimits) -> Scan:
    for label, ds in items:
        _require_image(label, ds)
    try:
        shapes = {(int(ds.get("Rows", 0)), int(ds.get("Columns", 0))) for _, ds in items}
    except (TypeError, ValueError):
        raise UnreadableFileError(f"{source}: Rows/Columns are not numbers") from None
    if len(shapes) > 1:
        listed = ", ".join(f"{r}x{c}" for r, c in sorted(shapes))
        raise InconsistentSeriesError(f"{source}: the series mixes slice sizes ({listed}); cannot form one volume")
    # Refuse oversized images before decoding anything.
    rows, cols = next(iter(shapes))
    if rows <= 0 or cols <= 0:
        raise UnreadableFileError(f"{source}: the image header declares an empty image ({rows}x{cols})")
    frame_counts = [_frames(ds) for _, ds in items]
    check_pixels(source, (sum(frame_counts), rows, cols), limits)
    slices = [
        _Slice(i, f, n, _frame_position(ds, f, n), _floats(_frame_value(ds, "ImageOrientationPatient", f), 6))
        for i, ((_, ds), n) in enumerate(zip(items, frame_counts))
        for f in range(n)
    ]
    normal = _normal_of(slices[0].iop)
    if normal is not None and normal[2] < 0:
        normal = -normal  # point it to the head (+z): positions then grow inferior to superior
    if len(slices) > 1 and normal is not None:
        for s in slices[1:]:
            other = _normal_of(s.iop)
            if other is not None and abs(float(np.dot(normal, other))) < 0.99:
                label = items[s.item][0]
                what = Path(label).name if len(items) > 1 else f"{Path(label).name} frame {s.frame + 1}"
                raise InconsistentSeriesError(
                    f"{source}: the series mixes slice orientations ({what} is not parallel to the others); "
                    "cannot form one volume"
                )
    positions = [float(np.dot(s.position, normal)) if s.position is not None and normal is not None else None
                 for s in slices]
    known = all(p is not None for p in positions)
    if len(slices) > 1 and known:
        rounded = np.round(np.asarray(positions, float), 2)
        values, counts = np.unique(rounded, return_counts=True)
        if counts.max() > 1:
            dup = int(counts.max())
            if len(items) > 1:
                tail = "they are copies or a multi-echo/multi-phase series, not one volume. Read one file instead"
                what = "files"
            else:
                tail = "a multi-echo/multi-phase object, not one volume"
                what = "frames"
            raise InconsistentSeriesError(
                f"{source}: {dup} {what} share one slice position ({values[np.argmax(counts)]:.2f} mm along the slice "
                f"normal); {tail}"
            )
    if known:
        order = list(np.argsort(positions, kind="stable"))
        ordered_by = "position"
    else:
        instance = [int(items[s.item][1].get("InstanceNumber", 0) or 0) for s in slices]
        order = sorted(range(len(slices)), key=lambda k: (instance[k], slices[k].item, slices[k].frame))
        ordered_by = "instance number"
    decoded: dict[int, np.ndarray] = {}
    total = 0
    pixels_out, sources, references, thicknesses = [], [], [], []
    for k in order:
        s = slices[k]
        label, ds = items[s.item]
        if s.item not in decoded:
            decoded[s.item] = _decode(label, ds, s.n_frames, rows, cols)
            total += decoded[s.item].size
            check_pixels(Path(label), (total,), limits)
        pixels_out.append(decoded[s.item][s.frame])
        sources.append(label if s.n_frames == 1 else f"{label}#{s.frame}")
        references.append(_slice_identity(ds, s))
        thicknesses.append(_positive(_frame_value(ds, "SliceThickness", s.frame)))
    pixels = np.stack(pixels_out)
    first = items[slices[order[0]].item][1]
    notes = []
    if len(items) > 1:
        notes.append(f"{len(items)} files ordered by {ordered_by}")
    elif frame_counts[0] > 1 and known:
        notes.append(f"{frame_counts[0]} frames ordered by position")
    positions_arr = np.asarray([positions[k] for k in order], float) if known else None
    slice_spacing = None
    if positions_arr is not None and len(positions_arr) > 1:
        steps = np.diff(positions_arr)
        slice_spacing = float(np.median(steps))
        if np.ptp(steps) > 0.1 * abs(slice_spacing):
            notes.append(f"uneven slice steps from {steps.min():.2f} to {steps.max():.2f} mm")
    thickness_value = _frame_value(first, "SliceThickness")
    thickness = float(thickness_value) if thickness_value not in (None, "") else None  # type: ignore[arg-type]
    per_slice = tuple(thicknesses) if all(t is not None for t in thicknesses) else None
    if per_slice and len(set(per_slice)) > 1:
        notes.append(f"slice thickness varies: {', '.join(f'{t:g}' for t in sorted(set(per_slice)))} mm")
    spacing = _floats(_frame_value(first, "PixelSpacing") or first.get("ImagerPixelSpacing"), 2)
    tilt = _gantry_tilt(first)
    if tilt is not None and abs(tilt) > 0.5:
        notes.append(f"gantry tilt {tilt:.1f} degrees")
    colour = _is_colour(first)
    if colour:
        notes.append(f"colour image ({str(first.get('PhotometricInterpretation', '')).strip()}) read as grey values")
    body_part = _text(first, "BodyPartExamined")
    return Scan(
        pixels=pixels,
        is_hu=_is_hu(first),
        modality=str(first.get("Modality", "OT") or "OT").strip() or "OT",
        source_format="dicom",
        source_path=source,
        pixel_spacing_mm=(spacing[0], spacing[1]) if spacing else None,
        slice_spacing_mm=slice_spacing,
        slice_thickness_mm=thickness,
        slice_thicknesses_mm=per_slice,  # type: ignore[arg-type]
        slice_positions_mm=positions_arr,
        slice_sources=sources,
        orientation=_orientation_name(normal),
        gantry_tilt_deg=tilt,
        was_rgb=colour,
        identifiers=_identifiers(first),
        notes=notes,
        sop_class_uid=_sop_class(first),
        body_part=body_part.strip().upper() if body_part and body_part.strip() else None,
        image_type=_image_type(first),
        slice_normal=tuple(float(v) for v in normal) if normal is not None else None,  # type: ignore[arg-type]
        references=references,
    )


def _sop_class(ds: Dataset) -> str | None:
    sop = ds.get("SOPClassUID")
    meta = getattr(ds, "file_meta", None)
    if not sop and meta is not None:
        sop = meta.get("MediaStorageSOPClassUID")
    return str(sop).strip() or None if sop else None


def _image_type(ds: Dataset) -> tuple[str, ...]:
    value = ds.get("ImageType")
    if value in (None, ""):
        return ()
    values = [value] if isinstance(value, str) else list(value)
    return tuple(str(v).strip().upper() for v in values)


def _slice_identity(ds: Dataset, s: _Slice) -> SliceIdentity:
    return SliceIdentity(
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        sop_class_uid=_sop_class(ds),
        series_instance_uid=_text(ds, "SeriesInstanceUID"),
        study_instance_uid=_text(ds, "StudyInstanceUID"),
        frame_of_reference_uid=_text(ds, "FrameOfReferenceUID"),
        frame_number=s.frame + 1 if s.n_frames > 1 else None,
        image_position_patient=s.position,  # type: ignore[arg-type]
        image_orientation_patient=s.iop,  # type: ignore[arg-type]
    )


def _series_key(ds: Dataset) -> str:
    return str(ds.get("SeriesInstanceUID", "") or "no-series-uid")


def read_dicom_folder(
    folder: Path, series_uid: str | None = None, limits: InputLimits = LIMITS, source: Path | None = None
) -> Scan:
    """Read the one image series in ``folder`` (recursively); several series need ``series_uid``."""
    with _quiet_pydicom():
        return _read_dicom_folder(folder, series_uid, limits, source)


def _choose_series(source: Path, series_uid: str | None, groups: dict[str, tuple[int, Dataset]]) -> str:
    """The key of the one series to read: the only one, or the one ``series_uid`` (index or UID) names."""
    if series_uid is None and len(groups) > 1:
        series = [
            {
                "series_index": k,
                "n_files": n,
                "modality": str(header.get("Modality", "")),
                "series_description": str(header.get("SeriesDescription", "")),
            }
            for k, (n, header) in enumerate(groups.values())
        ]
        listing = "; ".join(
            f"#{s['series_index']}: {s['modality']} '{s['series_description']}' ({s['n_files']} files)" for s in series
        )
        raise MultipleSeriesError(f"{source}: {len(groups)} series found, choose one with --series: {listing}", series)
    if series_uid is None:
        return next(iter(groups))
    if series_uid.isdigit() and int(series_uid) < len(groups):
        return list(groups)[int(series_uid)]
    if series_uid in groups:
        return series_uid
    available = ", ".join(f"#{k}" for k in range(len(groups)))
    raise MultipleSeriesError(
        f"{source}: no series {series_uid!r} here (choose an index: {available}, or a SeriesInstanceUID)", []
    )


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
    key = _choose_series(source, series_uid, {k: (len(v), headers[k]) for k, v in groups.items()})
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
        scan.slice_sources = [_member_name(s, names) for s in scan.slice_sources]
        return scan
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise UnreadableFileError(f"{path}: not a readable zip archive ({one_line(exc)})") from None


def _member_name(source: str, names: dict[str, str]) -> str:
    """'tmp/000003.dcm#2' -> 'archive.zip!member.dcm#2'."""
    file, sep, frame = source.partition("#")
    return names.get(file, file) + sep + frame


def read_dicom_file(path: Path, limits: InputLimits = LIMITS) -> Scan:
    """Read one DICOM file (a slice, or a multi-frame volume)."""
    check_file(path, limits)
    return read_dicom_files([path], path, limits)
