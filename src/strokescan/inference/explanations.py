"""Where the detector looked, and where the segmenter is unsure: heat maps on the scan's own pixel grid.

Methods come from MONAI (:mod:`monai.visualize`), not hand-written:

``gradcam`` / ``gradcampp``
    Grad-CAM (Selvaraju et al. 2017) / Grad-CAM++ (Chattopadhyay et al. 2018) of one detector output's logit
    *of the slice alone* (``fc(embed(trunk(x)))``, the context-free logit the training loss also scores). The
    reported probability adds the slice-context correction from the neighbouring slices; a per-slice map
    cannot attribute that correction to pixels of one slice, so it is left out (see docs/explanations.md).
    ``layer`` picks the feature map: ``"head"`` (the head convolution after BN and ReLU6, 7 x 7 for a 224-px
    input: what the global pooling averages, so Grad-CAM there is the class activation map), ``"block13"``
    (the last frozen block, 7 x 7), ``"block10"`` (the last 14 x 14 block, finer) or ``"block7"`` (14 x 14,
    the end of the 80-channel stage).
``vanillagrad`` / ``smoothgrad``
    MONAI's input gradients (Simonyan et al. 2014) / SmoothGrad (Smilkov et al. 2017, 8 noisy copies): the
    largest absolute gradient over the three input channels per pixel, blurred (Gaussian, sigma 1/56 of the
    input side) so that the maximum marks a region rather than one pixel.
``occlusion``
    MONAI's occlusion sensitivity: the drop of the same logit when a Gaussian-weighted square (1/7 of the
    input side) is blanked, on a grid with half-square overlap (about 170 forward passes per 224-px slice).

Maps are computed in the model frame (the upright head crop resized to the input size) and mapped back the
way the segmenter's masks are (:func:`strokescan.core.geometry.from_model_frame`: resized to the crop box,
pasted into the turned slice's grid, turned back by the slice's angle), but linearly, since a heat map is
continuous. Each is scaled to [0, 1] by its maximum (0 = no evidence); a map that is zero everywhere (Grad-CAM
with no positive evidence) has no peak.

``segmentation_uncertainty``: the spread (standard deviation, doubled so that 1 is the largest possible) of
the segmenter's lesion probability (1 - background) over test-time augmentations: identity, left-right flip
and two small shifts, each undone on the probabilities before comparing.

This module imports numpy, torch, OpenCV and (lazily, on first use) MONAI only: the inference layer stays light.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn

from strokescan.core.geometry import Box, rotate_image
from strokescan.errors import ModelError
from strokescan.models.classifier import SliceClassifier

METHODS = ("gradcam", "gradcampp", "occlusion", "vanillagrad", "smoothgrad")
#: Grad-CAM target layers: module names inside :class:`SliceScores`
LAYERS = {"head": "model.head.2", "block13": "model.frozen_blocks.13", "block10": "model.frozen_blocks.10",
          "block7": "model.frozen_blocks.7"}
SMOOTHGRAD_SAMPLES = 8
GRADIENT_BLUR = 1 / 56  # Gaussian sigma of the gradient maps, as a share of the input side (4 px at 224)
#: the layer docs/explanations.md chose (best validation pointing game among the methods passing both sanity
#: checks): what Predictor.explain and the interfaces show
CHOSEN_LAYER = "block13"
TTA_SHIFT_PX = 8  # segmenter test-time augmentation: shifts of this many model-frame pixels (down, right)


@dataclass
class HeatMap:
    """One slice's explanation on the scan's own pixel grid."""

    slice_index: int
    method: str  # "gradcam", "gradcampp", "occlusion" or "tta_std" (segmenter uncertainty)
    target: str  # the detector output explained ("any", a subtype) or "lesion" for the segmenter
    heat: np.ndarray  # (rows, cols) float32 in [0, 1], the scan's grid
    peak: tuple[int, int] | None  # (row, col) of the maximum in the scan's grid; None for an all-zero map
    layer: str | None = None  # Grad-CAM's feature map (a key of LAYERS)
    score: float = float("nan")  # the explained logit of the slice alone (detector); mean lesion prob (segmenter)
    frame_heat: np.ndarray | None = None  # (S, S) the same map in the model frame, before mapping back

    def to_dict(self) -> dict:
        """The JSON fields of a slice's explanation (no pixels)."""
        return {"method": self.method, "target": self.target, "layer": self.layer,
                "peak": list(self.peak) if self.peak is not None else None,
                "score": None if np.isnan(self.score) else round(float(self.score), 4)}


