"""Does our segmentation encoder carry more hemorrhage information than ImageNet's? A paired linear probe.

The classifier's frozen trunk (stem + EfficientNet-Lite0 blocks 0-13) is filled either with ImageNet weights or
with the encoder of a trained segmenter (`SliceClassifier.load_encoder_from_segmenter`); global-average-pooled
features of view 0 go into the same logistic regression as `studies/seed_comparison.py` (row 4), on the
committed patient folds of ctich-kaggle.

Honesty: the segmenter trained on ctich-kaggle label-0 slices of some patients. Only patients in the
segmenter run's held-out test fold and early-stopping fold (never trained on) are used, for both encoders;
the probe's 5-fold CV runs within them. phe-sich is not reported: the segmenter trained on it.

    .venv/bin/python studies/segmentation_encoder_probe.py --segmenter runs/segmentation/fold0/model

Writes reports/classifier/segmentation_encoder.{json,md}: AUC of both with 95 % patient-bootstrap CIs and the
paired difference.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from strokescan.config import SEED
from strokescan.datasets.splits import ctich_kaggle_folds, read_folds
from strokescan.evaluation.metrics import patient_bootstrap, roc_auc
from strokescan.models.classifier import SliceClassifier
from strokescan.models.unet import load_segmenter
from strokescan.preprocessing.pipeline import SlicePlan
from strokescan.training.features import cached_features, cached_inputs, trunk_features
from strokescan.training.probe import linear_probe
from strokescan.training.workflow import ctich_manifest


def unseen_ctich_patients(segmenter_plan) -> set[str]:
    """ctich-kaggle patients in the segmenter run's test and validation folds (never in its training set)."""
    t = segmenter_plan.training
    folds = read_folds(t["folds_file"])
    keep = set()
    for k in (t["test_fold"], t["val_fold"]):
        keep.update(p for p in folds["folds"][str(k)] if p.startswith("ctich-kaggle:"))
    return keep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--segmenter", type=Path, default=Path("runs/segmentation/fold0/model"),
                    help="a fold model of strokescan train segmenter (its plan names its folds)")
    ap.add_argument("--out", type=Path, default=Path("reports/classifier"))
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(a.threads)

    unet, seg_plan = load_segmenter(a.segmenter)
    manifest = ctich_manifest()
    paths = manifest["image_path"].tolist()
    plan = SlicePlan()
    unseen = unseen_ctich_patients(seg_plan)
    rows = np.nonzero(manifest["patient"].astype(str).isin(unseen).to_numpy() & manifest["label"].notna().to_numpy())[0]
    sub = manifest.iloc[rows].reset_index(drop=True)
    folds = ctich_kaggle_folds()

    imagenet = cached_features(paths, plan, 3, SEED)[:1, rows]
    classifier = SliceClassifier(pretrained=False)
    classifier.load_encoder_from_segmenter(unet)
    segmentation = trunk_features(classifier, cached_inputs(paths, plan)[rows], 1, SEED)

    frame = pd.DataFrame({"patient": sub["patient"], "label": sub["label"].astype(float),
                          "imagenet": linear_probe(imagenet, sub, folds),
                          "segmentation": linear_probe(segmentation, sub, folds)})

    def stat(g: pd.DataFrame) -> dict:
        y = g["label"].to_numpy()
        a_img, a_seg = roc_auc(y, g["imagenet"].to_numpy()), roc_auc(y, g["segmentation"].to_numpy())
        return {"auc_imagenet": a_img, "auc_segmentation": a_seg, "difference": a_seg - a_img}

    res = patient_bootstrap(frame, stat)

    def ci(m: dict) -> str:  # brackets: a difference's bounds may be negative
        return f"{m['value']:.3f} [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]"

    n_pos = int(frame["label"].sum())
    out = {"segmenter": str(a.segmenter), "segmenter_sha256": seg_plan.weights_sha256[:16],
           "patients": int(frame["patient"].nunique()), "slices": len(frame), "positive_slices": n_pos,
           "positive_patients": int(frame.groupby("patient")["label"].max().sum()), "metrics": res}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "segmentation_encoder.json").write_text(json.dumps(out, indent=2))
    lines = [
        "# Classifier features: ImageNet encoder vs our segmentation encoder (paired linear probe)",
        "",
        (f"Segmenter `{a.segmenter}` (sha256 {out['segmenter_sha256']}); ctich-kaggle patients it never trained "
         f"on: {out['patients']} patients ({out['positive_patients']} with hemorrhage), {len(frame)} slices "
         f"({n_pos} positive). Probe: `studies/seed_comparison.py` row 4 (logistic regression C=0.1 on pooled "
         "trunk features), committed folds restricted to these patients; 95 % CI: 1000 patient bootstrap "
         "resamples."),
        "",
        "| encoder | slice ROC-AUC [95% CI] |",
        "|---|---|",
        f"| ImageNet (EfficientNet-Lite0) | {ci(res['auc_imagenet'])} |",
        f"| our segmentation U-Net's encoder | {ci(res['auc_segmentation'])} |",
        f"| difference (segmentation - ImageNet) | {ci(res['difference'])} |",
        "",
        "Command: `.venv/bin/python studies/segmentation_encoder_probe.py --segmenter " + str(a.segmenter) + "`",
    ]
    (a.out / "segmentation_encoder.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
