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
from strokescan.core.labels import HEMORRHAGE
from strokescan.io.scan import Scan
from strokescan.models.unet import SegmenterPlan, load_segmenter
from strokescan.preprocessing.density import hyperdense
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


def decide_clot(probs: np.ndarray, weight: float = 1.0, min_confidence: float = 0.0) -> np.ndarray:
    """Class probabilities ``(C, S, S)`` (model frame) with the plan's calibrated clot decision: the clot
    probability times ``weight``, and each clot component of the resulting argmax (8-connected) whose peak clot
    probability is below ``min_confidence`` handed to the next most likely class. The defaults change nothing."""
    if weight == 1.0 and min_confidence <= 0.0:
        return probs
    out = probs.astype(np.float32, copy=True)
    out[HEMORRHAGE] *= weight
    if min_confidence > 0.0:
        labels, n = ndi.label(out.argmax(0) == HEMORRHAGE, structure=np.ones((3, 3)))
        if n:
            peaks = ndi.maximum(probs[HEMORRHAGE].astype(np.float32), labels, index=np.arange(1, n + 1))
            weak = np.concatenate([[False], np.asarray(peaks) < min_confidence])
            out[HEMORRHAGE][weak[labels]] = 0.0
    return out


def clot_decision_text(plan: SegmenterPlan, gated: bool = False) -> str:
    """The plan's clot decision in words (results name it: the weights' checksum does not cover it); ``gated``:
    the detector gate is applied (the Predictor has the detector it was set for)."""
    text = f"weight {plan.hemorrhage_weight:g}, min confidence {plan.min_hemorrhage_confidence:g}"
    if plan.clot_within_brain_px >= 0:
        text += f", inside the skull + {plan.clot_within_brain_px} px"
    if plan.min_slice_probability > 0:
        text += f", detector gate {plan.min_slice_probability:g}" + ("" if gated else " (off: other detector)")
    if plan.clot_growth_k > 0 and plan.clot_growth_px > 0:
        text += f", growth k {plan.clot_growth_k:g} within {plan.clot_growth_px} px"
    return text


def to_input_mask(probs: np.ndarray, box: tuple[int, int, int, int], rotation_deg: float,
                  pixels: np.ndarray, is_hu: bool, plan: SegmenterPlan,
                  slice_probability: float | None = None) -> np.ndarray:
    """One slice's model-frame probabilities -> its class-id mask on the input grid, with the plan's clot
    decision, lesions inside the skull (clot within the plan's margin of the brain mask), the minimum component
    size, the detector gate (when the detector's ``slice_probability`` is given) and the clot growth (inference
    and evaluation share this)."""
    probs = decide_clot(probs, plan.hemorrhage_weight, plan.min_hemorrhage_confidence)
    ids = from_model_frame(probs, box, rotation_deg, pixels.shape)  # a new uint8 array: edited in place below
    if slice_probability is not None and slice_probability < plan.min_slice_probability:
        ids[ids == HEMORRHAGE] = 0
    if not ids.any():  # nothing to keep or drop (most slices): skip the head masks
        return ids
    masks = head_masks(pixels, is_hu)
    ids[~masks.head] = 0
    ids[~_grown(masks.brain, max(plan.clot_within_brain_px, 0))] = 0  # every lesion class inside the skull
    ids = remove_small(ids, plan.min_lesion_px)
    return grow_clot(ids, pixels, is_hu, masks.brain, plan.clot_growth_k, plan.clot_growth_px)


def _grown(mask: np.ndarray, px: int) -> np.ndarray:
    """``mask`` dilated by ``px`` pixels (Euclidean)."""
    return mask if px <= 0 else ndi.distance_transform_edt(~mask) <= px


def grow_clot(ids: np.ndarray, pixels: np.ndarray, is_hu: bool, brain: np.ndarray, k: float,
              max_px: int) -> np.ndarray:
    """Class-id mask whose clot has grown into the background pixels of the ``brain`` mask that are hyperdense
    (:func:`~strokescan.preprocessing.density.hyperdense` with factor ``k``) and connected to it through such
    pixels, at most ``max_px`` pixels away. It starts from the network's clot only, so no slice gains clot where
    it had none; ``k <= 0`` changes nothing."""
    clot = ids == HEMORRHAGE
    if k <= 0 or max_px <= 0 or not clot.any():
        return ids
    allowed = hyperdense(pixels, is_hu, brain, k) & (ids == 0)
    allowed &= ndi.distance_transform_edt(~clot) <= max_px
    grown = ndi.binary_propagation(clot, structure=np.ones((3, 3), bool), mask=clot | allowed)
    out = ids.copy()
    out[grown] = HEMORRHAGE
    return out


class Segmenter:
    """Owns the lesion U-Net: probabilities in the model frame, masks on the scan's pixel grid."""

    def __init__(self, model_dir: Path | str | None = None, batch_size: int = 4) -> None:
        self.model, self.plan = load_segmenter(Path(model_dir or DEFAULT_SEGMENTER_DIR))
        self.model.to(memory_format=torch.channels_last)  # about 20 % faster convolutions on CPU
        self.batch_size = batch_size

    def model_info(self, gated: bool = False) -> dict[str, str]:
        """What results name of this model (``gated``: its detector gate is applied)."""
        return {"segmenter_sha256": self.plan.weights_sha256[:16], "segmenter_arch": self.plan.unet.arch,
                "segmenter_clot_decision": clot_decision_text(self.plan, gated)}

    def gates_with(self, detector_sha256: str) -> bool:
        """Whether the plan's detector gate applies with the detector of these weights (the one it was set for)."""
        return self.plan.min_slice_probability > 0 and self.plan.gate_detector_sha256 == detector_sha256

    def probabilities(self, prepared: list[PreparedSlice]) -> np.ndarray:
        """(n, C, S, S) float32 softmax in the model frame, for slices prepared with this model's plan."""
        x = torch.from_numpy(np.stack([p.channels for p in prepared])).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            probs = [torch.softmax(self.model(x[i:i + self.batch_size]), 1) for i in range(0, len(x), self.batch_size)]
        return torch.cat(probs).numpy()

    def masks(self, scan: Scan, prepared: list[PreparedSlice], pool: Executor | None = None,
              slice_probability: np.ndarray | None = None) -> list[np.ndarray]:
        """One ``(rows, cols)`` uint8 class-id mask per slice, on the scan's own pixel grid (slices mapped back
        in ``pool``'s threads when one is given); ``slice_probability``: the detector's per slice, for the gate."""
        probs = self.probabilities(prepared)

        def back_to_input(i: int) -> np.ndarray:
            return to_input_mask(probs[i], prepared[i].box, prepared[i].rotation_deg, scan.pixels[i], scan.is_hu,
                                 self.plan, None if slice_probability is None else float(slice_probability[i]))

        return list((pool.map if pool is not None else map)(back_to_input, range(len(prepared))))
