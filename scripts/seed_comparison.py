"""The seed project's way next to ours, on ctich-kaggle (writes reports/classifier/seed_comparison.{json,md}).

Rows: (1) the seed's CNN from scratch on the Kaggle folder labels with a random image-level split, (2) the same
CNN and labels under our patient-grouped folds, (3) the same CNN on slice-level labels under our folds (the
from-scratch baseline for transfer learning), (4) a linear probe on frozen ImageNet features, (5) our
classifier (out-of-fold predictions of `strokescan train`). CIs: 1000 bootstrap resamples of patients
(images for row 1, as the seed's protocol ignores patients).

    .venv/bin/python scripts/seed_comparison.py [--run-dir runs/classifier] [--out reports/classifier]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from strokescan.config import SEED
from strokescan.datasets.splits import ctich_kaggle_folds
from strokescan.evaluation.metrics import format_ci, patient_bootstrap, point_metrics
from strokescan.preprocessing.pipeline import SlicePlan
from strokescan.training.features import cached_features
from strokescan.training.seed_baseline import image_split_run, patient_cv_run, seed_inputs
from strokescan.training.workflow import ctich_manifest


def _stats(frame: pd.DataFrame, group: str = "patient") -> dict:
    f = frame.rename(columns={group: "patient"}) if group != "patient" else frame
    return patient_bootstrap(
        f.reset_index(drop=True),
        lambda g: {k: v for k, v in point_metrics(g["label"].to_numpy(), g["probability"].to_numpy(), 0.5).items()
                   if k in ("roc_auc", "accuracy")},
    )


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", default="runs/classifier")
    ap.add_argument("--out", default="reports/classifier")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = ctich_manifest()
    folds = ctich_kaggle_folds()
    x = seed_inputs(manifest["image_path"].tolist())
    folder_y = (manifest["folder_label"] == "Stroke").to_numpy(float)
    slice_y = manifest["label"].to_numpy(float)
    rows, timings = {}, {}

    t = time.time()
    r = image_split_run(x, folder_y, seed=SEED)
    timings["seed_image_split"] = time.time() - t
    f = pd.DataFrame({"image": r["rows"], "label": folder_y[r["rows"]], "probability": r["probability"]})
    rows["1. seed CNN, folder labels, random image split"] = {"n": len(f), "stats": _stats(f, "image")}

    t = time.time()
    p = patient_cv_run(x, folder_y, manifest["patient"], folds["folds"], seed=SEED)
    timings["seed_patient_cv_folder_labels"] = time.time() - t
    f = pd.DataFrame({"patient": manifest["patient"], "label": folder_y, "probability": p})
    rows["2. seed CNN, folder labels, patient 5-fold"] = {"n": len(f), "stats": _stats(f)}

    t = time.time()
    p = patient_cv_run(x, slice_y, manifest["patient"], folds["folds"], seed=SEED)
    timings["seed_patient_cv_slice_labels"] = time.time() - t
    f = pd.DataFrame({"patient": manifest["patient"], "label": slice_y, "probability": p}).dropna()
    rows["3. seed CNN from scratch, slice labels, patient 5-fold"] = {"n": len(f), "stats": _stats(f)}

    feats = cached_features(manifest["image_path"].tolist(), SlicePlan(), 3, SEED)
    p = linear_probe(feats, manifest, folds)
    f = pd.DataFrame({"patient": manifest["patient"], "label": slice_y, "probability": p}).dropna()
    rows["4. frozen ImageNet features + logistic regression, slice labels, patient 5-fold"] = {"n": len(f), "stats": _stats(f)}
    p = linear_probe(feats, manifest, folds, context=True)
    f = pd.DataFrame({"patient": manifest["patient"], "label": slice_y, "probability": p}).dropna()
    rows["4b. as 4, plus the two neighbouring slices' features (2.5-D context)"] = {"n": len(f), "stats": _stats(f)}

    oof_file = Path(args.run_dir) / "oof_predictions.csv"
    if oof_file.exists():
        oof = pd.read_csv(oof_file).dropna(subset=["label"])
        f = oof[["patient", "label", "probability"]]
        rows["5. strokescan (ImageNet EfficientNet-Lite0, top fine-tuned), slice labels, patient 5-fold"] = {
            "n": len(f), "stats": _stats(f)}

    (out / "seed_comparison.json").write_text(json.dumps({"rows": rows, "seconds": timings}, indent=2))
    lines = ["| setting | n slices | ROC-AUC (95% CI) | accuracy at 0.5 (95% CI) |", "|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['n']} | {format_ci(r['stats']['roc_auc'])} | {format_ci(r['stats']['accuracy'])} |")
    table = "\n".join(lines)
    (out / "seed_comparison.md").write_text(table + "\n")
    print(table)
    print(json.dumps({"seconds": timings}))


if __name__ == "__main__":
    main()
