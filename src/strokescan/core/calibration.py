"""Turning a model's logits into calibrated probabilities (Platt scaling). Fitting lives in
:mod:`strokescan.evaluation.calibration`; applying needs numpy only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PlattCalibrator:
    """p = sigmoid(a * logit + b), fitted on held-out predictions only."""

    a: float = 1.0
    b: float = 0.0

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        z = self.a * np.asarray(logits, float) + self.b
        return 1.0 / (1.0 + np.exp(-z))

    def to_dict(self) -> dict:
        return {"method": "platt", "a": self.a, "b": self.b}

    @classmethod
    def from_dict(cls, d: dict) -> PlattCalibrator:
        return cls(a=float(d["a"]), b=float(d["b"]))
