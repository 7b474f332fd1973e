"""Clot figures a clinician reads, from the held-out per-slice tables of one segmentation run or of the runs of
a cross-validation (ctich-masks patients): Dice per subtype, lesion-level sensitivity, false-positive slices,
per-patient volume agreement; with several folds also the figures per fold, and per source the U-Net beside the
threshold baseline (paired).

    .venv/bin/python studies/segmentation_clinical_figures.py runs/seg_clot [--out reports/segmentation/clot.md]
    .venv/bin/python studies/segmentation_clinical_figures.py RUN_A RUN_B RUN_C   # a CV split over three runs

Volumes: the ctich-kaggle JPEGs carry no spacing. CT-ICH's raw export is 512 x 512 with 5 mm slices; its pixel
spacing is taken as 0.5 mm here (an assumption, stated in the output), so one JPEG pixel (650 px for 512)
is (0.5 * 512 / 650)^2 mm^2 and one pixel-slice 5x that in mm^3. The "within 25 %" and ICC figures do not
depend on that scale; the mL values and the 1 mL cut do. CIs: 95 %, 1000 bootstrap resamples of patients.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from strokescan.datasets.local import CTICH_JPEG_PIXEL_MM, CTICH_SLICE_MM, SUBTYPES, load_ctich_masks
from strokescan.evaluation.metrics import patient_bootstrap, volume_agreement
from strokescan.evaluation.segmentation import compare_methods

ML_PER_PIXEL = CTICH_JPEG_PIXEL_MM * CTICH_JPEG_PIXEL_MM * CTICH_SLICE_MM / 1000.0


def _ci(frame: pd.DataFrame, stat) -> str:
    est = patient_bootstrap(frame.reset_index(drop=True), lambda f: {"s": float(stat(f))})["s"]
    return f"{est['value']:.3f} [{est['ci95'][0]:.2f}, {est['ci95'][1]:.2f}]"


def per_fold(table: pd.DataFrame) -> list[str]:
    """One row per held-out fold and one pooled: the U-Net's clot, false-positive, phe-sich and bhsd figures."""
    def row(name: str, t: pd.DataFrame) -> str:
        u = t[t["method"] == "unet"]
        clot = u[(u["class"] == "hemorrhage") & (u["source"] == "ctich-masks")]
        pos, neg = clot[clot["true_px"] > 0], clot[clot["true_px"] == 0]
        phe = u[(u["source"] == "phe-sich") & (u["true_px"] > 0)]
        bhsd = u[(u["source"] == "bhsd-mini") & (u["class"] == "hemorrhage") & (u["true_px"] > 0)]

        def mean(f: pd.DataFrame) -> str:
            return f"{f['dice'].mean():.3f} ({len(f)})" if len(f) else "n/a"
        return (f"| {name} | {pos['patient'].nunique()} | {mean(pos)} | "
                f"{(neg['pred_px'] > 0).mean():.3f} ({len(neg)}) | {mean(phe[phe['class'] == 'hemorrhage'])} | "
                f"{mean(phe[phe['class'] == 'edema'])} | {mean(bhsd)} |")
    lines = ["| held-out fold | ctich patients with blood | ctich clot Dice (slices) | lesion-free slices with clot (n) "
             "| phe-sich derived clot Dice (slices) | phe-sich edema Dice (slices) | bhsd-mini clot Dice (slices) |",
             "|---|---|---|---|---|---|---|"]
    lines += [row(str(k), g) for k, g in table.groupby("fold")]
    return [*lines, row("pooled", table)]


def beside_baseline(table: pd.DataFrame) -> list[str]:
    """Per source and class, the U-Net minus the threshold baseline on the same slices (paired, 95 % CI)."""
    paired = compare_methods(table)
    lines = ["| source | class | slices (patients) | U-Net | baseline | difference [95 % CI] |", "|---|---|---|---|---|---|"]
    for r in paired.to_dict("records"):
        lo, hi = r["difference_ci95"]
        lines.append(f"| {r['source']} | {r['class']} | {r['n_slices']} ({r['n_patients']}) | {r['dice_method']:.3f} | "
                     f"{r['dice_baseline']:.3f} | {r['dice_difference']:+.3f} [{lo:+.3f}, {hi:+.3f}] |")
    return lines


