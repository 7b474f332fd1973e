"""Figures a person reads faster than numbers: ROC and PR curves, confusion matrix, reliability diagram."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402
from sklearn.metrics import auc, confusion_matrix, precision_recall_curve, roc_curve  # noqa: E402


def roc_pr_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> None:
    """ROC and precision-recall curves of several (y, p) sets side by side."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.5))
    for name, (y, p) in curves.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax1.plot(fpr, tpr, label=f"{name} (AUC {auc(fpr, tpr):.3f}, n={len(y)})")
        prec, rec, _ = precision_recall_curve(y, p)
        ax2.plot(rec, prec, label=f"{name} (prevalence {np.mean(y):.2f})")
    ax1.plot([0, 1], [0, 1], ":", color="grey")
    ax1.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"ROC: {title}")
    ax2.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", title=f"Precision-recall: {title}")
    for ax in (ax1, ax2):
        ax.legend(loc="lower right" if ax is ax1 else "upper right", fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def confusion_figure(y: np.ndarray, p: np.ndarray, threshold: float, path: Path, title: str) -> None:
    cm = confusion_matrix(np.asarray(y, int), (np.asarray(p) >= threshold).astype(int), labels=[0, 1])
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    sns.heatmap(cm, annot=True, fmt="d", cmap="Blues", cbar=False, ax=ax,
                xticklabels=["negative", "positive"], yticklabels=["negative", "positive"])
    ax.set(xlabel="predicted", ylabel="reference", title=f"{title}\nthreshold {threshold:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def reliability_figure(y: np.ndarray, p: np.ndarray, ece: float, path: Path, title: str, n_bins: int = 10) -> None:
    y, p = np.asarray(y, float), np.asarray(p, float)
    edges = np.linspace(0, 1, n_bins + 1)
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    mean_p = [p[bins == b].mean() if (bins == b).any() else np.nan for b in range(n_bins)]
    rate = [y[bins == b].mean() if (bins == b).any() else np.nan for b in range(n_bins)]
    counts = [int((bins == b).sum()) for b in range(n_bins)]
    fig, (ax, axh) = plt.subplots(2, 1, figsize=(4.8, 5.6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.plot(mean_p, rate, "o-")
    ax.set(ylabel="observed positive rate", title=f"Reliability: {title}\nECE {ece:.3f}, n={len(y)}")
    ax.grid(alpha=0.3)
    axh.bar(edges[:-1], counts, width=1 / n_bins, align="edge", color="grey")
    axh.set(xlabel="predicted probability", ylabel="slices")
    axh.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
