"""The lesion segmentation network: a 2-D U-Net with four output classes, and its save/load.

Classes (per pixel): :class:`strokescan.core.labels.LesionClass` (0 background, 1 hemorrhage, 2 perihematomal
edema, 3 ischemic infarct).

Two architectures share one interface (``(N, 3, S, S)`` inputs in [0, 1], the channels of
:func:`strokescan.preprocessing.pipeline.prepare_slice`, to ``(N, 4, S, S)`` logits):

``effnet`` (default)
    The EfficientNet-Lite0 encoder of :class:`~strokescan.models.classifier.SliceClassifier` (same module
    layout: ``stem`` and the 16 MBConv ``blocks``; ImageNet weights, or a trained classifier's weights via
    :meth:`EffUNet.load_encoder_from_classifier`) with a light U-Net decoder fed by skips at strides
    2, 4, 8 and 16 (blocks 0, 2, 4 and 10) and the stride-32 output of block 15 as bottleneck.
``basic``
    MONAI ``BasicUNet`` trained from scratch (features configurable).

Saved as fp16 weights (``segmenter.pt``) plus a JSON plan (``segmenter.json``) holding the architecture,
the :class:`~strokescan.preprocessing.pipeline.SlicePlan`, training facts, metrics and the weights' sha256,
which :func:`load_segmenter` verifies before loading.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from strokescan.core.labels import CLASS_NAMES, N_CLASSES
from strokescan.errors import ModelError
from strokescan.models.encoder import IMAGENET_MEAN, IMAGENET_STD, efficientnet_lite0
from strokescan.models.storage import load_weights, read_plan, save_model
from strokescan.preprocessing.pipeline import SlicePlan

SEG_INPUT_SIZE = 256
WEIGHTS_FILE = "segmenter.pt"
PLAN_FILE = "segmenter.json"
#: Encoder blocks whose outputs feed the decoder (strides 2, 4, 8, 16); the last block is the bottleneck.
SKIP_BLOCKS = (0, 2, 4, 10)


@dataclass(frozen=True)
class UNetConfig:
    """Architecture, stored in the plan so that :func:`build_unet` can rebuild the same network."""

    arch: str = "effnet"  # "effnet" | "basic"
    n_classes: int = N_CLASSES
    decoder: tuple[int, ...] = (96, 48, 32, 24, 16)  # effnet decoder widths, stride 16 -> 1
    features: tuple[int, ...] = (16, 32, 64, 128, 256, 16)  # basic: BasicUNet features
    freeze_encoder_blocks: int = 0  # effnet: stem and this many first blocks are not trained
    full_res_stage: bool = True  # effnet: decode up to stride 1 (False: logits at stride 2, upsampled)
    dropout: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> UNetConfig:
        d = dict(d)
        for k in ("decoder", "features"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Up(nn.Module):
    """Upsample x2, concatenate the skip, two 3x3 conv-BN-ReLU."""

    def __init__(self, cin: int, cskip: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(_conv_bn(cin + cskip, cout), _conv_bn(cout, cout))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        size = skip.shape[-2:] if skip is not None else (x.shape[-2] * 2, x.shape[-1] * 2)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv(x)


class EffUNet(nn.Module):
    """U-Net decoder on the EfficientNet-Lite0 encoder (the classifier's module layout)."""

    def __init__(self, config: UNetConfig = UNetConfig(), pretrained: bool = True) -> None:
        super().__init__()
        net = efficientnet_lite0(pretrained)
        self.config = config
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
        self.blocks = nn.ModuleList(net._blocks)
        chans = [self.blocks[i]._project_conv.out_channels for i in SKIP_BLOCKS]  # 16, 24, 40, 112
        bottom = self.blocks[-1]._project_conv.out_channels  # 320
        d = config.decoder
        self.up = nn.ModuleList([
            _Up(bottom, chans[3], d[0]),  # stride 32 -> 16
            _Up(d[0], chans[2], d[1]),  # -> 8
            _Up(d[1], chans[1], d[2]),  # -> 4
            _Up(d[2], chans[0], d[3]),  # -> 2
        ])
        if config.full_res_stage:
            self.up.append(_Up(d[3], 0, d[4]))  # -> 1
        self.dropout = nn.Dropout2d(config.dropout)
        self.head = nn.Conv2d(d[4] if config.full_res_stage else d[3], config.n_classes, 1)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.freeze(config.freeze_encoder_blocks)

    def freeze(self, n_blocks: int) -> None:
        """Stop training the stem and the first ``n_blocks`` blocks (0: train everything)."""
        frozen = [self.stem, *self.blocks[:n_blocks]] if n_blocks > 0 else []
        for m in frozen:
            for p in m.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> EffUNet:
        super().train(mode)
        n = self.config.freeze_encoder_blocks
        if mode and n > 0:  # frozen parts keep their BatchNorm statistics
            for m in (self.stem, *self.blocks[:n]):
                m.eval()
        return self

    def encoder_modules(self) -> list[nn.Module]:
        return [self.stem, self.blocks]

    def load_encoder_from_classifier(self, classifier: nn.Module) -> None:
        """Copy the stem and blocks of a :class:`SliceClassifier` (shared encoder)."""
        self.stem.load_state_dict(classifier.stem.state_dict())
        blocks = list(classifier.frozen_blocks) + list(classifier.top_blocks)
        for mine, theirs in zip(self.blocks, blocks, strict=True):
            mine.load_state_dict(theirs.state_dict())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem((x - self.mean) / self.std)
        skips = []
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i in SKIP_BLOCKS:
                skips.append(h)
        s2, s4, s8, s16 = skips
        h = self.up[0](h, s16)
        h = self.up[1](h, s8)
        h = self.up[2](h, s4)
        h = self.up[3](h, s2)
        if len(self.up) > 4:
            h = self.up[4](h, None)
        h = self.head(self.dropout(h))
        if h.shape[-2:] != x.shape[-2:]:
            h = F.interpolate(h, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return h


class BasicSegUNet(nn.Module):
    """MONAI BasicUNet from scratch (inputs in [0, 1] are centred to [-1, 1])."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        from monai.networks.nets import BasicUNet  # only this architecture needs MONAI: keeps it off inference

        self.config = config
        self.net = BasicUNet(spatial_dims=2, in_channels=3, out_channels=config.n_classes,
                             features=config.features, dropout=config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2.0 - 1.0)


def build_unet(config: UNetConfig = UNetConfig(), pretrained: bool = True) -> nn.Module:
    """A network for ``config`` (``pretrained`` only matters for the effnet encoder)."""
    if config.arch == "effnet":
        return EffUNet(config, pretrained=pretrained)
    if config.arch == "basic":
        return BasicSegUNet(config)
    raise ModelError(f"unknown segmentation architecture {config.arch!r}")


@dataclass
class SegmenterPlan:
    """Everything a run decided, stored beside the weights and checked on load."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    slice_plan: SlicePlan = field(default_factory=lambda: SlicePlan(size=SEG_INPUT_SIZE))
    classes: tuple[str, ...] = CLASS_NAMES
    min_lesion_px: int = 10  # connected components smaller than this (input grid) are dropped at inference
    hemorrhage_weight: float = 1.0  # clot probability x this before the argmax (> 1 paints more clot)
    min_hemorrhage_confidence: float = 0.0  # clot components whose peak clot probability is lower are dropped
    clot_growth_k: float = 0.0  # > 0: the clot grows into hyperdense pixels (this factor) around it (input grid)
    clot_growth_px: int = 0  # ... at most this many pixels from the network's clot
    clot_within_brain_px: int = -1  # lesions only inside the intracranial cavity grown by this many px (< 0: by 0)
    min_slice_probability: float = 0.0  # clot only on slices the detector gives at least this (0: off)
    gate_detector_sha256: str = ""  # ... the detector that threshold was set for (it applies with that one only)
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    weights_sha256: str = ""

    def to_json(self) -> str:
        d = self.__dict__.copy()
        d["unet"] = self.unet.to_dict()
        d["slice_plan"] = self.slice_plan.to_dict()
        d["classes"] = list(self.classes)
        return json.dumps(d, indent=2, default=str)

    @classmethod
    def from_json(cls, text: str) -> SegmenterPlan:
        try:
            d = json.loads(text)
            d["unet"] = UNetConfig.from_dict(d["unet"])
            d["slice_plan"] = SlicePlan(**d["slice_plan"])
            d["classes"] = tuple(d["classes"])
            return cls(**d)
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ModelError(f"segmenter plan unreadable ({exc.__class__.__name__})") from None


def save_segmenter(model: nn.Module, plan: SegmenterPlan, folder: Path | str) -> Path:
    """Write fp16 weights and the plan (with the weights' sha256) to ``folder``; returns the folder."""
    return save_model(model, plan, folder, WEIGHTS_FILE, PLAN_FILE)


def load_segmenter(folder: Path | str) -> tuple[nn.Module, SegmenterPlan]:
    """Read a segmenter saved by :func:`save_segmenter`; :class:`ModelError` if missing, altered or mismatched."""
    plan = read_plan(folder, WEIGHTS_FILE, PLAN_FILE, "segmenter", SegmenterPlan.from_json)
    return load_weights(build_unet(plan.unet, pretrained=False), Path(folder) / WEIGHTS_FILE), plan
