"""JPEG/PNG slices: 8-bit, already windowed, grayscale or RGB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from strokescan.config import LIMITS, InputLimits
from strokescan.errors import InputTooLargeError, StrokescanError, UnreadableFileError
from strokescan.io.limits import check_file, check_pixels
from strokescan.io.scan import Scan

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def read_image(path: Path, limits: InputLimits = LIMITS) -> Scan:
    """Read one JPEG or PNG as a one-slice :class:`Scan` of display values (no HU, no spacing)."""
    check_file(path, limits)
    try:
        with Image.open(path) as img:
            check_pixels(path, (img.height, img.width), limits)  # before decoding: no decompression bomb
            img.load()
            mode = img.mode
            was_rgb = mode in {"RGB", "RGBA", "P", "CMYK", "YCbCr"}
            if mode in {"I;16", "I;16B", "I;16L", "I"}:
                wide = np.clip(np.asarray(img, dtype=np.float64), 0, None)
                arr = np.clip(wide * (255.0 / max(float(wide.max()), 1.0)), 0, 255).astype(np.float32)
            elif mode == "L":
                arr = np.asarray(img, dtype=np.float32)
            else:
                rgb = np.asarray(img.convert("RGB"), dtype=np.float32)
                # Grey pictures saved as RGB keep their values; coloured ones become luminance.
                if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
                    arr = rgb[..., 0]
                else:
                    arr = np.asarray(img.convert("L"), dtype=np.float32)
    except StrokescanError:
        raise
    except Image.DecompressionBombError:
        raise InputTooLargeError(f"{path}: the image is over the per-slice pixel limit") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise UnreadableFileError(f"{path}: cannot decode the image ({' '.join(str(exc).split())[:300]})") from None
    except Exception as exc:  # noqa: BLE001 - a corrupt file can make a decoder raise anything
        raise UnreadableFileError(f"{path}: cannot decode the image ({type(exc).__name__})") from None
    return Scan(
        pixels=arr[np.newaxis],
        is_hu=False,
        modality="OT",
        source_format="image",
        source_path=path,
        slice_sources=[str(path)],
        was_rgb=was_rgb,
        notes=["8-bit display values: no Hounsfield units, no pixel spacing"],
    )
