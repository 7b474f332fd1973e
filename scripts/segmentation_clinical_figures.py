"""Clot figures a clinician reads, from a segmentation run's held-out per-slice tables (ctich-masks patients):
Dice per subtype, lesion-level sensitivity, false-positive slices, and per-patient volume agreement.

    .venv/bin/python scripts/segmentation_clinical_figures.py runs/seg_clot [--out reports/segmentation/clot.md]

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

ML_PER_PIXEL = CTICH_JPEG_PIXEL_MM * CTICH_JPEG_PIXEL_MM * CTICH_SLICE_MM / 1000.0


def _ci(frame: pd.DataFrame, stat) -> str:
    est = patient_bootstrap(frame.reset_index(drop=True), lambda f: {"s": float(stat(f))})["s"]
    return f"{est['value']:.3f} [{est['ci95'][0]:.2f}, {est['ci95'][1]:.2f}]"


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
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    tables = [pd.read_csv(p) for p in sorted(a.run_dir.glob("fold*/per_slice.csv"))]
    if not tables:
        print(f"error: no fold*/per_slice.csv in {a.run_dir}", file=sys.stderr)
        return 2
    text = "\n".join(figures(pd.concat(tables, ignore_index=True)))
    print(text)
    if a.out:
        a.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
