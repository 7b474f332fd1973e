"""The detector's evaluation report: per-dataset cross-validated figures at both operating points, subtypes,
calibration, and the real scanner series; every figure with its n and a 95 % patient-bootstrap CI.

Read from a run folder (``oof_predictions.csv``, ``folds_summary.json``): each outer fold's test slices carry
the probabilities of that fold's model, calibrated and thresholded on its own validation fold, so nothing here
was tuned on the slices it reports.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from strokescan.core.labels import HEMORRHAGE_SUBTYPES, SUBTYPE_ABBREVIATIONS
from strokescan.evaluation.calibration import expected_calibration_error
from strokescan.evaluation.metrics import format_ci, patient_bootstrap, roc_auc
from strokescan.evaluation.plots import reliability_figure, roc_pr_figure
from strokescan.inference import Predictor
from strokescan.io import load_scan
from strokescan.models.classifier import OPERATING_POINTS, load_classifier, scan_score


def _rates(y: np.ndarray, flagged: np.ndarray) -> dict[str, float]:
    tp, fn = int((flagged & (y == 1)).sum()), int((~flagged & (y == 1)).sum())
    tn, fp = int((~flagged & (y == 0)).sum()), int((flagged & (y == 0)).sum())
    return {"sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
            "specificity": tn / (tn + fp) if tn + fp else float("nan")}


def specificity_at_sensitivity(y: np.ndarray, p: np.ndarray, sensitivity: float) -> float:
    """Specificity at the highest threshold whose sensitivity on (y, p) is at least ``sensitivity`` (a point
    of the out-of-fold ROC curve, not a stored operating point)."""
    y, p = np.asarray(y, int), np.asarray(p, float)
    if not (y == 1).any() or not (y == 0).any():
        return float("nan")
    pos = np.sort(p[y == 1])
    t = pos[min(int(np.floor((1 - sensitivity) * pos.size + 1e-9)), pos.size - 1)]
    return float((p[y == 0] < t).mean())


def fold_thresholds(folds: list[dict], rule: str) -> pd.DataFrame:
    """Per outer fold and operating point: the slice and scan thresholds chosen on its validation fold."""
    rows = []
    for f in folds:
        for point in OPERATING_POINTS:
            t = f["operating_points"][rule][point]
            rows.append({"fold": f["fold"], "point": point, "slice": t["slice_threshold"], "scan": t["scan_threshold"]})
    return pd.DataFrame(rows)


def slice_frame(oof: pd.DataFrame, thresholds: pd.DataFrame, min_brain: float) -> pd.DataFrame:
    """Labelled slices with their probability and, per operating point, whether they are flagged."""
    frame = oof[oof["label"].notna()].copy()
    shows_brain = frame["brain_fraction"].to_numpy() >= min_brain
    for point in OPERATING_POINTS:
        t = frame["fold"].map(thresholds[thresholds["point"] == point].set_index("fold")["slice"]).to_numpy()
        frame[f"flag_{point}"] = shows_brain & (frame["p_any"].to_numpy() >= t)
    return frame.reset_index(drop=True)


def scan_table(oof: pd.DataFrame, thresholds: pd.DataFrame, rule: str, min_brain: float) -> pd.DataFrame:
    """One row per patient: scan score by ``rule`` over slices showing brain, label, flags per operating point."""
    rows = []
    for patient, g in oof.groupby("patient", sort=True):
        p = g.loc[g["brain_fraction"] >= min_brain, "p_any"].to_numpy()
        row = {"patient": patient, "source": g["source"].iloc[0], "fold": int(g["fold"].iloc[0]),
               "label": float(g["label"].max()), "score": scan_score(p, rule)}
        for point in OPERATING_POINTS:
            t = thresholds[(thresholds["point"] == point) & (thresholds["fold"] == row["fold"])]["scan"].iloc[0]
            row[f"flag_{point}"] = row["score"] >= t
        rows.append(row)
    return pd.DataFrame(rows)


def _slice_stat(f: pd.DataFrame) -> dict[str, float]:
    y = f["label"].to_numpy(int)
    out = {"roc_auc": roc_auc(y, f["p_any"].to_numpy()),
           "ece": expected_calibration_error(y, f["p_any"].to_numpy())}
    for point in OPERATING_POINTS:
        for k, v in _rates(y, f[f"flag_{point}"].to_numpy(bool)).items():
            out[f"{point}_{k}"] = v
    return out


def _scan_stat(f: pd.DataFrame) -> dict[str, float]:
    y = f["label"].to_numpy(int)
    out = {"roc_auc": roc_auc(y, f["score"].to_numpy()),
           "specificity_at_sensitivity_0.95": specificity_at_sensitivity(y, f["score"].to_numpy(), 0.95)}
    for point in OPERATING_POINTS:
        for k, v in _rates(y, f[f"flag_{point}"].to_numpy(bool)).items():
            out[f"{point}_{k}"] = v
    return out


def subtype_figures(slices: pd.DataFrame) -> dict:
    """ROC-AUC per subtype on the slices whose subtype labels are known (all labelled slices of the set)."""
    out = {}
    for name in HEMORRHAGE_SUBTYPES:
        known = slices[slices[name].notna()].reset_index(drop=True)
        y = known[name].to_numpy(int)
        if y.sum() == 0 or y.sum() == len(y):
            continue
        stat = patient_bootstrap(known, lambda f, n=name: {"roc_auc": roc_auc(f[n].to_numpy(int), f[f"p_{n}"].to_numpy())})
        out[name] = {"n_slices": int(len(known)), "n_positive": int(y.sum()), **stat}
    return out


def dataset_figures(oof: pd.DataFrame, folds: list[dict], rule: str, min_brain: float, out_dir: Path,
                    external: bool) -> dict:
    """All figures of one dataset's out-of-fold predictions, and its ROC and reliability plots."""
    thresholds = fold_thresholds(folds, rule)
    slices = slice_frame(oof, thresholds, min_brain)
    scans = scan_table(oof, thresholds, rule, min_brain)
    name = oof["source"].iloc[0]
    figures: dict = {
        "external": external,
        "slice": {"n_slices": len(slices), "n_positive": int(slices["label"].sum()),
                  "n_patients": int(slices["patient"].nunique()), **patient_bootstrap(slices, _slice_stat)},
    }
    y = slices["label"].to_numpy(int)
    curves = {"slices": (y, slices["p_any"].to_numpy())}
    if 0 < scans["label"].sum() < len(scans):
        figures["scan"] = {"n_scans": len(scans), "n_positive": int(scans["label"].sum()),
                           **patient_bootstrap(scans, _scan_stat)}
        curves["scans"] = (scans["label"].to_numpy(int), scans["score"].to_numpy())
    if 0 < y.sum() < len(y):
        roc_pr_figure(curves, out_dir / f"{name}_roc_pr.png", f"{name} ({'external' if external else '5-fold CV'})")
        reliability_figure(y, slices["p_any"].to_numpy(), figures["slice"]["ece"]["value"],
                           out_dir / f"{name}_reliability.png", f"{name} slices")
    subtypes = subtype_figures(slices)
    if subtypes:
        figures["subtypes"] = subtypes
    return figures


