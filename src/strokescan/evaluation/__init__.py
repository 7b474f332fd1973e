"""Evaluation: metrics with patient-bootstrap confidence intervals, calibration, thresholds, plots."""
