"""Cross-validated training of the hemorrhage detector's top and slice context on cached trunk features.

The detector (:class:`~strokescan.models.classifier.SliceClassifier`) sees runs of consecutive slices of a
scan; its loss is the masked binary cross-entropy of each output (any hemorrhage, five subtypes; unknown
labels are left out) on the logits with context, plus half of it on the logits of each slice alone.

For outer fold k the test fold is k, the early-stopping (and calibration, threshold) fold is k+1, the other
folds train. Each finished fold's out-of-fold predictions are written to the run folder, so an interrupted run
resumes with the next fold. The final model trains on all labelled slices of the training sources for the
median best epoch of the folds; its calibration and operating points come from the out-of-fold predictions.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from strokescan.config import SEED
from strokescan.core.calibration import PlattCalibrator
from strokescan.core.labels import DETECTION_OUTPUTS, HEMORRHAGE_SUBTYPES
from strokescan.evaluation.calibration import fit_platt
from strokescan.evaluation.metrics import roc_auc
from strokescan.evaluation.thresholds import balanced_threshold, threshold_for_sensitivity
from strokescan.training.hospital_augmentation import HospitalAugmentation
from strokescan.models.classifier import SCAN_SCORES, SliceClassifier, scan_score

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectorConfig:
    """Hyper-parameters of one training run (stored in the model plan)."""

    max_epochs: int = 30
    patience: int = 3
    runs_per_batch: int = 8
    run_length: int = 12  # consecutive slices per training run
    lr: float = 1e-3
    weight_decay: float = 1e-3
    dropout: float = 0.3
    n_views: int = 5  # view 0 as exported, then 4 hospital variants
    slice_loss_weight: float = 0.5
    target_sensitivity: float = 0.95
    min_brain_fraction: float = 0.02
    seed: int = SEED
    augmentation: HospitalAugmentation = field(default_factory=HospitalAugmentation)


def label_matrix(manifest: pd.DataFrame) -> np.ndarray:
    """(N, outputs) float labels, NaN where unknown: "any" = ``label``, then the subtypes."""
    return manifest[["label", *HEMORRHAGE_SUBTYPES]].to_numpy(dtype=float)


def scan_runs(manifest: pd.DataFrame, rows: np.ndarray | None = None) -> list[np.ndarray]:
    """Row indices of each patient's slices in slice order (the manifest is sorted that way)."""
    frame = manifest if rows is None else manifest.iloc[rows]
    return [g.index.to_numpy() for _, g in frame.groupby("patient", sort=True)]


def _masked_bce(logits: torch.Tensor, labels: torch.Tensor, pos_weight: torch.Tensor) -> torch.Tensor:
    known = ~torch.isnan(labels)
    loss = nn.functional.binary_cross_entropy_with_logits(
        logits[known], labels[known], pos_weight=pos_weight.expand_as(labels)[known], reduction="mean")
    return loss


