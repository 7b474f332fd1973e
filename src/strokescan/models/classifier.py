"""The hemorrhage detector: ImageNet-pretrained EfficientNet-Lite0 per slice, then context across slices.

The trunk (stem and the first ``TRAINABLE_FROM`` blocks) keeps its ImageNet weights and its outputs are
cached once per slice (see ``strokescan.training.detection``); the top (the last blocks and the head
convolution) gives one embedding per slice, a linear layer one logit per output (any hemorrhage, then the five
subtypes of :data:`~strokescan.core.labels.DETECTION_OUTPUTS`), and :class:`SliceContext` refines those logits
from the neighbouring slices' embeddings (2.5-D context, as the RSNA 2019 winners did with sequence models).
Saved as fp16 weights plus a JSON plan with its sha256.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from strokescan.core.labels import DETECTION_OUTPUTS
from strokescan.models.encoder import IMAGENET_MEAN, IMAGENET_STD, efficientnet_lite0
from strokescan.models.storage import load_weights, read_plan, save_model
from strokescan.preprocessing.pipeline import SlicePlan

TRAINABLE_FROM = 14  # blocks 0..13 are frozen (ImageNet), 14..15 and the head are trained
WEIGHTS_FILE = "classifier.pt"
PLAN_FILE = "classifier.json"


class SliceContext(nn.Module):
    """Corrections to each slice's logits from its neighbours: two 3-wide 1-D convolutions along the scan over
    projected slice embeddings (each slice sees two neighbours on either side; beyond the scan, zeros)."""

    def __init__(self, embedding_dim: int, n_outputs: int, width: int = 128) -> None:
        super().__init__()
        self.project = nn.Linear(embedding_dim, width)
        self.convs = nn.Sequential(nn.Conv1d(width, width, 3, padding=1), nn.ReLU(),
                                   nn.Conv1d(width, width, 3, padding=1), nn.ReLU())
        self.out = nn.Linear(width, n_outputs)

    def forward(self, embeddings: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B, L, D) embeddings of B slice runs, (B, L) bool for real slices -> (B, L, n_outputs) corrections."""
        h = torch.relu(self.project(embeddings)) * valid.unsqueeze(-1)
        return self.out(self.convs(h.transpose(1, 2)).transpose(1, 2))


class SliceClassifier(nn.Module):
    """``trunk`` maps normalised 3-channel slices to cached features; ``embed`` maps features to one embedding
    per slice, ``slice_logits`` embeddings to logits, ``context_logits`` runs of slices to logits with context."""

    def __init__(self, pretrained: bool = True, dropout: float = 0.3, n_outputs: int = len(DETECTION_OUTPUTS)) -> None:
        super().__init__()
        net = efficientnet_lite0(pretrained)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
        self.frozen_blocks = nn.ModuleList(net._blocks[:TRAINABLE_FROM])
        self.top_blocks = nn.ModuleList(net._blocks[TRAINABLE_FROM:])
        self.head = nn.Sequential(net._conv_head, net._bn1, nn.ReLU6())
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(net._fc.in_features, n_outputs)
        self.context = SliceContext(net._fc.in_features, n_outputs)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Frozen part: (N, 3, S, S) in [0, 1] -> (N, C, S/32, S/32) features."""
        x = self.stem((x - self.mean) / self.std)
        for block in self.frozen_blocks:
            x = block(x)
        return x

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """Trained part: trunk features (N, C, h, w) -> (N, D) slice embeddings."""
        x = features
        for block in self.top_blocks:
            x = block(x)
        return self.head(x).mean(dim=(2, 3))

    def slice_logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(..., D) embeddings -> (..., n_outputs) logits of each slice on its own."""
        return self.fc(self.dropout(embeddings))

    def context_logits(self, embeddings: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B, L, D) embeddings of runs of consecutive slices -> (B, L, n_outputs) logits with context."""
        return self.slice_logits(embeddings) + self.context(embeddings, valid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(L, 3, S, S) consecutive slices of one scan -> (L, n_outputs) logits with context."""
        emb = self.embed(self.trunk(x)).unsqueeze(0)
        return self.context_logits(emb, torch.ones(emb.shape[:2], dtype=torch.bool))[0]

    def load_encoder_from_segmenter(self, unet: nn.Module) -> None:
        """Copy the stem and the EfficientNet blocks of a segmentation U-Net (:class:`~strokescan.models.unet.
        EffUNet`, the shared encoder) into this classifier; the head stays as it is."""
        self.stem.load_state_dict(unet.stem.state_dict())
        for mine, theirs in zip([*self.frozen_blocks, *self.top_blocks], unet.blocks, strict=True):
            mine.load_state_dict(theirs.state_dict())

    def top_parameters(self) -> list[nn.Parameter]:
        return [p for m in (self.top_blocks, self.head, self.fc, self.context) for p in m.parameters()]


