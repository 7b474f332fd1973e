"""Evaluate a trained classifier: cross-validated figures from a run folder, external figures on phe-sich."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from strokescan.datasets.local import load_phe_sich
from strokescan.evaluation.report import cross_validation_figures, external_figures, write_report
from strokescan.inference import Predictor

log = logging.getLogger(__name__)


def predict_manifest(predictor: Predictor, manifest: pd.DataFrame, desc: str) -> pd.DataFrame:
    """Calibrated slice probabilities for every row (one 2-D image per row)."""
    probs, angles = [], []
    for path in tqdm(manifest["image_path"], desc=desc, unit="slice", mininterval=5):
        result = predictor.analyse_path(path)
        probs.append(result.slices[0].probability)
        angles.append(result.slices[0].rotation_deg)
    out = manifest.copy()
    out["probability"] = probs
    out["rotation_deg"] = angles
    return out


def evaluate_classifier(model_dir: Path | None, run_dir: Path, report_dir: Path, external: bool = True) -> dict:
    """Write the report folder; returns the figures."""
    figures: dict = {}
    oof_file = run_dir / "oof_predictions.csv"
    if oof_file.exists():
        figures["cross_validation"] = cross_validation_figures(pd.read_csv(oof_file), report_dir)
    if external:
        predictor = Predictor(model_dir)
        phe = load_phe_sich()
        preds = predict_manifest(predictor, phe, "external phe-sich")
        preds.to_csv(report_dir / "external_phe-sich_predictions.csv", index=False)
        figures["external"] = {"phe-sich": external_figures(preds, predictor.plan.slice_threshold, report_dir, "phe-sich")}
    write_report(figures, report_dir)
    return figures
