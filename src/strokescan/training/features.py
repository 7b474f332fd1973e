"""Preprocess every slice once and cache the frozen trunk's features for a few augmented views.

View 0 is the slice as it is; views 1.. are random CT-safe augmentations (flip, small rotation and
scaling, intensity jitter) drawn with a fixed seed. The cache is keyed by the image paths, the slice plan
and the seed, so a changed plan never silently reuses old features.
"""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import torch
from monai.transforms import Compose, RandAdjustContrast, RandAffine, RandFlip, RandScaleIntensity
from tqdm import tqdm

from strokescan.config import cache_root
from strokescan.io import load_scan
from strokescan.models.classifier import SliceClassifier
from strokescan.preprocessing.pipeline import SlicePlan, prepare_slice

log = logging.getLogger(__name__)


def ct_augmentation(seed: int) -> Compose:
    """Label-preserving augmentation for axial head CT slices (channel-first arrays in [0, 1])."""
    aug = Compose(
        [
            RandFlip(prob=0.5, spatial_axis=1),  # left-right: hemorrhage can be on either side
            RandAffine(prob=0.9, rotate_range=(np.deg2rad(15),), scale_range=(0.1, 0.1), padding_mode="zeros"),
            RandAdjustContrast(prob=0.5, gamma=(0.85, 1.15)),
            RandScaleIntensity(prob=0.5, factors=0.08),
        ]
    )
    aug.set_random_state(seed)
    return aug


def prepare_inputs(paths: list[str], plan: SlicePlan) -> np.ndarray:
    """(N, 3, S, S) float16 model inputs of upright 2-D slices (no rotation correction)."""
    out = np.zeros((len(paths), 3, plan.size, plan.size), np.float16)
    for i, p in enumerate(tqdm(paths, desc="preprocess", unit="slice", mininterval=5)):
        scan = load_scan(p)
        out[i] = prepare_slice(scan.pixels[0], scan.is_hu, plan, rotation_deg=0.0).channels
    return out


def cache_key(paths: list[str], plan: SlicePlan, n_views: int, seed: int) -> str:
    blob = json.dumps([paths, plan.to_dict(), n_views, seed]).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@torch.no_grad()
def trunk_features(
    model: SliceClassifier, inputs: np.ndarray, n_views: int, seed: int, batch: int = 32
) -> torch.Tensor:
    """(n_views, N, C, h, w) float16 trunk features; view 0 unaugmented."""
    model.eval()
    aug = ct_augmentation(seed)
    views = []
    for v in range(n_views):
        chunks = []
        for start in tqdm(range(0, len(inputs), batch), desc=f"features view {v + 1}/{n_views}", mininterval=10):
            x = inputs[start : start + batch].astype(np.float32)
            if v > 0:
                x = np.stack([np.asarray(aug(s)) for s in x]).clip(0, 1)
            chunks.append(model.trunk(torch.from_numpy(x)).half())
        views.append(torch.cat(chunks))
    return torch.stack(views)


def cached_inputs(paths: list[str], plan: SlicePlan) -> np.ndarray:
    """:func:`prepare_inputs` for ``paths``, from the cache when it holds them."""
    folder = cache_root() / "features"
    folder.mkdir(parents=True, exist_ok=True)
    inputs_file = folder / f"inputs_{cache_key(paths, plan, 0, 0)}.npy"
    if inputs_file.exists():
        return np.load(inputs_file)
    inputs = prepare_inputs(paths, plan)
    np.save(inputs_file, inputs)
    return inputs


def cached_features(
    paths: list[str], plan: SlicePlan, n_views: int, seed: int, model: SliceClassifier | None = None
) -> torch.Tensor:
    """Trunk features for ``paths`` from the cache, computing (and storing) them when missing."""
    folder = cache_root() / "features"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"trunk_{cache_key(paths, plan, n_views, seed)}.pt"
    if target.exists():
        log.info("using cached features %s", target)
        return torch.load(target, weights_only=True)
    feats = trunk_features(model or SliceClassifier(pretrained=True), cached_inputs(paths, plan), n_views, seed)
    tmp = target.with_suffix(".tmp")
    torch.save(feats, tmp)
    tmp.rename(target)  # atomic: an interrupted run never leaves a half-written cache
    return feats