def series_figures(predictor: Predictor, paths: dict[str, str]) -> dict:
    """For each real series: scan score and the fraction of slices flagged at each operating point."""
    out = {}
    for name, path in paths.items():
        scan = load_scan(path)
        entry = {"n_slices": scan.n_slices}
        for point in OPERATING_POINTS:
            predictor.operating_point = point
            result = predictor.analyse(scan)
            flagged = sum(s.positive for s in result.slices)
            entry[point] = {"scan_score": result.probability, "scan_positive": result.positive,
                            "slices_flagged": flagged, "fraction_flagged": flagged / scan.n_slices,
                            "slices_without_brain": sum(not s.brain_visible for s in result.slices)}
        out[name] = entry
    return out


def _cell(fig: dict, key: str) -> str:
    return format_ci(fig[key]) if key in fig and not np.isnan(fig[key]["value"]) else "—"


def markdown_report(figures: dict) -> str:
    """The report's tables in Markdown."""
    lines = [f"# Detector evaluation: protocol `{figures['protocol']}` (trained on {', '.join(figures['sources'])})",
             "", f"Scan score: `{figures['scan_score']}` over slices showing brain. Each fold's thresholds come "
             "from its own validation fold. 95 % CIs: 1000 patient-bootstrap resamples.", "",
             "| set | level | n (positive) | ROC-AUC | balanced: sens / spec | sensitive: sens / spec | "
             "spec at sens >= 0.95 (curve) | ECE |", "|---|---|---|---|---|---|---|---|"]
    for name, d in figures["datasets"].items():
        tag = f"{name} ({'external' if d['external'] else '5-fold CV'})"
        s = d["slice"]
        lines.append(f"| {tag} | slice | {s['n_slices']} ({s['n_positive']}) | {_cell(s, 'roc_auc')} | "
                     f"{_cell(s, 'balanced_sensitivity')} / {_cell(s, 'balanced_specificity')} | "
                     f"{_cell(s, 'sensitive_sensitivity')} / {_cell(s, 'sensitive_specificity')} | — | {_cell(s, 'ece')} |")
        if "scan" in d:
            c = d["scan"]
            lines.append(f"| {tag} | scan | {c['n_scans']} ({c['n_positive']}) | {_cell(c, 'roc_auc')} | "
                         f"{_cell(c, 'balanced_sensitivity')} / {_cell(c, 'balanced_specificity')} | "
                         f"{_cell(c, 'sensitive_sensitivity')} / {_cell(c, 'sensitive_specificity')} | "
                         f"{_cell(c, 'specificity_at_sensitivity_0.95')} | — |")
    lines += ["", "## Subtypes (slice ROC-AUC)", "", "| set | subtype | n (positive) | ROC-AUC |", "|---|---|---|---|"]
    for name, d in figures["datasets"].items():
        for sub, f in d.get("subtypes", {}).items():
            lines.append(f"| {name} | {SUBTYPE_ABBREVIATIONS[sub]} ({sub}) | {f['n_slices']} ({f['n_positive']}) | "
                         f"{format_ci(f['roc_auc'])} |")
    if figures.get("series"):
        lines += ["", "## Real scanner series (the final model)", "",
                  "| series | slices | balanced: scan score, flag, slices flagged | sensitive: scan flag, slices flagged |",
                  "|---|---|---|---|"]
        for name, e in figures["series"].items():
            b, s = e["balanced"], e["sensitive"]
            lines.append(f"| {name} | {e['n_slices']} | {b['scan_score']:.3f}, "
                         f"{'POSITIVE' if b['scan_positive'] else 'negative'}, {b['slices_flagged']} "
                         f"({b['fraction_flagged']:.0%}) | {'POSITIVE' if s['scan_positive'] else 'negative'}, "
                         f"{s['slices_flagged']} ({s['fraction_flagged']:.0%}) |")
    return "\n".join(lines) + "\n"


def evaluate_detector(run_dir: Path, report_dir: Path, model_dir: Path | None = None,
                      series: dict[str, str] | None = None) -> dict:
    """Write ``metrics.json``, ``report.md`` and the plots into ``report_dir``; returns the figures."""
    report_dir.mkdir(parents=True, exist_ok=True)
    oof = pd.read_csv(run_dir / "oof_predictions.csv", dtype={"patient": str})
    folds = json.loads((run_dir / "folds_summary.json").read_text())
    model_dir = model_dir or run_dir / "model"
    _, plan = load_classifier(model_dir)
    sources = plan.training["sources"]
    figures: dict = {"protocol": plan.training["protocol"], "sources": sources, "scan_score": plan.scan_score,
                     "datasets": {}}
    for name, g in oof.groupby("source", sort=False):
        figures["datasets"][name] = dataset_figures(g.reset_index(drop=True), folds, plan.scan_score,
                                                    plan.min_brain_fraction, report_dir, external=name not in sources)
    if series:
        figures["series"] = series_figures(Predictor(model_dir), series)
    (report_dir / "metrics.json").write_text(json.dumps(figures, indent=1, default=float))
    (report_dir / "report.md").write_text(markdown_report(figures))
    return figures
