"""The seed project's model, for comparison only: a small Keras-style CNN trained from scratch.

Three convolution/pooling stages, a dense layer with dropout, one logit; 128x128 grey input scaled to [0, 1].
"""

from __future__ import annotations

import torch
from torch import nn

SEED_INPUT_SIZE = 128


class SeedCNN(nn.Module):
    def __init__(self, dropout: float = 0.5) -> None:
        super().__init__()

        def stage(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))

        self.features = nn.Sequential(stage(1, 32), stage(32, 64), stage(64, 128), nn.AdaptiveAvgPool2d(8))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(128 * 8 * 8, 128), nn.ReLU(), nn.Dropout(dropout), nn.Linear(128, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x)).squeeze(1)
