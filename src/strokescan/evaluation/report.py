"""The classifier's evaluation report: cross-validated and external figures with 95 % CIs, and plots."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from strokescan.evaluation.calibration import expected_calibration_error
from strokescan.evaluation.metrics import (
    format_ci,
    patient_bootstrap,
    point_metrics,
    specificity_at_full_sensitivity,
)
from strokescan.evaluation.plots import confusion_figure, reliability_figure, roc_pr_figure


def _per_row_threshold_metrics(frame: pd.DataFrame, threshold_col: str) -> dict[str, float]:
    """Sensitivity/specificity/F1 when each fold uses the threshold chosen on its own validation fold."""
    y = frame["label"].to_numpy(int)
    pred = frame["probability"].to_numpy() >= frame[threshold_col].to_numpy()
    tp, fn = int((pred & (y == 1)).sum()), int((~pred & (y == 1)).sum())
    tn, fp = int((~pred & (y == 0)).sum()), int((pred & (y == 0)).sum())
    return {
        "roc_auc": point_metrics(y, frame["probability"].to_numpy(), 0.5)["roc_auc"],
        "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
        "specificity": tn / (tn + fp) if tn + fp else float("nan"),
        "f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0,
        "ece": expected_calibration_error(y, frame["probability"].to_numpy()),
    }


def _scan_statistic(frame: pd.DataFrame) -> dict[str, float]:
    stats = _per_row_threshold_metrics(frame, "fold_scan_threshold")
    stats["specificity_at_sensitivity_1"] = specificity_at_full_sensitivity(
        frame["label"].to_numpy(int), frame["probability"].to_numpy()
    )
    del stats["ece"]
    return stats


def scan_frame(oof: pd.DataFrame) -> pd.DataFrame:
    """One row per patient: max slice probability, patient label, the fold's scan threshold."""
    scans = oof.groupby("patient").agg(
        probability=("probability", "max"),
        label=("patient_label", "max"),
        fold_scan_threshold=("fold_scan_threshold", "first"),
        fold=("fold", "first"),
    )
    return scans.reset_index()


def cross_validation_figures(oof: pd.DataFrame, out_dir: Path) -> dict:
    """Slice- and scan-level CV metrics (bootstrap over patients) and their plots in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    slices = oof[oof["label"].notna()].reset_index(drop=True)
    scans = scan_frame(oof)
    slice_stats = patient_bootstrap(slices, lambda f: _per_row_threshold_metrics(f, "fold_threshold"))
    scan_stats = patient_bootstrap(scans, _scan_statistic)
    ys, ps = slices["label"].to_numpy(int), slices["probability"].to_numpy()
    yp, pp = scans["label"].to_numpy(int), scans["probability"].to_numpy()
    roc_pr_figure({"slices": (ys, ps), "scans (max slice)": (yp, pp)}, out_dir / "cv_roc_pr.png", "5-fold CV")
    mean_t = float(slices["fold_threshold"].mean())
    confusion_figure(ys, ps, mean_t, out_dir / "cv_confusion_slices.png", "CV slices (mean fold threshold)")
    reliability_figure(ys, ps, slice_stats["ece"]["value"], out_dir / "cv_reliability.png", "CV slices")
    return {
        "slice": {"n_slices": len(slices), "n_positive": int(ys.sum()), "n_patients": slices["patient"].nunique(),
                  **slice_stats},
        "scan": {"n_scans": len(scans), "n_positive": int(yp.sum()), **scan_stats},
    }


def external_figures(ext: pd.DataFrame, slice_threshold: float, out_dir: Path, name: str) -> dict:
    """AUC and sensitivity/specificity at the stored threshold on an external set (bootstrap over patients)."""
    frame = ext.reset_index(drop=True)
    stats = patient_bootstrap(frame, lambda f: point_metrics(f["label"].to_numpy(), f["probability"].to_numpy(),
                                                              slice_threshold))
    y, p = frame["label"].to_numpy(int), frame["probability"].to_numpy()
    roc_pr_figure({name: (y, p)}, out_dir / f"external_{name}_roc_pr.png", f"external {name}")
    confusion_figure(y, p, slice_threshold, out_dir / f"external_{name}_confusion.png", f"{name} slices")
    ece = expected_calibration_error(y, p)
    reliability_figure(y, p, ece, out_dir / f"external_{name}_reliability.png", f"external {name}")
    return {"n_slices": len(frame), "n_positive": int(y.sum()), "n_patients": frame["patient"].nunique(),
            "threshold": slice_threshold, "ece": ece, **stats}


def markdown_summary(figures: dict) -> str:
    """The report's headline table in Markdown (values with 95 % CI)."""
    lines = ["| set | level | n (positive) | ROC-AUC | sensitivity | specificity | F1 |", "|---|---|---|---|---|---|---|"]
    cv = figures.get("cross_validation")
    if cv:
        s, c = cv["slice"], cv["scan"]
        lines.append(f"| ctich-kaggle 5-fold CV | slice | {s['n_slices']} ({s['n_positive']}) | {format_ci(s['roc_auc'])} | "
                     f"{format_ci(s['sensitivity'])} | {format_ci(s['specificity'])} | {format_ci(s['f1'])} |")
        lines.append(f"| ctich-kaggle 5-fold CV | scan | {c['n_scans']} ({c['n_positive']}) | {format_ci(c['roc_auc'])} | "
                     f"{format_ci(c['sensitivity'])} | {format_ci(c['specificity'])} | {format_ci(c['f1'])} |")
    for name, e in figures.get("external", {}).items():
        lines.append(f"| {name} (external) | slice | {e['n_slices']} ({e['n_positive']}) | {format_ci(e['roc_auc'])} | "
                     f"{format_ci(e['sensitivity'])} | {format_ci(e['specificity'])} | {format_ci(e['f1'])} |")
    return "\n".join(lines)


def write_report(figures: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(figures, indent=2, default=float))
    (out_dir / "summary.md").write_text(markdown_summary(figures) + "\n")


