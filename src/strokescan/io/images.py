"""JPEG/PNG slices: 8-bit, already windowed, grayscale or RGB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from strokescan.config import LIMITS, InputLimits
from strokescan.errors import UnreadableFileError
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
                arr = np.asarray(img, dtype=np.float32)
                arr = arr * (255.0 / max(float(arr.max()), 1.0))
            elif mode == "L":
                arr = np.asarray(img, dtype=np.float32)
            else:
                rgb = np.asarray(img.convert("RGB"), dtype=np.float32)
                # Grey pictures saved as RGB keep their values; coloured ones become luminance.
                if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
                    arr = rgb[..., 0]
                else:
                    arr = np.asarray(img.convert("L"), dtype=np.float32)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UnreadableFileError(f"{path}: cannot decode the image ({exc})") from None
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
