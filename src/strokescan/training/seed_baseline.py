"""The seed's way, side by side with ours: a from-scratch CNN on folder labels with an image-level split,
the same CNN under patient-grouped splits, and on slice-level labels (the from-scratch baseline for
transfer learning). Early stopping on a validation part in every setting.
"""

from __future__ import annotations

import copy
import logging

import cv2
import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from torch import nn
from tqdm import tqdm

from strokescan.config import SEED
from strokescan.io import load_scan
from strokescan.models.seed_cnn import SEED_INPUT_SIZE, SeedCNN

log = logging.getLogger(__name__)


def seed_inputs(paths: list[str]) -> np.ndarray:
    """(N, 1, 128, 128) float32: the raw 8-bit slice resized and scaled to [0, 1], as the seed did."""
    out = np.zeros((len(paths), 1, SEED_INPUT_SIZE, SEED_INPUT_SIZE), np.float32)
    for i, p in enumerate(tqdm(paths, desc="seed inputs", mininterval=5)):
        img = load_scan(p).pixels[0] / 255.0
        out[i, 0] = cv2.resize(img, (SEED_INPUT_SIZE, SEED_INPUT_SIZE), interpolation=cv2.INTER_AREA)
    return out


@torch.no_grad()
def _scores(model: nn.Module, x: np.ndarray) -> np.ndarray:
    model.eval()
    return torch.cat([torch.sigmoid(model(torch.from_numpy(x[i : i + 256]))) for i in range(0, len(x), 256)]).numpy()


def train_seed_cnn(
    x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, max_epochs: int = 12, patience: int = 3, seed: int = SEED
) -> nn.Module:
    """Adam, batch 32, random flips, early stopping on validation AUC."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = SeedCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    best, best_state, stale = -1.0, None, 0
    for epoch in range(max_epochs):
        model.train()
        for idx in np.array_split(rng.permutation(len(y)), max(1, len(y) // 32)):
            xb = torch.from_numpy(x[idx])
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
            xb[flip] = torch.flip(xb[flip], dims=[3])
            loss = loss_fn(model(xb), torch.from_numpy(y[idx].astype(np.float32)))
            opt.zero_grad()
            loss.backward()
            opt.step()
        auc = roc_auc_score(yv, _scores(model, xv)) if 0 < yv.sum() < len(yv) else 0.0
        log.info("seed cnn epoch %d val auc %.3f", epoch + 1, auc)
        if auc > best:
            best, best_state, stale = auc, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= patience:
                break
    model.load_state_dict(best_state)
    return model


def image_split_run(x: np.ndarray, y: np.ndarray, seed: int = SEED) -> dict:
    """The seed's protocol: random 70/10/20 split of images, ignoring patients."""
    idx = np.arange(len(y))
    trval, test = train_test_split(idx, test_size=0.2, random_state=seed, stratify=y)
    tr, val = train_test_split(trval, test_size=0.125, random_state=seed, stratify=y[trval])
    model = train_seed_cnn(x[tr], y[tr], x[val], y[val], seed=seed)
    p = _scores(model, x[test])
    return {"rows": test.tolist(), "probability": p.tolist()}


def patient_cv_run(x: np.ndarray, y: np.ndarray, patients: pd.Series, folds: dict[str, list[str]], seed: int = SEED) -> np.ndarray:
    """Out-of-fold scores under the same patient folds and fold roles as our classifier (NaN labels skipped)."""
    fold_of = {p: int(k) for k, ps in folds.items() for p in ps}
    row_fold = patients.astype(str).map(fold_of).to_numpy()
    known = ~np.isnan(y)
    out = np.full(len(y), np.nan)
    n = len(folds)
    for k in tqdm(range(n), desc="seed cnn folds"):
        val_k = (k + 1) % n
        tr = (row_fold != k) & (row_fold != val_k) & known
        va = (row_fold == val_k) & known
        model = train_seed_cnn(x[tr], y[tr], x[va], y[va], seed=seed)
        out[row_fold == k] = _scores(model, x[row_fold == k])
    return out
