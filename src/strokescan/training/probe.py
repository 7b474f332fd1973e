"""A linear probe: logistic regression on frozen, pooled trunk features under patient-grouped folds.

The floor a trained classifier must beat (issue: "frozen ImageNet features with logistic regression reach about
0.85 slice AUC"), and the tool to compare encoders (`studies/seed_comparison.py`,
`studies/segmentation_encoder_probe.py`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def neighbour_context(x: np.ndarray, manifest: pd.DataFrame) -> np.ndarray:
    """Each row's features beside the element-wise max and mean of its two neighbouring slices (same patient,
    by slice index; an end slice counts itself as its missing neighbour): a 2.5-D view of the scan."""
    order = manifest.sort_values(["patient", "slice_index"]).index.to_numpy()
    patient = manifest["patient"].to_numpy()
    prev, nxt = np.arange(len(x)), np.arange(len(x))
    same = patient[order[1:]] == patient[order[:-1]]
    prev[order[1:][same]] = order[:-1][same]
    nxt[order[:-1][same]] = order[1:][same]
    return np.concatenate([x, np.maximum(x[prev], x[nxt]), (x[prev] + x[nxt]) / 2], axis=1)


def linear_probe(feats: torch.Tensor, manifest: pd.DataFrame, folds: dict, context: bool = False) -> np.ndarray:
    """Logistic regression (C = 0.1, fixed beforehand) on global-average-pooled frozen trunk features, same
    folds (test fold k, trained on the other four); with ``context``, plus the neighbouring slices' features."""
    x = feats[0].float().mean(dim=(2, 3)).numpy()
    if context:
        x = neighbour_context(x, manifest.reset_index(drop=True))
    fold_of = {p: int(k) for k, ps in folds["folds"].items() for p in ps}
    row_fold = manifest["patient"].map(fold_of).to_numpy()
    y = manifest["label"].to_numpy(float)
    out = np.full(len(y), np.nan)
    for k in range(folds["n_folds"]):
        tr = (row_fold != k) & ~np.isnan(y)
        lr = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000, class_weight="balanced"))
        lr.fit(x[tr], y[tr])
        out[row_fold == k] = lr.predict_proba(x[row_fold == k])[:, 1]
    return out
