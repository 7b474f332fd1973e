"""A tiny CNN that reads the in-plane rotation of a head slice as (cos, sin) of its angle.

Input: the head-masked slice in display values [0, 1], cropped to a square centred on the head mask's
centroid with a side proportional to the head's largest radius (both are rotation-equivariant, so turning the
slice only turns the crop), resized to ``INPUT_PX``. Everything outside the (slightly dilated) head mask is
set to 0, so the image border, the scanner table and the holder carry no angle cue.

Trained self-supervised (``strokescan train orientation``, :mod:`strokescan.training.orientation`) on upright
slices turned by random angles. :class:`strokescan.models.rotation.RotationEstimator` uses it.
Saved as fp16 weights plus a JSON plan holding their sha256, verified on load.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy import ndimage as ndi
from torch import nn

from strokescan.config import BUNDLED_MODELS_DIR
from strokescan.core.windows import display_unit
from strokescan.errors import ModelError
from strokescan.models.storage import load_weights, read_plan, save_model
from strokescan.preprocessing.masking import head_masks

INPUT_PX = 96  # side of the network input
WORK_PX = 192  # longest side of the working copy the head mask is computed on
CROP_RADII = 2.2  # crop side = CROP_RADII * largest head radius (head diameter + a margin)
WEIGHTS_FILE = "orientation.pt"
PLAN_FILE = "orientation.json"
BUNDLED_DIR = BUNDLED_MODELS_DIR / "orientation"


@dataclass
class HeadView:
    """A slice's working copy: head-masked display values and the head's centroid and radius (work px)."""

    image: np.ndarray  # float32 [0, 1], WORK_PX x WORK_PX, 0 outside the head
    cy: float
    cx: float
    radius: float
    head_fraction: float  # head area / image area (of the original image)


def head_view(image: np.ndarray, is_hu: bool) -> HeadView:
    """Downsample the slice to ``WORK_PX``, mask it to the head and measure the head's centroid and radius."""
    unit = display_unit(np.asarray(image), is_hu)
    h, w = unit.shape
    scale = WORK_PX / max(h, w)
    small = cv2.resize(unit, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    work = np.zeros((WORK_PX, WORK_PX), np.float32)
    work[: small.shape[0], : small.shape[1]] = small
    head = np.zeros_like(work, dtype=bool)
    head[: small.shape[0], : small.shape[1]] = head_masks(small * 255.0, is_hu=False).head
    frac = float(head[: small.shape[0], : small.shape[1]].mean())
    if head.sum() < 50:
        return HeadView(work * 0.0, WORK_PX / 2, WORK_PX / 2, WORK_PX / 2, frac)
    cy, cx = ndi.center_of_mass(head)
    ys, xs = np.nonzero(head)
    radius = float(np.sqrt(((ys - cy) ** 2 + (xs - cx) ** 2).max())) + 1.0
    keep = ndi.binary_dilation(head, iterations=2)
    return HeadView(work * keep, float(cy), float(cx), radius, frac)


def net_input(view: HeadView, theta: float = 0.0, scale_jitter: float = 1.0, shift: tuple[float, float] = (0, 0),
              flip: bool = False) -> np.ndarray:
    """``INPUT_PX`` square crop around the head, turned ``theta`` degrees counter-clockwise (as displayed)."""
    img = view.image[:, ::-1] if flip else view.image
    cx = (WORK_PX - 1 - view.cx) if flip else view.cx
    s = INPUT_PX / (CROP_RADII * view.radius) * scale_jitter
    m = cv2.getRotationMatrix2D((float(cx), float(view.cy)), float(theta), s)
    m[0, 2] += INPUT_PX / 2 - cx + shift[1]
    m[1, 2] += INPUT_PX / 2 - view.cy + shift[0]
    return cv2.warpAffine(np.ascontiguousarray(img), m, (INPUT_PX, INPUT_PX), flags=cv2.INTER_LINEAR,
                          borderValue=0.0)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.MaxPool2d(2))


class OrientationNet(nn.Module):
    """5 conv blocks (8-16-32-64-128 channels), global average pool, a linear map to (cos, sin)."""

    def __init__(self, widths: tuple[int, ...] = (8, 16, 32, 64, 128)) -> None:
        super().__init__()
        layers, cin = [], 1
        for w in widths:
            layers.append(_block(cin, w))
            cin = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


@dataclass
class OrientationPlan:
    input_px: int = INPUT_PX
    work_px: int = WORK_PX
    crop_radii: float = CROP_RADII
    widths: list = field(default_factory=lambda: [8, 16, 32, 64, 128])
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    weights_sha256: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> OrientationPlan:
        return cls(**json.loads(text))


def save_orientation_net(model: OrientationNet, plan: OrientationPlan, folder: Path) -> None:
    """Write fp16 weights and the plan (with the weights' sha256) to ``folder``."""
    save_model(model, plan, folder, WEIGHTS_FILE, PLAN_FILE)


def load_orientation_net(folder: Path | None = None) -> tuple[OrientationNet, OrientationPlan]:
    """Read a model saved by :func:`save_orientation_net` (default: the bundled one); refuse a checksum mismatch."""
    folder = Path(folder) if folder is not None else BUNDLED_DIR
    plan = read_plan(folder, WEIGHTS_FILE, PLAN_FILE, "orientation model", OrientationPlan.from_json)
    if (plan.input_px, plan.work_px, plan.crop_radii) != (INPUT_PX, WORK_PX, CROP_RADII):
        raise ModelError(f"{folder / PLAN_FILE}: input geometry {plan.input_px}/{plan.work_px}/{plan.crop_radii} "
                         f"differs from this code's {INPUT_PX}/{WORK_PX}/{CROP_RADII}")
    return load_weights(OrientationNet(tuple(plan.widths)), folder / WEIGHTS_FILE), plan


def predict_angles(model: OrientationNet, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(angles in degrees [0, 360), vector lengths as a confidence) for a batch N x INPUT_PX x INPUT_PX."""
    with torch.no_grad():
        out = model(torch.from_numpy(np.ascontiguousarray(inputs, np.float32))[:, None]).numpy()
    ang = np.degrees(np.arctan2(out[:, 1], out[:, 0])) % 360.0
    return ang, np.hypot(out[:, 0], out[:, 1])
