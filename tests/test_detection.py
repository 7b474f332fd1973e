"""The detector's data (all labelled sources, patient 49 from CT-ICH's masks, folds) and its evaluation report
(per-dataset figures, external sets, subtypes, operating points with each fold's own thresholds)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from strokescan.core.labels import DETECTION_OUTPUTS, HEMORRHAGE_SUBTYPES
from strokescan.evaluation.detection_report import (
    dataset_figures,
    fold_thresholds,
    markdown_report,
    scan_table,
    specificity_at_sensitivity,
)
from strokescan.inference.predictor import DEFAULT_CLASSIFIER_DIR


@pytest.fixture(scope="module")
def manifest(data_root):
    from strokescan.training.detection_data import detection_manifest

    return detection_manifest()


def test_every_labelled_source_is_in_play_and_patient_49_is_labelled(manifest):
    counts = manifest.groupby("source")["label"].agg(["size", "sum"])
    assert counts.loc["ctich-kaggle", "size"] == 2501 and counts.loc["ctich-kaggle", "sum"] == 318
    assert counts.loc["phe-sich", "size"] == 566 and counts.loc["phe-sich", "sum"] == 104
    assert counts.loc["bhsd-mini", "size"] == counts.loc["bhsd-mini", "sum"] == 36
    p49 = manifest[manifest["patient"] == "ctich-kaggle:49"]
    assert len(p49) > 0 and p49["label"].notna().all() and p49["slice_index"].notna().all()
    assert p49["label_note"].str.contains("ctich-masks").all()
    assert manifest.loc[manifest["source"] == "phe-sich", list(HEMORRHAGE_SUBTYPES)].isna().all().all()
    order = manifest.groupby("patient")["slice_index"].apply(lambda s: s.is_monotonic_increasing)
    assert order.all()  # slices in scan order: the context model depends on it


def test_folds_hold_each_patient_once_and_keep_the_committed_ctich_folds(manifest):
    from strokescan.datasets.splits import ctich_kaggle_folds, fold_of
    from strokescan.training.detection_data import detection_folds

    folds = detection_folds(manifest)
    assert set(folds) >= set(manifest["patient"]) and set(folds.values()) == set(range(5))
    committed = fold_of(ctich_kaggle_folds())
    assert all(folds[p] == k for p, k in committed.items())


def _oof(rng: np.random.Generator, source: str, n_patients: int = 10, per: int = 8) -> pd.DataFrame:
    rows = []
    for i in range(n_patients):
        positive = i % 2 == 0
        for j in range(per):
            y = float(positive and j in (3, 4))
            row = {"patient": f"{source}:{i}", "source": source, "fold": i % 5, "label": y, "brain_fraction": 0.3,
                   "p_any": float(np.clip(0.6 * y + rng.uniform(0, 0.5), 0, 1))}
            for name in HEMORRHAGE_SUBTYPES:
                row[name] = y if name == "subdural" else 0.0
                row[f"p_{name}"] = row["p_any"] if name == "subdural" else rng.uniform(0, 0.2)
            rows.append(row)
    return pd.DataFrame(rows)


def _folds() -> list[dict]:
    points = {"balanced": {"slice_threshold": 0.5, "scan_threshold": 0.55},
              "sensitive": {"slice_threshold": 0.3, "scan_threshold": 0.3}}
    return [{"fold": k, "operating_points": {"max": points, "top3_mean": points}} for k in range(5)]


def test_each_fold_is_judged_with_its_own_thresholds_and_slices_without_brain_never_flag():
    oof = _oof(np.random.default_rng(0), "s")
    oof.loc[0, ["brain_fraction", "p_any"]] = [0.0, 0.99]  # no brain: never flagged, not in the scan score
    folds = _folds()
    folds[1]["operating_points"]["max"]["balanced"]["scan_threshold"] = 2.0  # fold 1 flags no scan
    scans = scan_table(oof, fold_thresholds(folds, "max"), "max", 0.02)
    assert not scans.loc[scans["fold"] == 1, "flag_balanced"].any()
    assert scans.loc[scans["patient"] == "s:0", "score"].iloc[0] < 0.99


def test_dataset_figures_report_n_ci_operating_points_and_subtypes(tmp_path):
    oof = _oof(np.random.default_rng(1), "s")
    figures = dataset_figures(oof, _folds(), "max", 0.02, tmp_path, external=True)
    s = figures["slice"]
    assert s["n_slices"] == 80 and s["n_positive"] == 10 and s["n_patients"] == 10
    lo, hi = s["roc_auc"]["ci95"]
    assert lo <= s["roc_auc"]["value"] <= hi and s["roc_auc"]["value"] > 0.8
    assert {"balanced_sensitivity", "sensitive_specificity", "ece"} <= set(s)
    assert figures["scan"]["n_scans"] == 10 and "specificity_at_sensitivity_0.95" in figures["scan"]
    assert set(figures["subtypes"]) == {"subdural"}  # the other subtypes have no positive slice here
    assert (tmp_path / "s_reliability.png").stat().st_size > 1000 and figures["external"] is True
    text = markdown_report({"protocol": "ctich", "sources": ["x"], "scan_score": "max", "datasets": {"s": figures}})
    assert "s (external)" in text and "SDH (subdural)" in text


def test_specificity_at_sensitivity_is_a_point_of_the_curve():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.2, 0.6, 0.3, 0.1, 0.05])
    assert specificity_at_sensitivity(y, p, 0.95) == 0.5  # threshold 0.2 keeps all positives: 2 of 4 negatives below
    assert specificity_at_sensitivity(y, p, 0.75) == 1.0  # threshold 0.7: every negative below it


def test_the_bundled_detector_states_its_operating_points():
    from strokescan.models.classifier import OPERATING_POINTS, load_classifier

    _, plan = load_classifier(DEFAULT_CLASSIFIER_DIR)
    assert plan.outputs == DETECTION_OUTPUTS and set(plan.operating_points) == set(OPERATING_POINTS)
    for point in plan.operating_points.values():
        assert 0 < point["slice_threshold"] < 1 and 0 < point["scan_threshold"] < 1 and point["rule"]
    assert plan.threshold("scan", "sensitive") <= plan.threshold("scan", "balanced")
    assert json.dumps(plan.metrics)  # the figures it was judged by travel with it
