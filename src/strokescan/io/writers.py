"""Writing masks for programs and overlays for people: one PNG per slice, named ``<stem>.png`` for a 2-D
image and ``<stem>_<slice_index>.png`` for a volume. Heat maps (where the detector looked) are drawn the same way."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from strokescan.core.labels import LESION_CLASSES
from strokescan.core.windows import display_unit
from strokescan.io.scan import Scan


def overlay_image(pixels: np.ndarray, is_hu: bool, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB uint8 image: the slice in grey (HU through the 40/120 window) with coloured, outlined lesions."""
    grey = (display_unit(pixels, is_hu) * 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=-1).astype(np.float32)
    for c in LESION_CLASSES:
        m = mask == c
        if not m.any():
            continue
        rgb[m] = (1 - alpha) * rgb[m] + alpha * np.array(c.colour, np.float32)
        edge = m & ~ndi.binary_erosion(m)
        rgb[edge] = c.colour
    return np.clip(rgb, 0, 255).astype(np.uint8)


class SliceMap(Protocol):
    """What the heat map writers need of a map (:class:`strokescan.inference.explanations.HeatMap` has it)."""

    slice_index: int  # position of the slice in the scan
    heat: np.ndarray  # (rows, cols) in [0, 1] on the slice's grid
    peak: tuple[int, int] | None  # (row, col) of the maximum; None for an all-zero map


def heatmap_rgba(heat: np.ndarray, peak: tuple[int, int] | None, max_alpha: float = 0.6) -> np.ndarray:
    """RGBA uint8: the map in OpenCV's JET colours, its opacity rising with the heat (transparent where it is 0), and
    a white cross at its peak."""
    unit = np.clip(np.asarray(heat, np.float32), 0.0, 1.0)
    rgba = np.zeros((*unit.shape, 4), np.uint8)
    rgba[..., :3] = cv2.applyColorMap((unit * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]  # BGR -> RGB
    rgba[..., 3] = (unit * max_alpha * 255).astype(np.uint8)
    if peak is not None:
        size = max(9, max(unit.shape) // 20)
        marker = np.zeros(unit.shape, np.uint8)
        cv2.drawMarker(marker, (int(peak[1]), int(peak[0])), 255, cv2.MARKER_CROSS, size, max(1, size // 6))
        rgba[marker > 0] = (255, 255, 255, 255)
    return rgba


def heatmap_image(pixels: np.ndarray, is_hu: bool, heat: np.ndarray, peak: tuple[int, int] | None) -> np.ndarray:
    """RGB uint8 image: the slice in grey (HU through the 40/120 window) under :func:`heatmap_rgba`."""
    grey = (display_unit(pixels, is_hu) * 255).astype(np.float32)[..., None]
    rgba = heatmap_rgba(heat, peak).astype(np.float32)
    alpha = rgba[..., 3:] / 255.0
    return np.clip((1 - alpha) * grey + alpha * rgba[..., :3], 0, 255).astype(np.uint8)


def slice_file_name(stem: str, i: int, n: int) -> str:
    """``<stem>_<i>.png`` in a volume of ``n`` slices, ``<stem>.png`` for a single slice."""
    return f"{stem}_{i}.png" if n > 1 else f"{stem}.png"


def _save_each(images: list[tuple[int, np.ndarray]], n: int, folder: Path | str, stem: str) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in images:
        p = folder / slice_file_name(stem, i, n)
        Image.fromarray(img).save(p)
        paths.append(p)
    return paths


def write_masks(masks: list[np.ndarray], folder: Path | str, stem: str = "mask") -> list[Path]:
    """Write one 8-bit PNG per slice holding class ids (:class:`~strokescan.core.labels.LesionClass`)."""
    return _save_each([(i, np.asarray(m, np.uint8)) for i, m in enumerate(masks)], len(masks), folder, stem)


def write_overlays(scan: Scan, masks: list[np.ndarray], folder: Path | str, stem: str = "overlay",
                   only_lesion_slices: bool = False, max_side: int | None = None) -> list[Path]:
    """Write colour overlays (red hemorrhage, yellow edema, blue infarct), one PNG per slice."""
    images = []
    for i, m in enumerate(masks):
        if only_lesion_slices and not m.any():
            continue
        img = overlay_image(scan.pixels[i], scan.is_hu, m)
        if max_side and max(img.shape[:2]) > max_side:
            f = max_side / max(img.shape[:2])
            img = cv2.resize(img, (round(img.shape[1] * f), round(img.shape[0] * f)), interpolation=cv2.INTER_AREA)
        images.append((i, img))
    return _save_each(images, len(masks), folder, stem)


def write_heatmaps(scan: Scan, maps: Sequence[SliceMap], folder: Path | str, stem: str = "heatmap") -> list[Path]:
    """Write one PNG per map: the slice in grey under the map and a cross at its peak (:func:`heatmap_image`),
    named like the overlays."""
    images = [(m.slice_index, heatmap_image(scan.pixels[m.slice_index], scan.is_hu, m.heat, m.peak)) for m in maps]
    return _save_each(images, scan.n_slices, folder, stem)
