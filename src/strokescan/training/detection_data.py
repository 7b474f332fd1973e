"""The labelled slices of the hemorrhage detector, in scan order, with their folds and cached model inputs.

Sources: ctich-kaggle (slice labels and subtypes; patient 49's from ctich-masks, where CT-ICH's own masks label
it), phe-sich (derived slice label: edema mask or lesion box; subtypes unknown) and the bhsd-mini positives
(subtypes from the mask colours). Each patient is one scan. Folds: ctich-kaggle keeps its committed folds; the
other sources get patient-grouped folds of their own, committed beside them.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from strokescan.config import cache_root
from strokescan.core.geometry import rotate_image
from strokescan.core.labels import HEMORRHAGE_SUBTYPES
from strokescan.datasets.lesion_masks import training_rotation
from strokescan.datasets.local import load_bhsd_mini, load_ctich_kaggle, load_ctich_masks, load_phe_sich
from strokescan.datasets.splits import SPLITS_DIR, ctich_kaggle_folds, fold_of, load_or_create_folds
from strokescan.io import load_scan
from strokescan.models.classifier import SliceClassifier
from strokescan.preprocessing.pipeline import SlicePlan, prepare_slice
from strokescan.training.features import cache_key
from strokescan.training.hospital_augmentation import HospitalAugmentation, hospital_variant

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


def _view_inputs(manifest: pd.DataFrame, rows: range, plan: SlicePlan, angles: dict[str, float], view: int,
                 rng: np.random.Generator, aug: HospitalAugmentation) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3, S, S) float32 inputs and brain fractions of ``rows``: view 0 as the slice is (turned upright), the
    other views as another hospital might have exported it (:func:`hospital_variant` of the upright slice)."""
    inputs = np.zeros((len(rows), 3, plan.size, plan.size), np.float32)
    brain = np.zeros(len(rows), np.float32)
    for k, i in enumerate(rows):
        scan = load_scan(manifest["image_path"].iat[i])
        angle = angles.get(manifest["patient"].iat[i], 0.0)
        if view == 0:
            prepared = prepare_slice(scan.pixels[0], scan.is_hu, plan, rotation_deg=angle)
        else:
            upright = rotate_image(scan.pixels[0], -angle) if angle else scan.pixels[0]
            prepared = prepare_slice(hospital_variant(upright, rng, aug), False, plan)
        inputs[k], brain[k] = prepared.channels, prepared.brain_fraction
    return inputs, brain


def cached_detection_features(manifest: pd.DataFrame, plan: SlicePlan, n_views: int, seed: int,
                              aug: HospitalAugmentation | None = None, batch: int = 32
                              ) -> tuple[torch.Tensor, np.ndarray]:
    """Frozen-trunk features (views, N, C, h, w) float16 and view 0's brain fractions for every manifest row.

    View 0 is each slice as it is; views 1.. are :func:`hospital_variant` draws (seeded by ``seed`` and the view).
    Each view is cached on its own under the cache folder as soon as it is done, so an interrupted run resumes
    with the next view.
    """
    aug = aug or HospitalAugmentation()
    folder = cache_root() / "features"
    folder.mkdir(parents=True, exist_ok=True)
    key = cache_key(manifest["image_path"].tolist() + [json.dumps(aug.to_dict())], plan, n_views, seed)
    angles = training_rotation(manifest)
    model = SliceClassifier(pretrained=True).eval()
    views, brain = [], None
    for view in range(n_views):
        target = folder / f"detection_hospital_{key}_view{view}.pt"
        if target.exists():
            data = torch.load(target, weights_only=False)
        else:
            rng = np.random.default_rng([seed, view])
            chunks, fractions = [], []
            for start in tqdm(range(0, len(manifest), batch), desc=f"features view {view + 1}/{n_views}",
                              unit="batch", mininterval=10):
                x, b = _view_inputs(manifest, range(start, min(start + batch, len(manifest))), plan, angles, view,
                                    rng, aug)
                with torch.no_grad():
                    chunks.append(model.trunk(torch.from_numpy(x)).half())
                fractions.append(b)
            data = {"features": torch.cat(chunks), "brain_fraction": np.concatenate(fractions)}
            tmp = target.with_suffix(".tmp")
            torch.save(data, tmp)
            tmp.rename(target)  # atomic: an interrupted run never leaves a half-written view
        views.append(data["features"])
        if view == 0:
            brain = np.asarray(data["brain_fraction"], np.float32)
    return torch.stack(views), brain
