"""Per-slice lesion masks for a :class:`~strokescan.io.Scan`, in the scan's own pixel grid, and colour overlays.

API (for :class:`strokescan.prediction.Predictor` and the CLI's ``--masks-dir`` / ``--overlays-dir``)::

    seg = Segmenter(model_dir)                # loads and checks the model once
    masks = seg.segment(scan)                  # list of (rows, cols) uint8 class ids, one per slice
    quant = seg.quantify(scan, masks)          # areas / volumes / largest lesion / ABC/2 (units stated)
    write_masks(masks, folder, stem)           # PNG class-id masks (0..3)
    write_overlays(scan, masks, folder, stem)  # PNG colour overlays

Class ids: 0 background, 1 hemorrhage, 2 perihematomal edema, 3 ischemic infarct (:data:`CLASSES`).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from scipy import ndimage as ndi

from strokescan.config import BUNDLED_MODELS_DIR
from strokescan.datasets.segmentation import from_model_frame
from strokescan.io.scan import Scan
from strokescan.models.unet import CLASSES, load_segmenter
from strokescan.preprocessing.pipeline import PreparedSlice, display_unit, prepare_slice
from strokescan.quantification import SeriesQuantification, quantify_series

DEFAULT_SEGMENTER_DIR = BUNDLED_MODELS_DIR / "segmenter"
#: overlay colours (RGB) per class id
COLOURS = {1: (255, 40, 40), 2: (255, 210, 0), 3: (40, 140, 255)}


def remove_small(mask: np.ndarray, min_px: int) -> np.ndarray:
    """Class-id mask with connected components (8-connected, per class) smaller than ``min_px`` set to 0."""
    if min_px <= 1:
        return mask
    out = mask.copy()
    for c in np.unique(mask):
        if c == 0:
            continue
        labels, n = ndi.label(mask == c, structure=np.ones((3, 3)))
        if n:
            sizes = np.bincount(labels.ravel())
            small = sizes < min_px
            small[0] = False
            out[small[labels]] = 0
    return out


def postprocess(ids: np.ndarray, pixels: np.ndarray, is_hu: bool, min_px: int) -> np.ndarray:
    """Lesions only inside the head (``head_masks``), components under ``min_px`` dropped (training's
    evaluation and :class:`Segmenter` both use this)."""
    from strokescan.preprocessing.masking import head_masks

    ids = np.where(head_masks(pixels, is_hu).head, ids, 0).astype(np.uint8)
    return remove_small(ids, min_px)


class Segmenter:
    """Loads a segmentation model once; :meth:`segment` returns class-id masks in the input's grid."""

    def __init__(self, model_dir: Path | str | None = None, batch_size: int = 8) -> None:
        self.model, self.plan = load_segmenter(Path(model_dir or DEFAULT_SEGMENTER_DIR))
        self.batch_size = batch_size

    @property
    def classes(self) -> tuple[str, ...]:
        return CLASSES

    @property
    def model_info(self) -> dict[str, str]:
        return {"segmenter_sha256": self.plan.weights_sha256[:16], "segmenter_arch": self.plan.unet.arch}

    @torch.no_grad()
    def probabilities(self, scan: Scan, rotation_deg: float | None = None,
                      prepared: list[PreparedSlice] | None = None) -> tuple[list[PreparedSlice], np.ndarray]:
        """(list of PreparedSlice, (n, C, S, S) float32 softmax in the model frame). ``prepared``: the slices
        already prepared with this model's plan (the Predictor prepares once for both models)."""
        from strokescan.preprocessing.orientation import analysis_rotation

        if prepared is None:
            angle = rotation_deg if rotation_deg is not None else analysis_rotation(scan, self.plan.slice_plan.correct_rotation)
            prepared = [prepare_slice(scan.pixels[i], scan.is_hu, self.plan.slice_plan, angle)
                        for i in range(scan.n_slices)]
        x = torch.from_numpy(np.stack([p.channels for p in prepared]))
        probs = [torch.softmax(self.model(x[i:i + self.batch_size]), 1) for i in range(0, len(x), self.batch_size)]
        return prepared, torch.cat(probs).numpy()

    def segment(self, scan: Scan, rotation_deg: float | None = None,
                prepared: list[PreparedSlice] | None = None) -> list[np.ndarray]:
        """One ``(rows, cols)`` uint8 class-id mask per slice, on the scan's own pixel grid.

        ``rotation_deg`` (counter-clockwise angle of the slices from upright) overrides the estimate;
        ``prepared`` (see :meth:`probabilities`) skips the preprocessing.
        """
        prepared, probs = self.probabilities(scan, rotation_deg, prepared)
        shape = scan.pixels.shape[1:]
        return [postprocess(from_model_frame(probs[i], p.box, p.rotation_deg, shape), scan.pixels[i], scan.is_hu,
                            self.plan.min_lesion_px) for i, p in enumerate(prepared)]

    def quantify(self, scan: Scan, masks: list[np.ndarray]) -> SeriesQuantification:
        """Sizes for ``masks`` with the scan's spacing (pixels/voxels, labelled, when spacing is unknown)."""
        slice_mm = (scan.slice_spacing_mm or scan.slice_thickness_mm) if scan.is_volume else scan.slice_thickness_mm
        return quantify_series(masks, scan.pixel_spacing_mm, slice_mm)


def overlay_image(pixels: np.ndarray, is_hu: bool, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB uint8 image: the slice in grey (HU through the 40/120 window) with coloured, outlined lesions."""
    grey = (display_unit(pixels, is_hu) * 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=-1).astype(np.float32)
    for c, colour in COLOURS.items():
        m = mask == c
        if not m.any():
            continue
        rgb[m] = (1 - alpha) * rgb[m] + alpha * np.array(colour, np.float32)
        edge = m & ~ndi.binary_erosion(m)
        rgb[edge] = colour
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _name(stem: str, i: int, n: int) -> str:
    return f"{stem}_{i}.png" if n > 1 else f"{stem}.png"


def write_masks(masks: list[np.ndarray], folder: Path | str, stem: str = "mask") -> list[Path]:
    """Write one 8-bit PNG per slice holding class ids 0..3; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, m in enumerate(masks):
        p = folder / _name(stem, i, len(masks))
        Image.fromarray(np.asarray(m, np.uint8)).save(p)
        paths.append(p)
    return paths


def write_overlays(scan: Scan, masks: list[np.ndarray], folder: Path | str, stem: str = "overlay",
                   only_lesion_slices: bool = False, max_side: int | None = None) -> list[Path]:
    """Write colour overlays (red hemorrhage, yellow edema, blue infarct), one PNG per slice."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, m in enumerate(masks):
        if only_lesion_slices and not m.any():
            continue
        img = overlay_image(scan.pixels[i], scan.is_hu, m)
        if max_side and max(img.shape[:2]) > max_side:
            f = max_side / max(img.shape[:2])
            img = cv2.resize(img, (round(img.shape[1] * f), round(img.shape[0] * f)), interpolation=cv2.INTER_AREA)
        p = folder / _name(stem, i, len(masks))
        Image.fromarray(img).save(p)
        paths.append(p)
    return paths
