"""Metrics, confidence intervals, calibration and threshold rules."""

import numpy as np
import pandas as pd
import pytest

from strokescan.core.calibration import PlattCalibrator
from strokescan.evaluation.calibration import expected_calibration_error, fit_platt
from strokescan.evaluation.metrics import patient_bootstrap, point_metrics, specificity_at_full_sensitivity
from strokescan.evaluation.thresholds import threshold_for_sensitivity


def test_threshold_rule_meets_the_sensitivity_it_promises():
    rng = np.random.default_rng(1)
    y = (rng.random(500) < 0.3).astype(int)
    p = np.clip(0.35 * y + rng.random(500) * 0.7, 0, 1)
    t = threshold_for_sensitivity(y, p, 0.95)
    sens = (p[y == 1] >= t).mean()
    assert sens >= 0.95
    # and it is the highest such threshold: any higher positive score loses sensitivity
    higher = np.sort(p[y == 1])[np.sort(p[y == 1]) > t][0]
    assert (p[y == 1] >= higher).mean() < 0.95


def test_point_metrics_on_a_known_confusion_matrix():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.2, 0.6, 0.1, 0.1, 0.1, 0.1, 0.1])
    m = point_metrics(y, p, 0.5)
    assert m["sensitivity"] == pytest.approx(0.75)
    assert m["specificity"] == pytest.approx(5 / 6)
    assert m["ppv"] == pytest.approx(0.75)
    assert specificity_at_full_sensitivity(y, p) == pytest.approx(5 / 6)


def test_patient_bootstrap_interval_brackets_the_estimate_and_shrinks_with_more_patients():
    rng = np.random.default_rng(0)

    def frame(n_patients):
        rows = []
        for pid in range(n_patients):
            y = rng.random(10) < 0.3
            rows += [{"patient": pid, "label": int(v), "probability": 0.3 * v + 0.7 * rng.random()} for v in y]
        return pd.DataFrame(rows)

    stat = lambda f: point_metrics(f["label"].to_numpy(), f["probability"].to_numpy(), 0.5)  # noqa: E731
    small = patient_bootstrap(frame(10), stat, n_boot=200)["roc_auc"]
    large = patient_bootstrap(frame(200), stat, n_boot=200)["roc_auc"]
    for m in (small, large):
        assert m["ci95"][0] <= m["value"] <= m["ci95"][1]
    assert large["ci95"][1] - large["ci95"][0] < small["ci95"][1] - small["ci95"][0]


def test_platt_calibration_fixes_overconfident_scores():
    rng = np.random.default_rng(0)
    true_logit = rng.normal(0, 1.5, 5000)
    y = (rng.random(5000) < 1 / (1 + np.exp(-true_logit))).astype(int)
    raw = 4 * true_logit  # overconfident
    before = expected_calibration_error(y, 1 / (1 + np.exp(-raw)))
    cal = fit_platt(raw, y)
    after = expected_calibration_error(y, cal(raw))
    assert cal.a == pytest.approx(0.25, abs=0.05)
    assert after < before / 2 and after < 0.03
    assert PlattCalibrator.from_dict(cal.to_dict()) == cal


def test_volume_agreement_against_hand_computed_values():
    from strokescan.evaluation.metrics import icc_2_1, volume_agreement

    ref = np.array([10.0, 20.0, 40.0, 80.0])
    same = volume_agreement(ref, ref)
    assert same["within"] == 1.0 and same["mean_diff"] == 0.0 and same["icc"] == pytest.approx(1.0)
    half = volume_agreement(ref / 2, ref)  # every measurement 50 % low
    assert half["within"] == 0.0 and half["mean_diff"] == pytest.approx(-18.75)
    assert half["loa_low"] < half["mean_diff"] < half["loa_high"]
    near = volume_agreement(ref * np.array([1.2, 0.8, 1.3, 1.0]), ref)
    assert near["within"] == 0.75  # 30 % off is outside 25 %
    # ICC(2,1) of a constant offset is below 1 (absolute agreement), of a pure scale change too
    assert 0 < icc_2_1(ref + 5, ref) < 1 and icc_2_1(ref * 2, ref) < icc_2_1(ref + 5, ref)
