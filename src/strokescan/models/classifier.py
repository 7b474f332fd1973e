"""The slice classifier: ImageNet-pretrained EfficientNet-Lite0, split into a frozen trunk and a trained top.

The trunk (stem and the first ``TRAINABLE_FROM`` blocks) keeps its ImageNet weights and its outputs are
cached once per slice (see ``strokescan.training.classifier``); the top (the last blocks, the head
convolution, dropout and one logit) is trained. Saved as fp16 weights plus a JSON plan with its sha256.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from strokescan.models.encoder import IMAGENET_MEAN, IMAGENET_STD, efficientnet_lite0
from strokescan.models.storage import load_weights, read_plan, save_model
from strokescan.preprocessing.pipeline import SlicePlan

TRAINABLE_FROM = 14  # blocks 0..13 are frozen (ImageNet), 14..15 and the head are trained
WEIGHTS_FILE = "classifier.pt"
PLAN_FILE = "classifier.json"


class SliceClassifier(nn.Module):
    """``trunk`` maps normalised 3-channel slices to cached features; ``top`` maps features to a logit."""

    def __init__(self, pretrained: bool = True, dropout: float = 0.3) -> None:
        super().__init__()
        net = efficientnet_lite0(pretrained)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
        self.frozen_blocks = nn.ModuleList(net._blocks[:TRAINABLE_FROM])
        self.top_blocks = nn.ModuleList(net._blocks[TRAINABLE_FROM:])
        self.head = nn.Sequential(net._conv_head, net._bn1, nn.ReLU6())
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(net._fc.in_features, 1)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Frozen part: (N, 3, S, S) in [0, 1] -> (N, C, S/32, S/32) features."""
        x = self.stem((x - self.mean) / self.std)
        for block in self.frozen_blocks:
            x = block(x)
        return x

    def top(self, features: torch.Tensor) -> torch.Tensor:
        """Trained part: features -> one logit per slice."""
        x = features
        for block in self.top_blocks:
            x = block(x)
        x = self.head(x).mean(dim=(2, 3))
        return self.fc(self.dropout(x)).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.top(self.trunk(x))

    def load_encoder_from_segmenter(self, unet: nn.Module) -> None:
        """Copy the stem and the EfficientNet blocks of a segmentation U-Net (:class:`~strokescan.models.unet.
        EffUNet`, the shared encoder) into this classifier; the head stays as it is."""
        self.stem.load_state_dict(unet.stem.state_dict())
        for mine, theirs in zip([*self.frozen_blocks, *self.top_blocks], unet.blocks, strict=True):
            mine.load_state_dict(theirs.state_dict())

    def top_parameters(self) -> list[nn.Parameter]:
        return [p for m in (self.top_blocks, self.head, self.fc) for p in m.parameters()]


@dataclass
class ClassifierPlan:
    """Everything a run decided, stored beside the weights and checked on load."""

    slice_plan: SlicePlan
    calibration: dict  # {"method": "platt", "a": .., "b": ..}: p = sigmoid(a * logit + b)
    slice_threshold: float  # on calibrated probability
    scan_threshold: float  # on the scan score (max calibrated slice probability)
    threshold_rule: str
    training: dict = field(default_factory=dict)  # data, folds, epochs, seed, versions
    metrics: dict = field(default_factory=dict)  # cross-validated and external figures
    weights_sha256: str = ""

    def to_json(self) -> str:
        d = self.__dict__.copy()
        d["slice_plan"] = self.slice_plan.to_dict()
        return json.dumps(d, indent=2)

    @classmethod
    def from_json(cls, text: str) -> ClassifierPlan:
        d = json.loads(text)
        d["slice_plan"] = SlicePlan(**d["slice_plan"])
        return cls(**d)


def save_classifier(model: SliceClassifier, plan: ClassifierPlan, folder: Path) -> None:
    """Write fp16 weights and the plan (with the weights' sha256) to ``folder``."""
    save_model(model, plan, folder, WEIGHTS_FILE, PLAN_FILE)


def load_classifier(folder: Path) -> tuple[SliceClassifier, ClassifierPlan]:
    """Read a classifier saved by :func:`save_classifier`, refusing a file whose checksum does not match."""
    plan = read_plan(folder, WEIGHTS_FILE, PLAN_FILE, "classifier", ClassifierPlan.from_json)
    return load_weights(SliceClassifier(pretrained=False), Path(folder) / WEIGHTS_FILE), plan
