"""Checks shared by the readers: existence, emptiness and size limits."""

from __future__ import annotations

from pathlib import Path

from strokescan.config import LIMITS, InputLimits
from strokescan.errors import EmptyInputError, InputTooLargeError, PathNotFoundError


def check_file(path: Path, limits: InputLimits = LIMITS) -> int:
    """Refuse a missing, empty or oversized file; return its size in bytes."""
    if not path.exists():
        raise PathNotFoundError(f"{path}: no such file or folder")
    size = path.stat().st_size
    if size == 0:
        raise EmptyInputError(f"{path}: the file is empty (0 bytes)")
    if size > limits.max_file_bytes:
        raise InputTooLargeError(
            f"{path}: {size / 2**20:.0f} MiB is over the {limits.max_file_bytes / 2**20:.0f} MiB limit per file"
        )
    return size


def check_pixels(path: Path, shape: tuple[int, ...], limits: InputLimits = LIMITS) -> None:
    """Refuse images whose pixel count is over the limits (before decoding where possible)."""
    if len(shape) >= 2 and shape[-1] * shape[-2] > limits.max_pixels_per_slice:
        raise InputTooLargeError(f"{path}: a {shape[-2]}x{shape[-1]} image is over the per-slice pixel limit")
    total = 1
    for n in shape:
        total *= int(n)
    if total > limits.max_voxels:
        raise InputTooLargeError(f"{path}: {total} voxels is over the limit of {limits.max_voxels}")