def _run_logits(model: SliceClassifier, feats: torch.Tensor, index: torch.Tensor, flip: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits with and without context for runs given as (B, L) feature indices (-1 = padding)."""
    valid = index >= 0
    x = feats[index[valid]].float()
    if flip is not None:
        per_slice = flip.unsqueeze(1).expand_as(index)[valid]
        x[per_slice] = torch.flip(x[per_slice], dims=[3])  # left-right flip in feature space
    emb = torch.zeros(*index.shape, model.fc.in_features)
    emb[valid] = model.embed(x)
    return model.context_logits(emb, valid), model.slice_logits(emb), valid


@torch.no_grad()
def predict_runs(model: SliceClassifier, feats: torch.Tensor, runs: list[np.ndarray], n_rows: int) -> np.ndarray:
    """(n_rows, outputs) logits with context for every row in ``runs`` (NaN elsewhere); feats (N, C, h, w)."""
    model.eval()
    out = np.full((n_rows, len(DETECTION_OUTPUTS)), np.nan)
    for run in runs:
        index = torch.from_numpy(np.array(run)).unsqueeze(0)
        logits, _, _ = _run_logits(model, feats, index)
        out[run] = logits[0].numpy()
    return out


def _windows(runs: list[np.ndarray], length: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Random windows of ``length`` consecutive slices, about one per ``length`` slices of each run."""
    out = []
    for run in runs:
        for _ in range(max(1, int(np.ceil(len(run) / length)))):
            start = int(rng.integers(0, max(1, len(run) - length + 1)))
            out.append(run[start:start + length])
    rng.shuffle(out)
    return out


def train_detector(feats: torch.Tensor, labels: np.ndarray, train_runs: list[np.ndarray],
                   val_runs: list[np.ndarray] | None, cfg: DetectorConfig, epochs: int | None = None,
                   desc: str = "train") -> tuple[SliceClassifier, int, list[dict]]:
    """Train on (views, N, ...) features; early-stop on the validation "any" ROC-AUC unless ``epochs`` is fixed.

    Returns the best model, its epoch (1-based) and the per-epoch history.
    """
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = SliceClassifier(pretrained=True, dropout=cfg.dropout)
    opt = torch.optim.AdamW(model.top_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n_epochs = epochs or cfg.max_epochs
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=n_epochs)
    train_rows = np.concatenate(train_runs)
    y_train = labels[train_rows]
    pos = np.nansum(y_train, axis=0)
    neg = np.sum(~np.isnan(y_train), axis=0) - pos
    pos_weight = torch.tensor(np.clip(neg / np.maximum(pos, 1.0), 1.0, 30.0), dtype=torch.float32)
    labels_t = torch.from_numpy(labels.astype(np.float32))
    best_auc, best_epoch, best_state, history, stale = -1.0, 0, None, [], 0
    for epoch in range(1, n_epochs + 1):
        model.train()
        model.frozen_blocks.eval()
        windows = _windows(train_runs, cfg.run_length, rng)
        total, steps = 0.0, 0
        for start in tqdm(range(0, len(windows), cfg.runs_per_batch), desc=f"{desc} epoch {epoch}", leave=False):
            batch = windows[start:start + cfg.runs_per_batch]
            index = torch.full((len(batch), max(len(w) for w in batch)), -1, dtype=torch.long)
            for i, w in enumerate(batch):
                index[i, :len(w)] = torch.from_numpy(np.array(w))
            views = torch.from_numpy(rng.integers(0, feats.shape[0], size=index.shape))
            flip = torch.from_numpy(rng.random(len(batch)) < 0.5)
            valid = index >= 0
            view_feats = feats[views[valid], index[valid]]  # (n_valid, C, h, w): one random view per slice
            local = torch.full_like(index, -1)
            local[valid] = torch.arange(int(valid.sum()))
            with_context, alone, _ = _run_logits(model, view_feats, local, flip)
            y = labels_t[index[valid]]
            loss = (_masked_bce(with_context[valid], y, pos_weight)
                    + cfg.slice_loss_weight * _masked_bce(alone[valid], y, pos_weight))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, steps = total + loss.item(), steps + 1
        sched.step()
        record = {"epoch": epoch, "train_loss": total / max(steps, 1)}
        if val_runs:
            val_rows = np.concatenate(val_runs)
            logits = predict_runs(model, feats[0], val_runs, len(labels))[val_rows, 0]
            y = labels[val_rows, 0]
            record["val_auc"] = roc_auc(y[~np.isnan(y)].astype(int), logits[~np.isnan(y)])
            if record["val_auc"] > best_auc:
                best_auc, best_epoch, best_state, stale = record["val_auc"], epoch, copy.deepcopy(model.state_dict()), 0
            else:
                stale += 1
        history.append(record)
        log.info("%s %s", desc, record)
        if val_runs and stale >= cfg.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        best_epoch = n_epochs
    return model.eval(), best_epoch, history


def fit_calibrators(logits: np.ndarray, labels: np.ndarray) -> dict[str, PlattCalibrator]:
    """Platt scaling per output on held-out rows; an output without both classes there keeps the identity."""
    out = {}
    for j, name in enumerate(DETECTION_OUTPUTS):
        known = ~np.isnan(labels[:, j]) & ~np.isnan(logits[:, j])
        y = labels[known, j]
        out[name] = fit_platt(logits[known, j], y) if 0 < y.sum() < y.size else PlattCalibrator()
    return out


def calibrate(logits: np.ndarray, calibrators: dict[str, PlattCalibrator]) -> np.ndarray:
    return np.stack([calibrators[name](logits[:, j]) for j, name in enumerate(DETECTION_OUTPUTS)], axis=1)


def scan_frame(manifest: pd.DataFrame, prob_any: np.ndarray, brain: np.ndarray, min_brain: float,
               rule: str) -> pd.DataFrame:
    """One row per patient: scan score over slices showing brain, label = any labelled positive slice."""
    frame = pd.DataFrame({"patient": manifest["patient"].to_numpy(), "source": manifest["source"].to_numpy(),
                          "p": np.where(brain >= min_brain, prob_any, np.nan), "y": manifest["label"].to_numpy()})
    return frame.groupby("patient", sort=True).agg(
        source=("source", "first"), label=("y", "max"),
        score=("p", lambda s: scan_score(s.dropna().to_numpy(), rule)),
    ).reset_index()


def operating_points(y_slice: np.ndarray, p_slice: np.ndarray, y_scan: np.ndarray, p_scan: np.ndarray,
                     sensitivity: float) -> dict[str, dict[str, float]]:
    """Slice and scan thresholds of the "sensitive" and "balanced" points (see the ship rule)."""
    return {
        "sensitive": {"slice_threshold": threshold_for_sensitivity(y_slice, p_slice, sensitivity),
                      "scan_threshold": threshold_for_sensitivity(y_scan, p_scan, sensitivity)},
        "balanced": {"slice_threshold": balanced_threshold(y_slice, p_slice),
                     "scan_threshold": balanced_threshold(y_scan, p_scan)},
    }


def _fold_thresholds(manifest: pd.DataFrame, prob: np.ndarray, brain: np.ndarray, rows: np.ndarray,
                     cfg: DetectorConfig) -> tuple[dict, dict]:
    """Per scan-score rule: operating points and scan ROC-AUC on ``rows`` (a validation fold)."""
    sub = manifest.iloc[rows]
    y = sub["label"].to_numpy(float)
    shows_brain = brain[rows] >= cfg.min_brain_fraction
    known = ~np.isnan(y) & shows_brain
    points, aucs = {}, {}
    for rule in SCAN_SCORES:
        scans = scan_frame(sub, prob[rows, 0], brain[rows], cfg.min_brain_fraction, rule)
        scans = scans[scans["label"].notna()]
        points[rule] = operating_points(y[known].astype(int), prob[rows, 0][known],
                                        scans["label"].to_numpy(int), scans["score"].to_numpy(), cfg.target_sensitivity)
        aucs[rule] = roc_auc(scans["label"].to_numpy(int), scans["score"].to_numpy())
    return points, aucs


def cross_validate(manifest: pd.DataFrame, feats: torch.Tensor, brain: np.ndarray, row_fold: np.ndarray,
                   train_sources: tuple[str, ...], cfg: DetectorConfig, run_dir: Path) -> pd.DataFrame:
    """Out-of-fold logits and probabilities for every row (rows of ``train_sources`` train); resumable."""
    run_dir.mkdir(parents=True, exist_ok=True)
    labels = label_matrix(manifest)
    trainable = manifest["source"].isin(train_sources).to_numpy() & ~np.isnan(labels[:, 0])
    n_folds = int(row_fold.max()) + 1
    oof_logits = np.full_like(labels, np.nan)
    oof_prob = np.full_like(labels, np.nan)
    fold_info = []
    for k in tqdm(range(n_folds), desc="cross-validation folds"):
        out_file = run_dir / f"fold_{k}.json"
        val_k = (k + 1) % n_folds
        train = np.flatnonzero(trainable & (row_fold != k) & (row_fold != val_k))
        val = np.flatnonzero(trainable & (row_fold == val_k))
        test = np.flatnonzero(row_fold == k)
        if out_file.exists():
            result = json.loads(out_file.read_text())
        else:
            model, best_epoch, history = train_detector(feats, labels, scan_runs(manifest, train),
                                                        scan_runs(manifest, val), cfg, desc=f"fold {k}")
            both = np.concatenate([val, test])
            logits = predict_runs(model, feats[0], scan_runs(manifest, both), len(labels))
            calibrators = fit_calibrators(logits[val], labels[val])
            prob = calibrate(logits, calibrators)
            points, aucs = _fold_thresholds(manifest, prob, brain, val, cfg)
            val_y = labels[val, 0]
            result = {
                "fold": k, "val_fold": val_k, "best_epoch": best_epoch, "history": history,
                "calibration": {n: c.to_dict() for n, c in calibrators.items()},
                "val_slice_auc": {s: roc_auc(val_y[g].astype(int), prob[val, 0][g])
                                  for s in train_sources
                                  if (g := (manifest["source"].to_numpy()[val] == s) & ~np.isnan(val_y)).any()},
                "val_scan_auc": aucs, "operating_points": points,
                "rows": test.tolist(), "logits": logits[test].tolist(),
            }
            out_file.write_text(json.dumps(result))
        calibrators = {n: PlattCalibrator.from_dict(d) for n, d in result["calibration"].items()}
        rows = np.asarray(result["rows"], int)
        oof_logits[rows] = np.asarray(result["logits"], float)
        oof_prob[rows] = calibrate(oof_logits[rows], calibrators)
        fold_info.append(result)
    oof = manifest.copy()
    oof["fold"] = row_fold
    oof["brain_fraction"] = brain
    for j, name in enumerate(DETECTION_OUTPUTS):
        oof[f"logit_{name}"] = oof_logits[:, j]
        oof[f"p_{name}"] = oof_prob[:, j]
    oof.attrs["folds"] = fold_info
    return oof


def choose_scan_rule(fold_info: list[dict]) -> str:
    """The scan score rule with the higher mean validation scan ROC-AUC (ties: the first, max)."""
    means = {rule: float(np.nanmean([f["val_scan_auc"][rule] for f in fold_info])) for rule in SCAN_SCORES}
    return max(SCAN_SCORES, key=lambda r: (round(means[r], 6), r == "max"))


def fold_config(cfg: DetectorConfig) -> dict:
    return asdict(cfg)
