"""NIfTI volumes (.nii, .nii.gz) with nibabel, reoriented to radiological axial slices."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np

from strokescan.config import LIMITS, InputLimits
from strokescan.errors import StrokescanError, UnreadableFileError
from strokescan.io.limits import check_file, check_pixels
from strokescan.io.scan import Scan

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti_path(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def _looks_like_hu(data: np.ndarray) -> bool:
    """CT volumes in HU hold air near -1000 and bone above +300."""
    lo, hi = np.percentile(data, [1, 99.9])
    return bool(lo < -500 and hi > 100)


def read_nifti(path: Path, limits: InputLimits = LIMITS) -> Scan:
    """Read a NIfTI volume as axial slices, anterior up and patient right on image left, inferior first."""
    check_file(path, limits)
    try:
        img = nib.load(str(path))
        check_pixels(path, tuple(int(n) for n in img.shape[:3]), limits)
        img = nib.as_closest_canonical(img)  # RAS+: x to the right, y to anterior, z to superior
        data = np.asarray(img.dataobj, dtype=np.float32)
    except StrokescanError:
        raise
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError, gzip.BadGzipFile) as exc:
        raise UnreadableFileError(f"{path}: cannot read the NIfTI file ({' '.join(str(exc).split())[:300]})") from None
    except Exception as exc:  # noqa: BLE001 - zlib.error, HeaderDataError, ...: all mean "cannot read"
        raise UnreadableFileError(f"{path}: cannot read the NIfTI file ({type(exc).__name__})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., np.newaxis]
    if data.ndim != 3:
        raise UnreadableFileError(f"{path}: expected a 3-D volume, found {data.ndim} dimensions")
    # (x, y, z) -> (z, rows, cols): row 0 is the most anterior, column 0 the patient's right.
    pixels = np.ascontiguousarray(np.transpose(data, (2, 1, 0))[:, ::-1, ::-1])
    zooms = img.header.get_zooms()[:3]
    is_hu = _looks_like_hu(data)
    notes = ["HU inferred from the value range" if is_hu else "values are not Hounsfield units"]
    return Scan(
        pixels=pixels,
        is_hu=is_hu,
        modality="CT" if is_hu else "OT",
        source_format="nifti",
        source_path=path,
        pixel_spacing_mm=(float(zooms[1]), float(zooms[0])),
        slice_spacing_mm=float(zooms[2]),
        slice_thickness_mm=float(zooms[2]),
        slice_positions_mm=np.arange(pixels.shape[0], dtype=np.float64) * float(zooms[2]),
        slice_sources=[f"{path}#{k}" for k in range(pixels.shape[0])],
        orientation="axial",
        notes=notes,
    )
