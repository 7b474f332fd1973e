"""Readers: :func:`load_scan` turns a path (image, DICOM file/folder/zip, NIfTI) or in-memory DICOM datasets
into a :class:`Scan`; :func:`scope_problem` says whether the models were made for it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydicom.dataset import Dataset

from strokescan.config import LIMITS, InputLimits
from strokescan.errors import EmptyInputError, PathNotFoundError, UnsupportedFormatError
from strokescan.io.dicom import (
    has_dicom_magic,
    read_dicom_file,
    read_dicom_folder,
    read_dicom_zip,
    read_header,
    scan_from_datasets,
)
from strokescan.io.images import IMAGE_SUFFIXES, read_image
from strokescan.io.limits import check_file
from strokescan.io.nifti import is_nifti_path, read_nifti
from strokescan.io.scan import Scan, ScanIdentifiers, SliceIdentity
from strokescan.io.scope import require_in_scope, scope_problem

__all__ = [
    "Scan",
    "ScanIdentifiers",
    "SliceIdentity",
    "discover_inputs",
    "load_scan",
    "require_in_scope",
    "scan_from_datasets",
    "scope_problem",
    "sniff_format",
]

_MAGIC = {b"\xff\xd8\xff": "image", b"\x89PNG": "image", b"PK\x03\x04": "zip", b"PK\x05\x06": "zip"}


def sniff_format(path: Path, limits: InputLimits = LIMITS) -> str:
    """'image', 'dicom', 'nifti' or 'zip' for a file, from its content first and its name second."""
    check_file(path, limits)
    with open(path, "rb") as fh:
        head = fh.read(352)
    for magic, kind in _MAGIC.items():
        if head.startswith(magic):
            return kind
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if is_nifti_path(path) or head[344:348] in (b"n+1\x00", b"ni1\x00"):
        return "nifti"
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return "image"  # named like an image but not one: the image reader says why
    if read_header(path) is not None:
        return "dicom"  # DICOM without preamble (e.g. old GE files)
    raise UnsupportedFormatError(
        f"{path}: unsupported file type (strokescan reads JPEG/PNG, DICOM, NIfTI .nii/.nii.gz, or a .zip of DICOM)"
    )


def load_scan(
    path: str | Path | Dataset | Sequence[Dataset], series: str | None = None, limits: InputLimits = LIMITS
) -> Scan:
    """Read ``path`` into a :class:`Scan`.

    ``path`` may be a JPEG/PNG slice, a DICOM file, a folder or .zip holding a DICOM series, a NIfTI
    volume, or in-memory :class:`pydicom.Dataset` objects (one, or a list: one series; see
    :func:`scan_from_datasets`). ``series`` picks one series (its index or SeriesInstanceUID) where a folder
    holds several. Raises a subclass of :class:`strokescan.errors.InputError` for anything it cannot read.
    """
    if isinstance(path, Dataset) or (isinstance(path, Sequence) and not isinstance(path, (str, bytes))):
        return scan_from_datasets(path, series=series, limits=limits)  # type: ignore[arg-type]
    path = Path(path)
    if not path.exists():
        raise PathNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        return read_dicom_folder(path, series, limits)
    kind = sniff_format(path, limits)
    if kind == "image":
        return read_image(path, limits)
    if kind == "nifti":
        return read_nifti(path, limits)
    if kind == "zip":
        return read_dicom_zip(path, series, limits)
    return read_dicom_file(path, limits)


def _is_dicom_candidate(path: Path) -> bool:
    return path.suffix.lower() in {".dcm", ".dicom", ".ima", ""} or has_dicom_magic(path)


def discover_inputs(path: str | Path) -> list[Path]:
    """Split a user-given path into scan paths: a DICOM folder is one scan; images/NIfTI are one each.

    A folder whose files are DICOM (directly) is returned as itself; other folders are walked and each
    image, NIfTI or zip file is its own scan, and each sub-folder holding DICOM is one scan.
    """
    path = Path(path)
    if not path.exists():
        raise PathNotFoundError(f"{path}: no such file or folder")
    if path.is_file():
        return [path]
    found = _discover_folder(path)
    if not found:
        raise EmptyInputError(f"{path}: no readable scans (images, DICOM, NIfTI) in this folder")
    return found


def _discover_folder(path: Path) -> list[Path]:
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    dicom_here = [p for p in files if p.stat().st_size > 0 and _is_dicom_candidate(p) and read_header(p) is not None]
    found: list[Path] = [path] if dicom_here else []
    for p in files:
        if p in dicom_here:
            continue
        if p.suffix.lower() in IMAGE_SUFFIXES | {".zip"} or is_nifti_path(p):
            found.append(p)
    for sub in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found.extend(_discover_folder(sub))  # an empty sub-folder is skipped, not an error
    return found
