"""What the viewer shows, written once per study when its analysis ends: slice PNGs per display window, one
transparent overlay PNG per lesion class and slice, the class-id masks (for the PNG and NIfTI downloads), and a
transparent heat map PNG (where the detector looked) per explained slice.

Layout under a study's folder: ``slices/<window>/<i>.png``, ``overlays/<class>/<i>.png``,
``overlays/heatmap/<i>.png`` (explained slices only), ``masks.npz``, ``geometry.json``.
HU input gets the four presets of :data:`~strokescan.core.windows.WINDOW_PRESETS`; 8-bit images (already
windowed by whoever exported them) one window, ``stored``.
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np

from strokescan.core.labels import LESION_CLASSES
from strokescan.core.windows import WINDOW_PRESETS, apply_window
from strokescan.io import Scan
from strokescan.io.writers import SliceMap, heatmap_rgba

STORED_WINDOW = "stored"
HEATMAP_OVERLAY = "heatmap"  # the overlay name of the detector's heat maps


def windows_for(is_hu: bool) -> list[str]:
    """Window names the viewer offers for a scan."""
    return list(WINDOW_PRESETS) if is_hu else [STORED_WINDOW]


def _png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode {path.name}")
    path.write_bytes(data.tobytes())


def render_study(scan: Scan, masks: list[np.ndarray] | None, folder: Path,
                 heatmaps: Sequence[SliceMap] | None = None) -> None:
    """Write the PNG cache, the masks, the explained slices' heat maps and the geometry (``geometry.json``) of one
    analysed scan into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "geometry.json").write_text(json.dumps({
        "pixel_spacing_mm": scan.pixel_spacing_mm, "slice_mm": scan.slice_spacing_mm or scan.slice_thickness_mm,
        "is_hu": scan.is_hu}))
    for window in windows_for(scan.is_hu):
        for i, pixels in enumerate(scan.pixels):
            unit = apply_window(pixels, window) if scan.is_hu else np.clip(pixels / 255.0, 0, 1)
            _png(folder / "slices" / window / f"{i}.png", (unit * 255).astype(np.uint8))
    shutil.rmtree(folder / "overlays" / HEATMAP_OVERLAY, ignore_errors=True)  # none left from an earlier analysis
    for m in heatmaps or []:
        rgba = heatmap_rgba(m.heat, m.peak)
        _png(folder / "overlays" / HEATMAP_OVERLAY / f"{m.slice_index}.png", rgba[..., [2, 1, 0, 3]])  # BGRA
    if masks is None:
        return
    np.savez_compressed(folder / "masks.npz", masks=np.stack(masks).astype(np.uint8))
    for c in LESION_CLASSES:
        r, g, b = c.colour
        for i, mask in enumerate(masks):
            rgba = np.zeros((*mask.shape, 4), np.uint8)
            inside = mask == c
            rgba[inside] = (b, g, r, 110)  # OpenCV writes BGRA
            edge = inside & ~cv2.erode(inside.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            rgba[edge] = (b, g, r, 255)
            _png(folder / "overlays" / c.label / f"{i}.png", rgba)


def study_geometry(folder: Path) -> dict:
    """What :func:`render_study` recorded: ``pixel_spacing_mm``, ``slice_mm``, ``is_hu``."""
    return json.loads((folder / "geometry.json").read_text())


def masks_nifti(folder: Path, scan_spacing: tuple[float, float] | None, slice_mm: float | None) -> bytes:
    """The study's class-id masks as a gzipped NIfTI (spacing in the header when known, else 1 mm)."""
    masks = np.load(folder / "masks.npz")["masks"]
    row, col = scan_spacing or (1.0, 1.0)
    affine = np.diag([col, row, slice_mm or 1.0, 1.0])
    image = nib.Nifti1Image(np.ascontiguousarray(masks.transpose(2, 1, 0)), affine)
    image.header.set_xyzt_units("mm")
    return gzip.compress(image.to_bytes(), compresslevel=6)


def mask_png(folder: Path, index: int) -> bytes:
    """One slice's class-id mask as an 8-bit PNG (values are :class:`~strokescan.core.labels.LesionClass` ids)."""
    masks = np.load(folder / "masks.npz")["masks"]
    if not 0 <= index < len(masks):
        raise IndexError(index)
    ok, data = cv2.imencode(".png", masks[index])
    return data.tobytes()
