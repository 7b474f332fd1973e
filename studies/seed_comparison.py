"""The seed project's way next to ours, on ctich-kaggle (writes reports/classifier/seed_comparison.{json,md}).

Rows: (1) the seed's CNN from scratch on the Kaggle folder labels with a random image-level split, (2) the same
CNN and labels under our patient-grouped folds, (3) the same CNN on slice-level labels under our folds (the
from-scratch baseline for transfer learning), (4) a linear probe on frozen ImageNet features, (5) our
classifier (out-of-fold predictions of `strokescan train`). CIs: 1000 bootstrap resamples of patients
(images for row 1, as the seed's protocol ignores patients).

    .venv/bin/python studies/seed_comparison.py [--run-dir runs/classifier] [--out reports/classifier]
    # or in parallel, then assemble:  --parts image_split,folder_cv & --parts slice_cv,probe,probe_context & ...
    .venv/bin/python studies/seed_comparison.py --parts ''
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

from strokescan.config import SEED
from strokescan.datasets.splits import ctich_kaggle_folds
from strokescan.evaluation.metrics import format_ci, patient_bootstrap, point_metrics
from strokescan.preprocessing.pipeline import SlicePlan
from strokescan.training.features import cached_features
from strokescan.training.probe import linear_probe
from strokescan.training.seed_baseline import (
    image_split_run,
    patient_cv_run,
    seed_inputs,
)
from strokescan.training.workflow import ctich_manifest


def _stats(frame: pd.DataFrame) -> dict:
    """ROC-AUC and accuracy at 0.5 with CIs from resampling ``frame["patient"]`` groups."""
    return patient_bootstrap(
        frame.reset_index(drop=True),
        lambda g: {k: v for k, v in point_metrics(g["label"].to_numpy(), g["probability"].to_numpy(), 0.5).items()
                   if k in ("roc_auc", "accuracy")},
    )


PARTS = {
    "image_split": "1. seed CNN, folder labels, random image split",
    "folder_cv": "2. seed CNN, folder labels, patient 5-fold",
    "slice_cv": "3. seed CNN from scratch, slice labels, patient 5-fold",
    "probe": "4. frozen ImageNet features + logistic regression, slice labels, patient 5-fold",
    "probe_context": "4b. as 4, plus the two neighbouring slices' features (2.5-D context)",
}
OURS = "5. strokescan (ImageNet EfficientNet-Lite0, top fine-tuned), slice labels, patient 5-fold"


def compute_part(part: str, manifest: pd.DataFrame, folds: dict, seed_x: np.ndarray | None) -> pd.DataFrame:
    """Scores of one comparison row: columns group (patient, or image for the image split), label, probability."""
    folder_y = (manifest["folder_label"] == "Stroke").to_numpy(float)
    slice_y = manifest["label"].to_numpy(float)
    patients = manifest["patient"]
    if part == "image_split":
        r = image_split_run(seed_x, folder_y, seed=SEED)
        return pd.DataFrame({"group": r["rows"], "label": folder_y[r["rows"]], "probability": r["probability"]})
    if part in ("folder_cv", "slice_cv"):
        y = folder_y if part == "folder_cv" else slice_y
        p = patient_cv_run(seed_x, y, patients, folds["folds"], seed=SEED)
    else:
        feats = cached_features(manifest["image_path"].tolist(), SlicePlan(), 3, SEED)
        p = linear_probe(feats, manifest, folds, context=part == "probe_context")
        y = slice_y
    return pd.DataFrame({"group": patients, "label": y, "probability": p}).dropna()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", default="runs/classifier")
    ap.add_argument("--out", default="reports/classifier")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parts", default=",".join(PARTS),
                    help="rows to compute (each is stored and reused: run parts in parallel processes, then once "
                    "more with --parts '' to write the table)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    parts_dir = out / "seed_comparison_parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    manifest = ctich_manifest()
    folds = ctich_kaggle_folds()
    todo = [p for p in args.parts.split(",") if p and not (parts_dir / f"{p}.csv").exists()]
    unknown = set(todo) - set(PARTS)
    if unknown:
        ap.error(f"unknown parts {sorted(unknown)}; choose from {list(PARTS)}")
    seed_x = seed_inputs(manifest["image_path"].tolist()) if {"image_split", "folder_cv", "slice_cv"} & set(todo) else None
    for part in todo:
        t = time.time()
        frame = compute_part(part, manifest, folds, seed_x)
        frame.to_csv(parts_dir / f"{part}.csv", index=False)
        (parts_dir / f"{part}.json").write_text(json.dumps({"seconds": time.time() - t, "threads": args.threads}))

    rows, timings = {}, {}
    for part, name in PARTS.items():
        if (parts_dir / f"{part}.csv").exists():
            f = pd.read_csv(parts_dir / f"{part}.csv")
            rows[name] = {"n": len(f), "stats": _stats(f.rename(columns={"group": "patient"}))}
            timings[part] = json.loads((parts_dir / f"{part}.json").read_text())["seconds"]
    oof_file = Path(args.run_dir) / "oof_predictions.csv"
    if oof_file.exists():
        f = pd.read_csv(oof_file).dropna(subset=["label"])[["patient", "label", "probability"]]
        rows[OURS] = {"n": len(f), "stats": _stats(f)}

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
