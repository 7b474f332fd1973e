"""Per-patient clot volume on held-out CT-ICH patients: the segmenter's planimetric volume and ABC/2 beside the
reference outline's, as clinicians measure it (issue 19).

    .venv/bin/python studies/clot_volumes.py --folds reports/segmentation/folds_v0.4.0.json \
        --fold 0 --model src/strokescan/resources/models/segmenter [--fold 1 --model runs/cv/fold1/model ...] \
        --out reports/segmentation/clot_volumes.md [--plot reports/segmentation/clot_volumes.png]

For each (fold, model) pair, every ctich-masks patient of that held-out fold whose reference clot is at least
1 mL: the patient's JPEGs in slice order, each read and segmented as ``strokescan predict`` does; the model's
clot (class 1), the threshold baseline (with the model's own training-fold setting) and CT-ICH's mask, stacked
into a volume and measured by :func:`strokescan.inference.quantification.quantify_series` with the assumed
spacing (:data:`strokescan.datasets.local.CTICH_JPEG_PIXEL_MM`, 5 mm slices). ABC/2: on the largest 3-D
component (A, B: the longest diameter and its perpendicular on its largest slice; C: its slices x 5 mm).
Every method is compared with the reference's planimetric volume (within 25 %, Bland-Altman, ICC).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from strokescan.core.labels import HEMORRHAGE
from strokescan.datasets.lesion_masks import decode_sample, row_slice
from strokescan.datasets.local import CTICH_JPEG_PIXEL_MM, CTICH_SLICE_MM, load_ctich_masks
from strokescan.datasets.splits import read_folds
from strokescan.errors import StrokescanError
from strokescan.evaluation.metrics import volume_agreement
from strokescan.evaluation.segmentation import threshold_baseline
from strokescan.inference import Predictor
from strokescan.inference.quantification import quantify_series
from strokescan.io import load_scan
from strokescan.models.unet import load_segmenter

MIN_REFERENCE_ML = 1.0
METHODS = {  # column -> what it is
    "unet_ml": "segmenter, planimetric",
    "unet_abc2_ml": "segmenter, ABC/2",
    "threshold_ml": "threshold baseline, planimetric",
    "reference_abc2_ml": "reference outline, ABC/2 (the bedside method's own error)",
}


def _clot(masks: list[np.ndarray]) -> tuple[float, float]:
    """(planimetric mL, ABC/2 mL of the largest component) of the clot in class-id masks."""
    q = quantify_series([(m == HEMORRHAGE).astype(np.uint8) * HEMORRHAGE for m in masks],
                        (CTICH_JPEG_PIXEL_MM, CTICH_JPEG_PIXEL_MM), CTICH_SLICE_MM)
    clot = q.classes["hemorrhage"]
    abc2 = clot.largest.abc2_ml if clot.largest is not None and clot.largest.abc2_ml is not None else 0.0
    return clot.total, abc2


def patient_volumes(rows: pd.DataFrame, predictor: Predictor, baseline_k: float) -> dict[str, float]:
    """Volumes of one patient's slices (rows of ctich-masks in slice order)."""
    unet, base, ref = [], [], []
    for _, row in rows.iterrows():
        pixels, is_hu = row_slice(row)
        scan = load_scan(row["image_path"])
        unet.append(predictor.segment(predictor.prepare(scan))[0])
        base.append(threshold_baseline(pixels, is_hu, k=baseline_k))
        ref.append(decode_sample(row, shape=pixels.shape).target)
    ref_ml, ref_abc2 = _clot(ref)
    unet_ml, unet_abc2 = _clot(unet)
    return {"slices": len(rows), "reference_ml": ref_ml, "unet_ml": unet_ml, "unet_abc2_ml": unet_abc2,
            "threshold_ml": _clot(base)[0], "reference_abc2_ml": ref_abc2}