class SliceScores(nn.Module):
    """The detector's logits of each slice alone, (N, 3, S, S) in [0, 1] -> (N, outputs): the module the
    explainers wrap."""

    def __init__(self, model: SliceClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.slice_logits(self.model.embed(self.model.trunk(x)))


def _explainable(model: SliceClassifier) -> SliceScores:
    """A private copy (MONAI's hooks stay on the modules they are put on; a Predictor's model is shared between
    threads), in eval mode, with frozen parameters (gradients flow to the activations only)."""
    mine = copy.deepcopy(model).eval()
    for p in mine.parameters():
        p.requires_grad_(False)
    return SliceScores(mine)


def _release(hooked) -> None:
    """Drop what MONAI's ``ModelWithHooks`` keeps after a call (activations, gradients, the score and its graph):
    the graph's hooks point back at the wrapper, a cycle through autograd's C++ nodes that Python's garbage
    collector cannot see, so without this every call would leak a model copy."""
    hooked.activations.clear()
    hooked.gradients.clear()
    hooked.score = None


def _normalise(maps: np.ndarray) -> np.ndarray:
    """Per map: negative and non-finite values to 0, then divided by the maximum (all-zero maps stay zero)."""
    maps = np.nan_to_num(np.asarray(maps, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    maps = np.maximum(maps, 0.0)
    top = maps.reshape(len(maps), -1).max(axis=1)
    return np.where(top[:, None, None] > 0, maps / np.where(top > 0, top, 1.0)[:, None, None], 0.0).astype(np.float32)


def _output_index(output: str, outputs: Sequence[str]) -> int:
    if output not in outputs:
        raise ModelError(f"unknown detector output {output!r} (choose from {', '.join(outputs)})")
    return list(outputs).index(output)


def model_frame_maps(model: SliceClassifier, x: torch.Tensor, method: str = "gradcam", output_index: int = 0,
                     layer: str = CHOSEN_LAYER, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(N, S, S) heat maps in [0, 1] in the model frame and (N,) explained logits for inputs ``x`` (N, 3, S, S).

    Works on any :class:`SliceClassifier` (a Predictor's, a randomised copy in the sanity checks)."""
    if method not in METHODS:
        raise ModelError(f"unknown explanation method {method!r} (choose from {', '.join(METHODS)})")
    wrapped = _explainable(model)
    x = x.detach().float().contiguous()
    with torch.no_grad():
        scores = torch.cat([wrapped(x[i:i + batch_size])[:, output_index] for i in range(0, len(x), batch_size)])
    if method == "occlusion":
        from monai.visualize import OcclusionSensitivity

        size = x.shape[-1]
        occ = OcclusionSensitivity(nn_module=wrapped, mask_size=max(8, size // 7), n_batch=16, verbose=False,
                                   mode="gaussian", overlap=0.5, activate=False)
        maps = []
        with torch.no_grad():
            for i in range(len(x)):
                occ_map, _ = occ(x[i:i + 1])
                occluded = torch.as_tensor(occ_map)[0, output_index].reshape(size, size)
                maps.append((scores[i] - occluded).numpy())  # how much the logit falls when that part is gone
        return _normalise(np.stack(maps)), scores.numpy()
    if method in ("vanillagrad", "smoothgrad"):
        from monai.visualize import SmoothGrad, VanillaGrad

        explainer = (VanillaGrad(wrapped) if method == "vanillagrad" else
                     SmoothGrad(wrapped, stdev_spread=0.1, n_samples=SMOOTHGRAD_SAMPLES, verbose=False))
        sigma = max(1.0, GRADIENT_BLUR * x.shape[-1])
        maps = []
        torch.manual_seed(0)  # SmoothGrad's noise: the same map for the same slice
        with torch.enable_grad():
            for i in range(len(x)):
                grad = explainer(x[i:i + 1].clone(), index=output_index)[0].abs().amax(dim=0).numpy()
                maps.append(cv2.GaussianBlur(grad.astype(np.float32), (0, 0), sigma))
        _release(explainer._model)
        return _normalise(np.stack(maps)), scores.numpy()
    if layer not in LAYERS:
        raise ModelError(f"unknown Grad-CAM layer {layer!r} (choose from {', '.join(LAYERS)})")
    from monai.visualize import GradCAM, GradCAMpp

    cam_cls = GradCAM if method == "gradcam" else GradCAMpp
    cam = cam_cls(nn_module=wrapped, target_layers=LAYERS[layer], postprocessing=lambda m: m)
    # MONAI's Grad-CAM++ multiplies by exp(score) without broadcasting over a batch: one slice at a time
    step = batch_size if method == "gradcam" else 1
    maps = []
    with torch.enable_grad():
        for i in range(0, len(x), step):
            xb = x[i:i + step].clone().requires_grad_(True)
            maps.append(cam(xb, class_idx=output_index).detach()[:, 0].numpy())
            _release(cam.nn_module)
    return _normalise(np.concatenate(maps)), scores.numpy()


def load_backend() -> None:
    """Import the explanation library now (MONAI's first import takes seconds), e.g. while a server is idle."""
    import monai.visualize  # noqa: F401


def heat_to_input_grid(heat: np.ndarray, box: Box, rotation_deg: float, shape: tuple[int, int]) -> np.ndarray:
    """A continuous (S, S) model-frame map -> (rows, cols) on the input grid: the mapping of
    :func:`~strokescan.core.geometry.from_model_frame` (resize to the crop box, paste, turn back), linear."""
    r0, c0, r1, c1 = box
    out = np.zeros(shape, np.float32)
    if r1 > r0 and c1 > c0:
        out[r0:r1, c0:c1] = cv2.resize(np.asarray(heat, np.float32), (c1 - c0, r1 - r0), interpolation=cv2.INTER_LINEAR)
    if rotation_deg and out.any():
        out = rotate_image(out, rotation_deg, order=1).astype(np.float32)
    return np.clip(out, 0.0, 1.0)


def map_peak(heat: np.ndarray) -> tuple[int, int] | None:
    """(row, col) of the maximum; None when the map is zero everywhere."""
    if not np.any(heat > 0):
        return None
    r, c = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return int(r), int(c)


def _to_heatmaps(frame: np.ndarray, scores: np.ndarray, prepared, indices: list[int], method: str, target: str,
                 layer: str | None, slices_prepared) -> list[HeatMap]:
    shape = tuple(prepared.scan.pixels.shape[1:])
    out = []
    for j, i in enumerate(indices):
        p = slices_prepared[i]
        heat = heat_to_input_grid(frame[j], p.box, p.rotation_deg, shape)
        top = heat.max()
        heat = heat / top if top > 0 else heat  # the turn back may blur the peak a little: rescale to [0, 1]
        out.append(HeatMap(slice_index=i, method=method, target=target, heat=heat.astype(np.float32),
                           peak=map_peak(heat), layer=layer, score=float(scores[j]), frame_heat=frame[j]))
    return out


def explain_slices(predictor, prepared, method: str = "gradcam", output: str = "any", layer: str = CHOSEN_LAYER,
                   slices: Sequence[int] | None = None) -> list[HeatMap]:
    """Heat maps of the detector's ``output`` for the slices of ``prepared`` (a
    :class:`~strokescan.inference.predictor.PreparedScan` of ``predictor``), on the scan's own pixel grid.

    ``slices``: indices to explain (default all). ``method``: "gradcam" (default, < 1 s per slice on 2 cores),
    "gradcampp", "vanillagrad", "smoothgrad" (8 backward passes) or "occlusion" (about 170 forward passes per
    slice, tens of times slower). ``layer``: Grad-CAM's feature map (a key of :data:`LAYERS`)."""
    indices = list(range(len(prepared.for_classifier))) if slices is None else [int(i) for i in slices]
    if not indices:
        return []
    k = _output_index(output, predictor.plan.outputs)
    x = torch.from_numpy(np.stack([prepared.for_classifier[i].channels for i in indices]))
    frame, scores = model_frame_maps(predictor.model, x, method, k, layer, batch_size=predictor.batch_size)
    return _to_heatmaps(frame, scores, prepared, indices, method, output,
                        layer if method in ("gradcam", "gradcampp") else None, prepared.for_classifier)


def _shift(a: np.ndarray, dr: int, dc: int, fill: float = 0.0) -> np.ndarray:
    """``a`` (..., H, W) moved down ``dr`` and right ``dc`` pixels, ``fill`` coming in."""
    out = np.full_like(a, fill)
    h, w = a.shape[-2:]
    out[..., max(dr, 0):h + min(dr, 0), max(dc, 0):w + min(dc, 0)] = a[..., max(-dr, 0):h - max(dr, 0),
                                                                        max(-dc, 0):w - max(dc, 0)]
    return out


#: test-time augmentations of the segmenter: (forward on the input channels, inverse on a probability map);
#: pixels an inverse shift cannot restore are NaN and left out of the spread
TTA = {
    "identity": (lambda a: a, lambda p: p),
    "flip_lr": (lambda a: a[..., ::-1].copy(), lambda p: p[..., ::-1].copy()),
    "shift_down": (lambda a: _shift(a, TTA_SHIFT_PX, 0), lambda p: _shift(p, -TTA_SHIFT_PX, 0, np.nan)),
    "shift_right": (lambda a: _shift(a, 0, TTA_SHIFT_PX), lambda p: _shift(p, 0, -TTA_SHIFT_PX, np.nan)),
}


def segmentation_uncertainty(predictor, prepared, slices: Sequence[int] | None = None) -> list[HeatMap]:
    """Per slice: twice the standard deviation of the segmenter's lesion probability over the test-time
    augmentations of :data:`TTA` (undone before comparing), on the scan's own grid; ``score`` = the mean
    lesion probability's maximum. Needs a Predictor built with ``segment=True``. Costs 4 segmenter passes."""
    if predictor.segmenter is None or prepared.for_segmenter is None:
        raise ModelError("this Predictor has no segmenter (construct it with segment=True)")
    indices = list(range(len(prepared.for_segmenter))) if slices is None else [int(i) for i in slices]
    if not indices:
        return []
    base = [prepared.for_segmenter[i] for i in indices]
    lesion = []
    for forward, inverse in TTA.values():
        augmented = [dataclasses.replace(p, channels=np.ascontiguousarray(forward(p.channels))) for p in base]
        lesion.append(inverse(1.0 - predictor.segmenter.probabilities(augmented)[:, 0]))
    lesion = np.stack(lesion)  # (augmentations, n, S, S), NaN where a shift lost the pixel
    spread = np.clip(2.0 * np.nanstd(lesion, axis=0), 0.0, 1.0).astype(np.float32)
    mean_top = np.nanmean(lesion, axis=0).reshape(len(indices), -1).max(axis=1)
    shape = tuple(prepared.scan.pixels.shape[1:])
    out = []
    for j, i in enumerate(indices):
        p = prepared.for_segmenter[i]
        heat = heat_to_input_grid(spread[j], p.box, p.rotation_deg, shape)
        out.append(HeatMap(slice_index=i, method="tta_std", target="lesion", heat=heat, peak=map_peak(heat),
                           score=float(mean_top[j]), frame_heat=spread[j]))
    return out
