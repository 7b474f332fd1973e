"""The labelled slices of the hemorrhage detector, in scan order, with their folds and cached model inputs.

Sources: ctich-kaggle (slice labels and subtypes; patient 49's from ctich-masks, where CT-ICH's own masks label
it), phe-sich (derived slice label: edema mask or lesion box; subtypes unknown) and the bhsd-mini positives
(subtypes from the mask colours). Each patient is one scan. Folds: ctich-kaggle keeps its committed folds; the
other sources get patient-grouped folds of their own, committed beside them.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from strokescan.config import cache_root
from strokescan.core.labels import HEMORRHAGE_SUBTYPES
from strokescan.datasets.lesion_masks import training_rotation
from strokescan.datasets.local import load_bhsd_mini, load_ctich_kaggle, load_ctich_masks, load_phe_sich
from strokescan.datasets.splits import SPLITS_DIR, ctich_kaggle_folds, fold_of, load_or_create_folds
from strokescan.io import load_scan
from strokescan.models.classifier import SliceClassifier
from strokescan.preprocessing.pipeline import SlicePlan, prepare_slice
from strokescan.training.features import cache_key, trunk_features

log = logging.getLogger(__name__)

SOURCES = ("ctich-kaggle", "phe-sich", "bhsd-mini")
EXTRA_FOLDS = SPLITS_DIR / "detection_extra_5fold.json"  # phe-sich and bhsd-mini patients
COLUMNS = ["image_path", "source", "patient", "slice_index", "label", *HEMORRHAGE_SUBTYPES, "label_note"]


def _ctich() -> pd.DataFrame:
    kaggle = load_ctich_kaggle()
    masks = load_ctich_masks().set_index("image_path")
    unknown = kaggle["label"].isna() & kaggle["image_path"].isin(masks.index)
    paths = kaggle.loc[unknown, "image_path"]
    kaggle.loc[unknown, "label"] = masks.loc[paths, "label"].to_numpy()
    kaggle.loc[unknown, "slice_index"] = masks.loc[paths, "slice_index"].to_numpy()
    for col in HEMORRHAGE_SUBTYPES:
        kaggle[col] = kaggle[col].astype("Float64")
        kaggle.loc[unknown, col] = masks.loc[paths, col].to_numpy().astype(float)
    kaggle.loc[unknown, "label_note"] = "from ctich-masks (CT-ICH's clot masks): label = mask holds blood"
    return kaggle[kaggle["label"].notna()]


def detection_manifest(sources: tuple[str, ...] = SOURCES) -> pd.DataFrame:
    """Labelled slices of ``sources``, sorted by source, patient and slice (the order of the feature cache)."""
    loaders = {"ctich-kaggle": _ctich, "phe-sich": load_phe_sich, "bhsd-mini": load_bhsd_mini}
    parts = []
    for name in sources:
        df = loaders[name]()
        for col in COLUMNS:
            if col not in df.columns:
                df[col] = pd.NA
        parts.append(df[COLUMNS])
    out = pd.concat(parts, ignore_index=True)
    for col in ("label", *HEMORRHAGE_SUBTYPES):
        out[col] = pd.to_numeric(out[col], errors="coerce").astype(float)
    out["slice_index"] = pd.to_numeric(out["slice_index"], errors="coerce")
    return out.sort_values(["source", "patient", "slice_index", "image_path"]).reset_index(drop=True)


def detection_folds(manifest: pd.DataFrame) -> dict[str, int]:
    """patient -> fold (0-4): ctich-kaggle's committed folds, the committed extra folds for the other sources."""
    mapping = fold_of(ctich_kaggle_folds())
    extra = manifest[manifest["source"] != "ctich-kaggle"]
    if not extra.empty:
        folds = load_or_create_folds(load_phe_sich().pipe(lambda d: pd.concat([d, load_bhsd_mini()])),
                                     EXTRA_FOLDS, dataset="phe-sich,bhsd-mini")
        mapping.update(fold_of(folds))
    missing = set(manifest["patient"]) - set(mapping)
    if missing:
        raise ValueError(f"patients in no fold: {sorted(missing)[:3]}")
    return mapping


def cached_detection_inputs(manifest: pd.DataFrame, plan: SlicePlan) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3, S, S) float16 inputs, upright, and (N,) brain fractions; cached under the cache folder."""
    folder = cache_root() / "features"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"detection_inputs_{cache_key(manifest['image_path'].tolist(), plan, 0, 1)}.npz"
    if target.exists():
        data = np.load(target)
        return data["inputs"], data["brain_fraction"]
    angles = training_rotation(manifest)
    inputs = np.zeros((len(manifest), 3, plan.size, plan.size), np.float16)
    brain = np.zeros(len(manifest), np.float32)
    rows = list(zip(manifest["image_path"], manifest["patient"]))
    for i, (path, patient) in enumerate(tqdm(rows, desc="preprocess", unit="slice", mininterval=10)):
        scan = load_scan(path)
        prepared = prepare_slice(scan.pixels[0], scan.is_hu, plan, rotation_deg=angles.get(patient, 0.0))
        inputs[i], brain[i] = prepared.channels, prepared.brain_fraction
    tmp = target.with_suffix(".tmp.npz")
    np.savez(tmp, inputs=inputs, brain_fraction=brain)
    tmp.rename(target)
    return inputs, brain


def cached_detection_features(manifest: pd.DataFrame, plan: SlicePlan, n_views: int, seed: int
                              ) -> tuple[torch.Tensor, np.ndarray]:
    """Frozen-trunk features (views, N, C, h, w) float16 and brain fractions for every manifest row."""
    folder = cache_root() / "features"
    target = folder / f"detection_trunk_{cache_key(manifest['image_path'].tolist(), plan, n_views, seed)}.pt"
    inputs, brain = cached_detection_inputs(manifest, plan)
    if target.exists():
        return torch.load(target, weights_only=True), brain
    feats = trunk_features(SliceClassifier(pretrained=True), inputs, n_views, seed)
    tmp = target.with_suffix(".tmp")
    torch.save(feats, tmp)
    tmp.rename(target)
    return feats, brain