def summary_lines(table: pd.DataFrame) -> list[str]:
    lines = ["# Per-patient clot volume and ABC/2 on held-out CT-ICH patients", "",
             "    .venv/bin/python studies/clot_volumes.py " + " ".join(sys.argv[1:]), "",
             "Each JPEG is read and segmented as `strokescan predict` does (rotation per image), so the planimetric "
             "figures differ a little from clot_figures.md (cached model-frame inputs, rotation per patient).", "",
             f"Held-out CT-ICH patients with a reference clot of at least {MIN_REFERENCE_ML:g} mL: {len(table)} "
             f"(folds {', '.join(str(f) for f in sorted(table['fold'].unique()))}); assumed voxel "
             f"{CTICH_JPEG_PIXEL_MM:.3f} x {CTICH_JPEG_PIXEL_MM:.3f} x {CTICH_SLICE_MM:g} mm.", "",
             "| measurement vs reference planimetric volume | patients | within 25 % | mean difference (mL) | "
             "95 % limits of agreement (mL) | ICC(2,1) |", "|---|---|---|---|---|---|"]
    for col, name in METHODS.items():
        a = volume_agreement(table[col].to_numpy(), table["reference_ml"].to_numpy())
        lines.append(f"| {name} | {a['n']} | {a['within']:.2f} | {a['mean_diff']:+.2f} | {a['loa_low']:+.2f} to "
                     f"{a['loa_high']:+.2f} | {a['icc']:.3f} |")
    lines += ["", "| fold | patient | slices | reference mL | segmenter mL | segmenter ABC/2 | threshold mL | "
              "reference ABC/2 |", "|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.fold} | {r.patient} | {r.slices} | {r.reference_ml:.1f} | {r.unet_ml:.1f} | "
                     f"{r.unet_abc2_ml:.1f} | {r.threshold_ml:.1f} | {r.reference_abc2_ml:.1f} |")
    return lines


def bland_altman_plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METHODS), figsize=(4 * len(METHODS), 3.6), sharey=True)
    for ax, (col, name) in zip(axes, METHODS.items()):
        mean = (table[col] + table["reference_ml"]) / 2
        diff = table[col] - table["reference_ml"]
        a = volume_agreement(table[col].to_numpy(), table["reference_ml"].to_numpy())
        ax.scatter(mean, diff, s=18)
        for y, style in ((a["mean_diff"], "-"), (a["loa_low"], "--"), (a["loa_high"], "--")):
            ax.axhline(y, color="grey", linestyle=style, linewidth=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("mean of the two (mL)")
    axes[0].set_ylabel("measurement - reference (mL)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folds", type=Path, required=True, help="the run's folds.json")
    ap.add_argument("--fold", type=int, action="append", required=True, help="held-out fold (repeat with --model)")
    ap.add_argument("--model", type=Path, action="append", required=True, help="segmenter trained without that fold")
    ap.add_argument("--out", type=Path, help="markdown summary to write")
    ap.add_argument("--csv", type=Path, help="per-patient table to write")
    ap.add_argument("--plot", type=Path, help="Bland-Altman PNG to write")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    if len(a.fold) != len(a.model):
        print("error: give one --model per --fold", file=sys.stderr)
        return 2
    try:
        folds = read_folds(a.folds)["folds"]
        masks = load_ctich_masks()
        records = []
        for fold, model_dir in zip(a.fold, a.model):
            baseline_k = float(load_segmenter(model_dir)[1].training.get("baseline_k", 2.0))
            predictor = Predictor(segmenter_dir=model_dir, threads=a.threads)
            held = masks[masks["patient"].isin(folds[str(fold)])]
            for patient, rows in tqdm(sorted(held.groupby("patient")), desc=f"fold {fold} patients"):
                if rows["hemorrhage"].sum() == 0:
                    continue
                vols = patient_volumes(rows.sort_values("slice_index"), predictor, baseline_k)
                if vols["reference_ml"] >= MIN_REFERENCE_ML:
                    records.append({"fold": fold, "patient": patient, **vols})
    except StrokescanError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    table = pd.DataFrame(records)
    if len(table) < 2:
        print(f"error: {len(table)} patient(s) with a reference of at least {MIN_REFERENCE_ML:g} mL: too few", file=sys.stderr)
        return 2
    text = "\n".join(summary_lines(table))
    print(text)
    if a.out:
        a.out.write_text(text + "\n")
    if a.csv:
        table.to_csv(a.csv, index=False)
    if a.plot:
        bland_altman_plot(table, a.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
