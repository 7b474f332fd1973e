"""The classifier run end to end on ctich-kaggle: manifest, committed folds, cached features, CV, final model."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from strokescan.datasets.local import load_ctich_kaggle
from strokescan.datasets.splits import ctich_kaggle_folds
from strokescan.preprocessing.pipeline import SlicePlan
from strokescan.training.classifier import TrainConfig, train_classifier
from strokescan.training.features import cached_features

log = logging.getLogger(__name__)


def ctich_manifest() -> pd.DataFrame:
    """ctich-kaggle manifest in a fixed order (sorted by image path), the order of the feature cache."""
    return load_ctich_kaggle().sort_values("image_path").reset_index(drop=True)


def train_ctich_classifier(run_dir: Path, model_dir: Path, cfg: TrainConfig | None = None) -> pd.DataFrame:
    """Train and cross-validate the slice classifier; returns the out-of-fold predictions."""
    cfg = cfg or TrainConfig()
    plan = SlicePlan()
    manifest = ctich_manifest()
    folds = ctich_kaggle_folds()
    feats = cached_features(manifest["image_path"].tolist(), plan, cfg.n_views, cfg.seed)
    oof, _ = train_classifier(manifest, feats, folds, cfg, run_dir, model_dir, plan)
    return oof
