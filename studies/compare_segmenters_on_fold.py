"""Two segmenters on one fold of a run, in the input grid, slice by slice: the ship rule of a new segmenter.

    .venv/bin/python studies/compare_segmenters_on_fold.py runs/seg_clot --fold 1 \
        --new runs/seg_clot/model --old src/strokescan/resources/models/segmenter

Prints, per source and lesion class, the mean Dice on slices that hold the class (and pooled over sources for
hemorrhage), and the false-positive slice rate on slices without it, for both models and the threshold
baseline, with paired new-minus-old differences (patient-bootstrap 95 % CI). Use the run's validation fold
to decide (``--fold 1`` for a run holding out fold 0); read the held-out fold only after deciding.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from strokescan.datasets.lesion_masks import build_segmentation_manifest
from strokescan.datasets.splits import fold_of, read_folds
from strokescan.errors import StrokescanError
from strokescan.evaluation.metrics import patient_bootstrap
from strokescan.models.unet import load_segmenter
from strokescan.training.segmenter import build_cache, evaluate_on


def _table(run_dir: Path, fold: int, models: dict[str, Path]) -> pd.DataFrame:
    folds = read_folds(run_dir / "folds.json")
    manifest = build_segmentation_manifest()
    tables = []
    for name, folder in models.items():
        model, plan = load_segmenter(folder)
        data = build_cache(manifest, plan.slice_plan)
        part = data.subset(np.nonzero(data.rows["patient"].map(fold_of(folds)).to_numpy() == fold)[0])
        t = evaluate_on(model, part, baseline_k=2.0, plan=plan)
        t.loc[t["method"] == "unet", "method"] = name
        tables.append(t if not tables else t[t["method"] == name])
    return pd.concat(tables, ignore_index=True)


def _mean_ci(frame: pd.DataFrame, value: str) -> str:
    if frame.empty:
        return "n/a"
    est = patient_bootstrap(frame.reset_index(drop=True), lambda f: {"mean": float(f[value].mean())})["mean"]
    return f"{est['value']:.3f} [{est['ci95'][0]:.2f}, {est['ci95'][1]:.2f}]"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--fold", type=int, required=True)
    ap.add_argument("--new", type=Path, required=True)
    ap.add_argument("--old", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, help="also write the per-slice table (CSV) here")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    try:
        table = _table(a.run_dir, a.fold, {"new": a.new, "old": a.old})
    except StrokescanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if a.out:
        table.to_csv(a.out, index=False)
    pos = table[table["true_px"] > 0].copy()
    pooled = pos[pos["class"] == "hemorrhage"].assign(source="all")
    rows = []
    for (src, cls), g in pd.concat([pos, pooled]).groupby(["source", "class"]):
        wide = g.pivot_table(index=["patient", "image_path", "frame"], columns="method", values="dice").reset_index()
        line = {"source": src, "class": cls, "n_slices": len(wide), "n_patients": wide["patient"].nunique()}
        for m in ("new", "old", "threshold"):
            if m in wide:
                line[m] = _mean_ci(wide.rename(columns={m: "v"}).dropna(subset=["v"]), "v")
        if {"new", "old"} <= set(wide):
            d = wide.assign(v=wide["new"] - wide["old"]).dropna(subset=["v"])
            line["new - old"] = _mean_ci(d, "v")
        rows.append(line)
    neg = table[table["true_px"] == 0]
    fp = (neg.assign(fp=(neg["pred_px"] > 0).astype(float)).groupby(["source", "class", "method"])["fp"].mean()
          .unstack("method").round(3))
    print(f"fold {a.fold}: Dice on slices holding the class (mean [95 % CI over patients])")
    print(pd.DataFrame(rows).to_string(index=False))
    print("\nfalse-positive slice rate on slices without the class")
    print(fp.to_string())
    print("\nJSON " + json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