#: how the slices' "any" probabilities become the scan score (the rule is chosen on validation folds)
SCAN_SCORES = {
    "max": lambda p: float(np.max(p)),
    "top3_mean": lambda p: float(np.mean(np.sort(p)[-3:])),
}
OPERATING_POINTS = ("balanced", "sensitive")


def scan_score(probabilities: np.ndarray, rule: str) -> float:
    """The scan score of slice probabilities (of slices showing brain) by ``rule``; 0 when there is none."""
    probabilities = np.asarray(probabilities, float)
    return SCAN_SCORES[rule](probabilities) if probabilities.size else 0.0


@dataclass
class ClassifierPlan:
    """Everything a run decided, stored beside the weights and checked on load.

    ``operating_points`` maps "balanced" and "sensitive" to ``{"slice_threshold", "scan_threshold", "rule",
    "cross_validation": {...}}`` (thresholds on calibrated probabilities, chosen on out-of-fold predictions).
    """

    slice_plan: SlicePlan
    calibration: dict  # output name -> {"method": "platt", "a": .., "b": ..}: p = sigmoid(a * logit + b)
    operating_points: dict
    scan_score: str = "max"  # key of SCAN_SCORES
    outputs: tuple[str, ...] = DETECTION_OUTPUTS
    default_operating_point: str = "balanced"
    min_brain_fraction: float = 0.02  # slices with less brain are never flagged and do not count for the scan
    training: dict = field(default_factory=dict)  # data, folds, epochs, seed, versions
    metrics: dict = field(default_factory=dict)  # cross-validated and external figures
    weights_sha256: str = ""

    @classmethod
    def for_wiring_checks(cls, slice_plan: SlicePlan) -> ClassifierPlan:
        """Identity calibration and 0.5 thresholds at both operating points: for an untrained network in tests
        and load benchmarks, where the plumbing matters and the findings mean nothing."""
        return cls(slice_plan=slice_plan,
                   calibration={name: {"method": "platt", "a": 1.0, "b": 0.0} for name in DETECTION_OUTPUTS},
                   operating_points={p: {"slice_threshold": 0.5, "scan_threshold": 0.5, "rule": "wiring check"}
                                     for p in OPERATING_POINTS},
                   training={"data": "none: untrained, for wiring checks"})

    def threshold(self, level: str, point: str | None = None) -> float:
        """The ``level`` ("slice" or "scan") threshold of operating point ``point`` (default: the plan's)."""
        return float(self.operating_points[point or self.default_operating_point][f"{level}_threshold"])

    def to_json(self) -> str:
        d = self.__dict__.copy()
        d["slice_plan"] = self.slice_plan.to_dict()
        return json.dumps(d, indent=2)

    @classmethod
    def from_json(cls, text: str) -> ClassifierPlan:
        d = json.loads(text)
        d["slice_plan"] = SlicePlan(**d["slice_plan"])
        d["outputs"] = tuple(d.get("outputs", DETECTION_OUTPUTS))
        return cls(**d)


def save_classifier(model: SliceClassifier, plan: ClassifierPlan, folder: Path) -> None:
    """Write fp16 weights and the plan (with the weights' sha256) to ``folder``."""
    save_model(model, plan, folder, WEIGHTS_FILE, PLAN_FILE)


def load_classifier(folder: Path) -> tuple[SliceClassifier, ClassifierPlan]:
    """Read a classifier saved by :func:`save_classifier`, refusing a file whose checksum does not match."""
    plan = read_plan(folder, WEIGHTS_FILE, PLAN_FILE, "classifier", ClassifierPlan.from_json)
    return load_weights(SliceClassifier(pretrained=False), Path(folder) / WEIGHTS_FILE), plan