def figures(table: pd.DataFrame) -> list[str]:
    ct = table[(table["source"] == "ctich-masks") & (table["class"] == "hemorrhage")]
    subtypes = load_ctich_masks()[["image_path", *SUBTYPES.values()]]
    ct = ct.merge(subtypes, on="image_path", how="left")
    lines = [f"ctich-masks held-out slices: {ct['image_path'].nunique()} of {ct['patient'].nunique()} patients"]
    lines += ["", "| method | subtype | slices (patients) | Dice on slices with blood |", "|---|---|---|---|"]
    for method, g in ct.groupby("method"):
        pos = g[g["true_px"] > 0]
        lines.append(f"| {method} | any | {len(pos)} ({pos['patient'].nunique()}) | {_ci(pos, lambda f: f['dice'].mean())} |")
        for sub in SUBTYPES.values():
            s = pos[pos[sub] == 1]
            if len(s):
                lines.append(f"| {method} | {sub} | {len(s)} ({s['patient'].nunique()}) | "
                             f"{_ci(s, lambda f: f['dice'].mean())} |")
    lines += ["", "| method | lesion-level sensitivity (found / lesions) | lesion-free slices with any clot pixel |",
              "|---|---|---|"]
    for method, g in ct.groupby("method"):
        pos, neg = g[g["true_px"] > 0], g[g["true_px"] == 0]
        sens = f"{int(pos['found'].sum())} / {int(pos['lesions'].sum())} = {pos['found'].sum() / max(pos['lesions'].sum(), 1):.3f}"
        fp = _ci(neg, lambda f: (f["pred_px"] > 0).mean()) if len(neg) else "n/a"
        lines.append(f"| {method} | {sens} | {fp} (n = {len(neg)}) |")
    lines += ["", f"Per-patient clot volume (mL with the assumed spacing, {ML_PER_PIXEL * 1000:.3f} mm^3 per pixel-slice), "
              "patients with a reference of at least 1 mL:", "",
              "| method | patients | within 25 % of the reference | mean difference (mL) | 95 % limits of agreement (mL) | ICC(2,1) |",
              "|---|---|---|---|---|---|"]
    for method, g in ct.groupby("method"):
        vol = g.groupby("patient")[["pred_px", "true_px"]].sum() * ML_PER_PIXEL
        vol = vol[vol["true_px"] >= 1.0]
        if len(vol) < 2:
            lines.append(f"| {method} | {len(vol)} | n/a | n/a | n/a | n/a |")
            continue
        agree = volume_agreement(vol["pred_px"].to_numpy(), vol["true_px"].to_numpy())
        lines.append(f"| {method} | {len(vol)} | {agree['within']:.2f} | {agree['mean_diff']:+.2f} | "
                     f"{agree['loa_low']:+.2f} to {agree['loa_high']:+.2f} | {agree['icc']:.3f} |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path, nargs="+", help="run folders holding fold<k>/per_slice.csv")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    paths = sorted(p for run in a.run_dir for p in run.glob("fold*/per_slice.csv"))
    if not paths:
        print(f"error: no fold*/per_slice.csv in {', '.join(map(str, a.run_dir))}", file=sys.stderr)
        return 2
    table = pd.concat([pd.read_csv(p, dtype={"source_patient": str}) for p in paths], ignore_index=True)
    if table.duplicated(["method", "class", "image_path", "frame"]).any():
        print("error: a slice is held out in two of these tables: give each fold once", file=sys.stderr)
        return 2
    lines = figures(table)
    if table["fold"].nunique() > 1:
        lines += ["", f"Per held-out fold ({table['fold'].nunique()} folds; U-Net):", "", *per_fold(table)]
    lines += ["", "U-Net beside the threshold baseline, paired on the same slices holding the class:", "",
              *beside_baseline(table)]
    text = "\n".join(lines)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
