"""Binary metrics with 95 % confidence intervals from a bootstrap over patients."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score, roc_auc_score

from strokescan.config import SEED

N_BOOTSTRAP = 1000


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC-AUC, NaN when ``y`` holds one class only (a bootstrap resample may)."""
    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")


def point_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """ROC-AUC, sensitivity, specificity, PPV, F1 and accuracy at ``threshold`` (p >= t is positive)."""
    y, p = np.asarray(y, int), np.asarray(p, float)
    pred = p >= threshold
    tp, fn = int((pred & (y == 1)).sum()), int((~pred & (y == 1)).sum())
    tn, fp = int((~pred & (y == 0)).sum()), int((pred & (y == 0)).sum())
    return {
        "roc_auc": roc_auc(y, p),
        "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
        "specificity": tn / (tn + fp) if tn + fp else float("nan"),
        "ppv": tp / (tp + fp) if tp + fp else float("nan"),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "accuracy": (tp + tn) / len(y) if len(y) else float("nan"),
    }


def patient_bootstrap(
    frame: pd.DataFrame,
    statistic: Callable[[pd.DataFrame], dict[str, float]],
    n_boot: int = N_BOOTSTRAP,
    seed: int = SEED,
) -> dict[str, dict[str, float]]:
    """Point estimate and 95 % percentile interval of each statistic, resampling patients with replacement.

    ``frame`` needs a ``patient`` column; ``statistic`` maps a frame to named numbers.
    """
    rng = np.random.default_rng(seed)
    groups = {p: g.index.to_numpy() for p, g in frame.groupby("patient", sort=True)}
    names = list(groups)
    point = statistic(frame)
    draws: dict[str, list[float]] = {k: [] for k in point}
    for _ in range(n_boot):
        chosen = rng.choice(len(names), size=len(names), replace=True)
        rows = np.concatenate([groups[names[i]] for i in chosen])
        stats = statistic(frame.loc[rows])
        for k, v in stats.items():
            draws[k].append(v)
    out = {}
    for k, v in point.items():
        arr = np.asarray(draws[k], float)
        arr = arr[~np.isnan(arr)]
        lo, hi = (np.percentile(arr, [2.5, 97.5]) if arr.size else (float("nan"), float("nan")))
        out[k] = {"value": float(v), "ci95": [float(lo), float(hi)]}
    return out


def slice_statistic(threshold: float) -> Callable[[pd.DataFrame], dict[str, float]]:
    """Statistic over slices (columns ``label``, ``probability``)."""
    return lambda f: point_metrics(f["label"].to_numpy(), f["probability"].to_numpy(), threshold)


def scan_table(frame: pd.DataFrame, scan_label: pd.Series | None = None) -> pd.DataFrame:
    """One row per patient: score = max slice probability, label = any positive slice (or ``scan_label``)."""
    scans = frame.groupby("patient").agg(probability=("probability", "max"), label=("label", "max"))
    if scan_label is not None:
        scans["label"] = scan_label.reindex(scans.index)
    scans = scans.reset_index()
    scans["patient"] = scans["patient"].astype(str)
    return scans


def specificity_at_full_sensitivity(y: np.ndarray, p: np.ndarray) -> float:
    """Specificity at the highest threshold that still finds every positive."""
    y, p = np.asarray(y, int), np.asarray(p, float)
    if not (y == 1).any() or not (y == 0).any():
        return float("nan")
    t = p[y == 1].min()
    return float((p[y == 0] < t).mean())


def format_ci(metric: dict[str, float], digits: int = 3) -> str:
    lo, hi = metric["ci95"]
    return f"{metric['value']:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def icc_2_1(a: np.ndarray, b: np.ndarray) -> float:
    """Two-way random, absolute agreement, single measure ICC(2,1) (Shrout & Fleiss 1979) of two raters."""
    x = np.stack([a, b], axis=1).astype(float)
    n, k = x.shape
    grand = x.mean()
    ms_rows = k * ((x.mean(axis=1) - grand) ** 2).sum() / (n - 1)
    ms_cols = n * ((x.mean(axis=0) - grand) ** 2).sum() / (k - 1)
    ss_err = ((x - x.mean(axis=1, keepdims=True) - x.mean(axis=0, keepdims=True) + grand) ** 2).sum()
    ms_err = ss_err / ((n - 1) * (k - 1))
    return float((ms_rows - ms_err) / (ms_rows + (k - 1) * ms_err + k * (ms_cols - ms_err) / n))


def volume_agreement(measured: np.ndarray, reference: np.ndarray, tolerance: float = 0.25) -> dict[str, float]:
    """How a volume measurement agrees with a reference, one value per patient: the share within
    ``tolerance`` of the reference, Bland-Altman mean difference and 95 % limits of agreement, ICC(2,1)."""
    measured, reference = np.asarray(measured, float), np.asarray(reference, float)
    diff = measured - reference
    sd = diff.std(ddof=1) if len(diff) > 1 else float("nan")
    return {"n": int(len(diff)), "within": float((np.abs(diff) <= tolerance * reference).mean()),
            "mean_diff": float(diff.mean()), "loa_low": float(diff.mean() - 1.96 * sd),
            "loa_high": float(diff.mean() + 1.96 * sd),
            "icc": icc_2_1(measured, reference) if len(diff) > 1 else float("nan")}
