"""The lesion step of inference: class-id masks in the scan's own pixel grid from the U-Net.

Class ids are :class:`~strokescan.core.labels.LesionClass` (0 background, 1 hemorrhage, 2 perihematomal
edema, 3 ischemic infarct).
"""

from __future__ import annotations

from concurrent.futures import Executor
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi

from strokescan.config import BUNDLED_MODELS_DIR
from strokescan.core.geometry import from_model_frame
from strokescan.io.scan import Scan
from strokescan.models.unet import load_segmenter
from strokescan.preprocessing.masking import head_masks
from strokescan.preprocessing.pipeline import PreparedSlice

DEFAULT_SEGMENTER_DIR = BUNDLED_MODELS_DIR / "segmenter"


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
    if not ids.any():  # nothing to keep or drop (most slices): skip the head mask
        return ids.astype(np.uint8)
    ids = np.where(head_masks(pixels, is_hu).head, ids, 0).astype(np.uint8)
    return remove_small(ids, min_px)


class Segmenter:
    """Owns the lesion U-Net: probabilities in the model frame, masks on the scan's pixel grid."""

    def __init__(self, model_dir: Path | str | None = None, batch_size: int = 4) -> None:
        self.model, self.plan = load_segmenter(Path(model_dir or DEFAULT_SEGMENTER_DIR))
        self.model.to(memory_format=torch.channels_last)  # about 20 % faster convolutions on CPU
        self.batch_size = batch_size

    @property
    def model_info(self) -> dict[str, str]:
        return {"segmenter_sha256": self.plan.weights_sha256[:16], "segmenter_arch": self.plan.unet.arch}

    def probabilities(self, prepared: list[PreparedSlice]) -> np.ndarray:
        """(n, C, S, S) float32 softmax in the model frame, for slices prepared with this model's plan."""
        x = torch.from_numpy(np.stack([p.channels for p in prepared])).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            probs = [torch.softmax(self.model(x[i:i + self.batch_size]), 1) for i in range(0, len(x), self.batch_size)]
        return torch.cat(probs).numpy()

    def masks(self, scan: Scan, prepared: list[PreparedSlice], pool: Executor | None = None) -> list[np.ndarray]:
        """One ``(rows, cols)`` uint8 class-id mask per slice, on the scan's own pixel grid (slices mapped back
        in ``pool``'s threads when one is given)."""
        probs = self.probabilities(prepared)
        shape = scan.pixels.shape[1:]

        def back_to_input(i: int) -> np.ndarray:
            ids = from_model_frame(probs[i], prepared[i].box, prepared[i].rotation_deg, shape)
            return postprocess(ids, scan.pixels[i], scan.is_hu, self.plan.min_lesion_px)

        return list((pool.map if pool is not None else map)(back_to_input, range(len(prepared))))
