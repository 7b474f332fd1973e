"""Training of the lesion U-Net on several partially labelled mask sets.

Pieces:

* :func:`build_cache` preprocesses every slice once (load, rotate upright, crop to the head, the foundation's
  three channels, 256 x 256; masks with the same rotation/crop and nearest resizing) into one ``.npz`` under
  ``cache_root()/segmentation/`` keyed by the rows, the slice plan, what each source labels and
  :data:`CACHE_VERSION`.
* :func:`partial_label_loss`: marginal ("merged-class") cross-entropy, where a pixel with target 0 may be
  background or any class its source does not label there (the ``unknown`` bitmask), plus a soft Dice over
  the lesion classes, computed only on samples that label the class.
* :func:`augment`: left-right flip, small rotation/scale/shift (labels nearest), brightness/contrast/gamma.
* :func:`train_fold`: resumable loop (checkpoint every epoch in the run folder, log file, tqdm progress),
  balanced sampling over source groups, early stopping on a patient-grouped validation fold.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from strokescan.config import SEED, cache_root
from strokescan.core.geometry import to_model_frame
from strokescan.core.labels import EDEMA, HEMORRHAGE, INFARCT, LESION_CLASSES, N_CLASSES
from strokescan.datasets.lesion_masks import (
    PUBLIC_LABELLED,
    SOURCE_LABELLED,
    MaskSample,
    build_segmentation_manifest,
    decode_sample,
    make_source_folds,
    row_slice,
    training_rotation,
)
from strokescan.datasets.splits import fold_of, read_folds, write_folds
from strokescan.errors import DataError
from strokescan.evaluation.segmentation import (
    compare_methods,
    edema_baseline,
    evaluate_slices,
    fit_edema_baseline,
    fit_threshold_baseline,
    summarize,
    threshold_baseline,
    write_report,
)
from strokescan.inference.segmenter import to_input_mask
from strokescan.models.classifier import load_classifier
from strokescan.models.unet import SEG_INPUT_SIZE, SegmenterPlan, UNetConfig, build_unet, load_segmenter, save_segmenter
from strokescan.preprocessing.pipeline import SlicePlan, prepare_slice

log = logging.getLogger(__name__)
CACHE_VERSION = 2


# ----------------------------------------------------------------------------------------------------------
# Cache


@dataclass
class SegArrays:
    """Preprocessed samples (model frame) and their rows."""

    images: np.ndarray  # (N, 3, S, S) uint8 (channel values x 255)
    target: np.ndarray  # (N, S, S) uint8 class ids
    unknown: np.ndarray  # (N, S, S) uint8 bitmask of unlabelled classes
    labelled: np.ndarray  # (N, 4) bool
    rows: pd.DataFrame  # manifest rows + box, rotation_deg, rows/cols of the input grid

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx) -> SegArrays:
        idx = np.asarray(idx)
        return SegArrays(self.images[idx], self.target[idx], self.unknown[idx], self.labelled[idx],
                         self.rows.iloc[idx].reset_index(drop=True))


def _cache_key(manifest: pd.DataFrame, plan: SlicePlan) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"v": CACHE_VERSION, "plan": plan.to_dict(), "labelled": SOURCE_LABELLED},
                        sort_keys=True).encode())
    for r in manifest[["image_path", "mask_path", "boxes", "source"]].astype(str).itertuples(index=False):
        h.update("|".join(str(v) for v in r).encode())
    extra = [c for c in ("frame", "labelled_classes") if c in manifest and manifest["source"].isin(PUBLIC_LABELLED).any()]
    if extra:  # rows of the full public sets (volume slices, per-row labels); the mini sets' key is unchanged
        h.update(manifest[extra].astype(str).to_csv(index=False).encode())
    return h.hexdigest()[:16]


def prepare_sample(row, plan: SlicePlan, rotation_deg: float, load=None):
    """(channels uint8, target, unknown, labelled, meta) of one manifest row in the model frame."""
    pixels, is_hu = row_slice(row, load)
    prep = prepare_slice(pixels, is_hu, plan, rotation_deg=float(rotation_deg))
    ms = decode_sample(row, shape=pixels.shape)
    if ms.target.shape != pixels.shape:
        raise DataError(f"{row['mask_path']}: mask {ms.target.shape} does not match image {pixels.shape}")
    target = to_model_frame(ms.target, prep.box, prep.rotation_deg, plan.size)
    unknown = to_model_frame(ms.unknown, prep.box, prep.rotation_deg, plan.size)
    unknown[target > 0] = 0
    img = np.clip(np.round(prep.channels * 255.0), 0, 255).astype(np.uint8)
    meta = {"box": json.dumps(list(prep.box)), "rotation_deg": prep.rotation_deg, "rows": pixels.shape[0],
            "cols": pixels.shape[1], "is_hu": is_hu}
    return img, target, unknown, ms.labelled, meta


def build_cache(manifest: pd.DataFrame, plan: SlicePlan, folder: Path | None = None, load=None) -> SegArrays:
    """Preprocess ``manifest`` (or read the cache made earlier for the same rows and plan)."""
    folder = Path(folder or cache_root() / "segmentation")
    folder.mkdir(parents=True, exist_ok=True)
    key = _cache_key(manifest, plan)
    path = folder / f"seg_{key}.npz"
    rows_path = folder / f"seg_{key}.csv"
    if path.is_file() and rows_path.is_file():
        z = np.load(path)
        rows = pd.read_csv(rows_path, dtype={"source_patient": str})
        log.info("segmentation cache %s: %d samples", path.name, len(rows))
        return SegArrays(z["images"], z["target"], z["unknown"], z["labelled"], rows)
    rotations = training_rotation(manifest, load=load)
    n, s = len(manifest), plan.size
    images = np.zeros((n, 3, s, s), np.uint8)
    target = np.zeros((n, s, s), np.uint8)
    unknown = np.zeros((n, s, s), np.uint8)
    labelled = np.zeros((n, N_CLASSES), bool)
    metas = []
    for i, (_, row) in enumerate(tqdm(manifest.iterrows(), total=n, desc="preprocess (segmentation)", mininterval=5)):
        angle = rotations.get(row["patient"], 0.0)
        images[i], target[i], unknown[i], labelled[i], meta = prepare_sample(row, plan, angle, load=load)
        metas.append(meta)
    rows = pd.concat([manifest.reset_index(drop=True), pd.DataFrame(metas)], axis=1)
    tmp = folder / f"seg_{key}.tmp.npz"
    np.savez(tmp, images=images, target=target, unknown=unknown, labelled=labelled)
    tmp.replace(path)
    rows.to_csv(rows_path, index=False)
    return SegArrays(images, target, unknown, labelled, rows)


# ----------------------------------------------------------------------------------------------------------
# Loss


def allowed_classes(target: torch.Tensor, unknown: torch.Tensor, n_classes: int = N_CLASSES) -> torch.Tensor:
    """(N, C, H, W) bool: the classes a pixel may be under its source's labels."""
    classes = torch.arange(n_classes, device=target.device).view(1, -1, 1, 1)
    t = target.long().unsqueeze(1)
    u = unknown.long().unsqueeze(1)
    return (t == classes) | (((u >> classes) & 1) == 1)


def partial_label_loss(logits: torch.Tensor, target: torch.Tensor, unknown: torch.Tensor, labelled: torch.Tensor,
                       dice_weight: float = 1.0, smooth: float = 1.0) -> tuple[torch.Tensor, dict]:
    """Marginal cross-entropy + soft Dice over labelled lesion classes.

    Cross-entropy: ``-log sum_{c allowed} p_c`` per pixel (unlabelled classes merged with background).
    Dice: per lesion class, pooled over the batch's samples that label that class (so a class a sample's
    source does not label adds nothing), ``1 - (2 I + s) / (P + G + s)``; averaged over classes that have
    at least one such sample.
    """
    logp = F.log_softmax(logits.float(), dim=1)
    allowed = allowed_classes(target, unknown, logits.shape[1])
    ce = -torch.logsumexp(logp.masked_fill(~allowed, -1e4), dim=1).mean()
    probs = logp.exp()
    dice_terms = []
    for c in LESION_CLASSES:
        sel = labelled[:, c].bool()
        if not bool(sel.any()):
            continue
        p = probs[sel, c]
        g = (target[sel] == c).float()
        inter = (p * g).sum()
        dice_terms.append(1.0 - (2 * inter + smooth) / (p.sum() + g.sum() + smooth))
    dice = torch.stack(dice_terms).mean() if dice_terms else logits.new_zeros(())
    total = ce + dice_weight * dice
    return total, {"ce": float(ce.detach()), "dice_loss": float(dice.detach())}


# ----------------------------------------------------------------------------------------------------------
# Augmentation


def augment(x: torch.Tensor, target: torch.Tensor, unknown: torch.Tensor, gen: torch.Generator,
            max_rot_deg: float = 15.0, scale: tuple[float, float] = (0.9, 1.1), shift: float = 0.05
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random flip (left-right only: anterior stays up), rotation, scale, shift; intensity jitter on x."""
    n = x.shape[0]

    def rnd(lo, hi):
        return torch.rand(n, generator=gen) * (hi - lo) + lo

    ang = torch.deg2rad(rnd(-max_rot_deg, max_rot_deg))
    sc = rnd(*scale)
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    tx, ty = rnd(-shift, shift) * 2, rnd(-shift, shift) * 2
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    lab = torch.stack([target.float(), unknown.float()], 1)
    lab = F.grid_sample(lab, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    target, unknown = lab[:, 0].round().to(torch.uint8), lab[:, 1].round().to(torch.uint8)
    # outside the image after the warp: background; keep the sample's "unknown" bits of its corner pixel
    contrast = rnd(0.85, 1.15).view(n, 1, 1, 1)
    bright = rnd(-0.05, 0.05).view(n, 1, 1, 1)
    gamma = rnd(0.8, 1.25).view(n, 1, 1, 1)
    x = (x.clamp(0, 1) ** gamma * contrast + bright).clamp(0, 1)
    return x, target, unknown


# ----------------------------------------------------------------------------------------------------------
# Training


@dataclass(frozen=True)
class SegTrainConfig:
    """Hyper-parameters of one run (stored in the model plan)."""

    max_epochs: int = 30
    patience: int = 6
    steps_per_epoch: int = 50
    batch_size: int = 8
    lr: float = 1e-3
    encoder_lr_factor: float = 0.3  # encoder (pretrained) learns slower than the decoder
    weight_decay: float = 1e-4
    dice_weight: float = 1.0
    #: share of each batch drawn from each sampling group (see sample_groups)
    group_weights: dict = field(default_factory=lambda: {"hemorrhage": 0.3, "edema": 0.25, "infarct": 0.2,
                                                         "negative": 0.25})
    augment: bool = True
    seed: int = SEED  # data: ctich-kaggle negatives, folds; and training draws unless train_seed is set
    train_seed: int | None = None  # batch draws, augmentation, init (a fine-tune's new draws; seed studies)
    threads: int = 1

    @property
    def draw_seed(self) -> int:
        """The seed of the training draws: ``train_seed`` when set, else the data seed."""
        return self.seed if self.train_seed is None else self.train_seed

    def to_dict(self) -> dict:
        return asdict(self)


def sample_groups(data: SegArrays) -> np.ndarray:
    """Sampling group per sample: the lesion class its target holds (first of hemorrhage, edema, infarct),
    else 'negative'."""
    has = np.stack([(data.target == c).reshape(len(data), -1).any(axis=1) for c in LESION_CLASSES], 1)
    names = np.array([c.label for c in LESION_CLASSES])
    return np.where(has.any(axis=1), names[np.argmax(has, axis=1)], "negative")


def sampling_weights(data: SegArrays, group_weights: dict) -> np.ndarray:
    groups = sample_groups(data)
    w = np.zeros(len(data))
    present = {g: int((groups == g).sum()) for g in group_weights}
    total = sum(v for g, v in group_weights.items() if present[g])
    for g, share in group_weights.items():
        if present[g]:
            w[groups == g] = share / total / present[g]
    return w / w.sum()


def to_tensors(data: SegArrays, idx) -> tuple[torch.Tensor, ...]:
    idx = np.asarray(idx)
    x = torch.from_numpy(data.images[idx].astype(np.float32) / 255.0)
    return (x, torch.from_numpy(data.target[idx]), torch.from_numpy(data.unknown[idx]),
            torch.from_numpy(data.labelled[idx]))


@torch.no_grad()
def predict_probs(model: torch.nn.Module, images: np.ndarray, batch: int = 16) -> np.ndarray:
    """Softmax probabilities (N, C, S, S) float16 for uint8 model-frame images."""
    model.eval()
    out = []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(images[i:i + batch].astype(np.float32) / 255.0)
        out.append(torch.softmax(model(x), 1).half().numpy())
    return np.concatenate(out) if out else np.zeros((0, N_CLASSES, *images.shape[-2:]), np.float16)


def validation_score(data: SegArrays, probs: np.ndarray) -> dict:
    """Pooled hard Dice per lesion class over samples labelling it (model frame); ``score`` = their mean."""
    pred = probs.argmax(1)
    out = {}
    for c in LESION_CLASSES:
        sel = data.labelled[:, c]
        g = data.target[sel] == c
        if not sel.any() or not g.any():
            continue
        p = pred[sel] == c
        out[f"dice_{c}"] = float(2 * (p & g).sum() / max(p.sum() + g.sum(), 1))
    out["score"] = float(np.mean(list(out.values()))) if out else 0.0
    return out


def _param_groups(model: torch.nn.Module, cfg: SegTrainConfig) -> list[dict]:
    enc_ids = set()
    if hasattr(model, "encoder_modules"):
        enc_ids = {id(p) for m in model.encoder_modules() for p in m.parameters()}
    enc = [p for p in model.parameters() if p.requires_grad and id(p) in enc_ids]
    dec = [p for p in model.parameters() if p.requires_grad and id(p) not in enc_ids]
    groups = [{"params": dec, "lr": cfg.lr}]
    if enc:
        groups.append({"params": enc, "lr": cfg.lr * cfg.encoder_lr_factor})
    return groups


def train_fold(model: torch.nn.Module, train: SegArrays, val: SegArrays, cfg: SegTrainConfig, run_dir: Path,
               desc: str = "train") -> tuple[torch.nn.Module, dict]:
    """Train with early stopping on ``val``; resumes from ``run_dir/checkpoint.pt``. Returns the best model."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    seed = cfg.draw_seed
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(_param_groups(model, cfg), weight_decay=cfg.weight_decay)
    total_steps = cfg.max_epochs * cfg.steps_per_epoch
    warm = max(1, int(0.05 * total_steps))

    def lr_factor(step: int) -> float:  # linear warm-up, cosine decay to 2 %; recomputed from cfg on resume
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total_steps - warm))
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    weights = sampling_weights(train, cfg.group_weights)
    ckpt = run_dir / "checkpoint.pt"
    state = {"epoch": 0, "best_score": -1.0, "best_epoch": 0, "history": [], "best_state": None}
    if ckpt.is_file():
        saved = torch.load(ckpt, map_location="cpu", weights_only=False)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        sched.load_state_dict(saved["sched"])
        state = saved["state"]
        log.info("%s: resumed after epoch %d (best %.3f at %d)", desc, state["epoch"], state["best_score"],
                 state["best_epoch"])
    gen = torch.Generator().manual_seed(seed + state["epoch"])
    rng = np.random.default_rng(seed + state["epoch"])
    for epoch in range(state["epoch"] + 1, cfg.max_epochs + 1):
        if epoch - state["best_epoch"] > cfg.patience and state["best_epoch"] > 0:
            log.info("%s: early stop at epoch %d (best %d)", desc, epoch - 1, state["best_epoch"])
            break
        model.train()
        t0 = time.time()
        losses = []
        bar = tqdm(range(cfg.steps_per_epoch), desc=f"{desc} epoch {epoch}/{cfg.max_epochs}", leave=False,
                   mininterval=5)
        for _ in bar:
            idx = rng.choice(len(train), size=cfg.batch_size, replace=True, p=weights)
            x, t, u, lab = to_tensors(train, idx)
            if cfg.augment:
                x, t, u = augment(x, t, u, gen)
            loss, parts = partial_label_loss(model(x), t, u, lab, dice_weight=cfg.dice_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        val_scores = validation_score(val, predict_probs(model, val.images)) if len(val) else {"score": 0.0}
        rec = {"epoch": epoch, "loss": float(np.mean(losses)), "seconds": round(time.time() - t0, 1), **val_scores}
        state["history"].append(rec)
        if val_scores["score"] > state["best_score"]:
            state.update(best_score=val_scores["score"], best_epoch=epoch,
                         best_state=copy.deepcopy(model.state_dict()))
        state["epoch"] = epoch
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "state": state}, run_dir / "checkpoint.tmp")
        (run_dir / "checkpoint.tmp").replace(ckpt)
        log.info("%s epoch %d: loss %.4f val %s (%.0f s)", desc, epoch, rec["loss"],
                 {k: round(v, 3) for k, v in val_scores.items()}, rec["seconds"])
    if state["best_state"] is not None:
        model.load_state_dict(state["best_state"])
    summary = {"best_epoch": state["best_epoch"], "best_val_score": state["best_score"],
               "epochs_run": state["epoch"], "history": state["history"]}
    return model.eval(), summary


def benchmark_step(model: torch.nn.Module, batch: int = 8, size: int = 256, steps: int = 3, threads: int = 1) -> float:
    """Median seconds of one training step (forward, partial-label loss, backward, AdamW) on random data."""
    torch.set_num_threads(threads)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], 1e-3)
    model.train()
    x = torch.rand(batch, 3, size, size)
    t = torch.randint(0, N_CLASSES, (batch, size, size), dtype=torch.uint8)
    u = torch.zeros_like(t)
    lab = torch.ones(batch, N_CLASSES, dtype=torch.bool)
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        loss, _ = partial_label_loss(model(x), t, u, lab)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:]))


def epochs_hint(n_steps: int, seconds_per_step: float) -> str:
    return f"{n_steps} steps x {seconds_per_step:.2f} s = {math.ceil(n_steps * seconds_per_step / 60)} min"


# ----------------------------------------------------------------------------------------------------------
# A whole run: data, folds, training, held-out evaluation with the baseline, model and report.


def evaluate_on(model: torch.nn.Module, data: SegArrays, baseline_k: float | None, load=None,
                edema_params: dict | None = None, plan: SegmenterPlan | None = None) -> pd.DataFrame:
    """Per-slice metrics of the model and of the threshold baselines in the input grid: blood with
    ``baseline_k``, and perihematomal edema when ``edema_params`` (of :func:`edema_baseline`) are given.
    ``plan`` sets the decision after the network (default: :class:`SegmenterPlan`'s)."""
    return evaluate_probs(predict_probs(model, data.images), data, baseline_k, load, edema_params, plan)


class SliceTruth(NamedTuple):
    """What evaluating one row reads from disk: its input pixels and its reference labels (input grid)."""

    pixels: np.ndarray
    is_hu: bool
    sample: MaskSample


def read_truths(data: SegArrays, load=None) -> list[SliceTruth]:
    """Every row's pixels and labels, read once for several evaluations of the same slices."""
    out = []
    for _, row in data.rows.iterrows():
        pixels, is_hu = row_slice(row, load)
        out.append(SliceTruth(pixels, is_hu, decode_sample(row, shape=(int(row["rows"]), int(row["cols"])))))
    return out


def evaluate_probs(probs: np.ndarray, data: SegArrays, baseline_k: float | None, load=None,
                   edema_params: dict | None = None, plan: SegmenterPlan | None = None,
                   slice_probability: np.ndarray | None = None,
                   truths: list[SliceTruth] | None = None) -> pd.DataFrame:
    """:func:`evaluate_on` for probabilities already computed (one network pass, several decision settings);
    ``slice_probability``: the detector's probability of any hemorrhage per row (NaN: none), for the plan's gate;
    ``truths``: :func:`read_truths` of ``data``, when several settings are evaluated on the same rows."""
    plan = plan or SegmenterPlan()
    truths = truths if truths is not None else read_truths(data, load)
    preds, labelled, base = [], [], []
    for i, (_, row) in enumerate(data.rows.iterrows()):
        pixels, is_hu, ms = truths[i]
        box = tuple(json.loads(row["box"]))
        preds.append(to_input_mask(probs[i].astype(np.float32), box, float(row["rotation_deg"]), pixels, is_hu, plan,
                                   None if slice_probability is None or np.isnan(slice_probability[i])
                                   else float(slice_probability[i])))
        labelled.append(ms.labelled)
        if baseline_k is not None:
            ids = threshold_baseline(pixels, is_hu, k=baseline_k)
            if edema_params is not None:
                ids[(ids == 0) & (edema_baseline(pixels, is_hu, **edema_params) > 0)] = EDEMA
            base.append(ids)
    labelled = np.array(labelled)
    truths = [t.sample.target for t in truths]
    tables = [evaluate_slices(data.rows, preds, truths, labelled, "unet")]
    if baseline_k is not None:
        lab_h = labelled.copy()
        lab_h[:, INFARCT if edema_params is not None else EDEMA:] = False  # classes without a baseline
        tables.append(evaluate_slices(data.rows, base, truths, lab_h, "threshold"))
    return pd.concat(tables, ignore_index=True)


def _training_slices_with(train: SegArrays, cls: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """8-bit input pixels and class-id truths of the training slices that label and contain ``cls``."""
    imgs, truths = [], []
    for i in range(len(train)):
        row = train.rows.iloc[i]
        if train.labelled[i, cls] and (train.target[i] == cls).any() and not row["is_hu"]:
            pixels, _ = row_slice(row)
            imgs.append(pixels)
            truths.append(decode_sample(row, shape=pixels.shape).target)
    return imgs, truths


def folds_sha256(folds: dict) -> str:
    """A fingerprint of a folds dict's patient assignment (stored in each model's plan)."""
    return hashlib.sha256(json.dumps(folds["folds"], sort_keys=True).encode()).hexdigest()


def _check_same_split(init_training: dict, folds: dict, test_folds) -> None:
    """A model to fine-tune must come from the same folds and held-out fold, or the held-out figures leak.

    Compared by the fingerprint in the model's plan, or (older plans) with the folds file the plan names.
    Patients listed under the folds' ``added_patients`` (new data the model never saw) are left out of the
    comparison when the model predates them: the rest must be the model's folds exactly, so an added patient cannot
    hide a moved one. A model made on these very folds (added patients included) passes as it is."""
    source = Path(str(init_training.get("folds_file", "")))
    added = set(folds.get("added_patients", ()))
    if init_training.get("folds_sha256"):
        base = {k: [p for p in ps if p not in added] for k, ps in folds["folds"].items()}
        same_folds = init_training["folds_sha256"] in (folds_sha256(folds), folds_sha256({"folds": base}))
    else:
        same_folds = source.is_file() and read_folds(source)["folds"] == folds["folds"]
    if not same_folds or list(test_folds) != [init_training.get("test_fold")]:
        raise DataError(f"--init-model was trained with held-out fold {init_training.get('test_fold')} of "
                        f"{source or 'unknown folds'}; this run holds out {list(test_folds)} of other or "
                        "different folds: its held-out figures would leak")


def run_training(out_dir: Path | str, cfg: SegTrainConfig = SegTrainConfig(), unet=None, test_folds=(0,),
                 n_folds: int = 5, ctich_negatives_per_patient: int = 4, pretrained: bool = True,
                 classifier_dir: Path | None = None, init_model: Path | None = None,
                 limit_per_source: int | None = None, root=None, n_boot: int = 1000, final: bool = False,
                 public: dict | None = None) -> dict:
    """The full run behind ``strokescan train segmenter`` (see docs/segmentation.md).

    For each test fold k: validation (early stopping) fold k+1, training = the rest; the best model is
    evaluated on fold k in the input grid next to the threshold baseline. Fold ``test_folds[0]``'s model is
    written to ``out_dir/model`` (the deployable segmenter); reports go to ``out_dir/report``.
    With ``final``, one more model trains on every fold but the early-stopping fold ``test_folds[0] + 1``
    (the held-out fold joins training) and replaces ``out_dir/model``; its plan carries the held-out figures
    of the fold models, marked as such.
    ``public`` adds full public sets ({name: folder}, see :func:`build_segmentation_manifest`).
    ``init_model`` starts every model from a saved segmenter (fine-tuning; with ``cfg.max_epochs == 0`` it only
    evaluates it). It must come from a run with the same folds and held-out fold, or the held-out figures leak.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.getLogger("strokescan").addHandler(handler)
    logging.getLogger("strokescan").setLevel(logging.INFO)
    torch.set_num_threads(cfg.threads)
    unet = unet or UNetConfig()
    if init_model is not None:
        unet = load_segmenter(init_model)[1].unet
    plan = SlicePlan(size=SEG_INPUT_SIZE)

    def new_model() -> torch.nn.Module:
        if init_model is not None:
            return load_segmenter(init_model)[0]
        torch.manual_seed(cfg.draw_seed)  # the decoder's random start
        model = build_unet(unet, pretrained=pretrained)
        if classifier_dir is not None and hasattr(model, "load_encoder_from_classifier"):
            model.load_encoder_from_classifier(load_classifier(Path(classifier_dir))[0])
        return model

    origin = {"pretrained_encoder": pretrained, "classifier_encoder": str(classifier_dir or ""),
              "init_model": str(init_model or "")}
    if public:
        origin["public_sets"] = {k: str(v) for k, v in sorted(public.items())}

    manifest = build_segmentation_manifest(root, ctich_negatives_per_patient=ctich_negatives_per_patient,
                                           seed=cfg.seed, public=public)
    if limit_per_source:
        keep = set()
        for _, g in manifest.groupby("source", sort=True):
            keep.update(sorted(g["patient"].unique())[:limit_per_source])
        manifest = manifest[manifest["patient"].isin(keep)].reset_index(drop=True)
    folds_path = out_dir / "folds.json"
    folds = json.loads(folds_path.read_text()) if folds_path.is_file() else make_source_folds(manifest, n_folds, cfg.seed)
    unplaced = sorted(set(manifest["patient"]) - {p for ps in folds["folds"].values() for p in ps})
    if unplaced:  # a resumed run whose sets changed (e.g. another --public): they would train in every fold
        raise DataError(f"{folds_path}: {len(unplaced)} patient(s) of this run are in no fold (e.g. {unplaced[0]}); "
                        "the sets changed since the folds were made: use a new --out")
    write_folds(folds, folds_path)
    if init_model is not None:
        _check_same_split(load_segmenter(init_model)[1].training, folds, test_folds)
    data = build_cache(manifest, plan)
    fold = data.rows["patient"].map(fold_of(folds)).to_numpy()
    counts = data.rows.groupby("source").agg(slices=("image_path", "size"), patients=("patient", "nunique"))
    log.info("segmentation set: %s", counts.to_dict(orient="index"))

    tables, fold_summaries = [], {}
    for k in test_folds:
        v = (k + 1) % n_folds
        tr = np.nonzero((fold != k) & (fold != v))[0]
        train, val, test = data.subset(tr), data.subset(np.nonzero(fold == v)[0]), data.subset(np.nonzero(fold == k)[0])
        model = new_model()
        fold_dir = out_dir / f"fold{k}"
        model, summ = train_fold(model, train, val, cfg, fold_dir, desc=f"fold {k}")
        # baseline settings from the training folds' 8-bit slices that contain the class
        imgs, truths = _training_slices_with(train, HEMORRHAGE)
        bk, bk_scores = fit_threshold_baseline(imgs, truths) if imgs else (2.0, {})
        imgs, truths = _training_slices_with(train, EDEMA)
        edema_params, edema_scores = fit_edema_baseline(imgs, truths) if imgs else (None, {})
        table = evaluate_on(model, test, bk, edema_params=edema_params)
        table["fold"] = k
        table.to_csv(fold_dir / "per_slice.csv", index=False)
        tables.append(table)
        fold_summaries[str(k)] = {**{kk: vv for kk, vv in summ.items() if kk != "history"},
                                  "baseline_k": bk, "baseline_fit_dice": bk_scores,
                                  "edema_baseline": edema_params, "edema_baseline_fit_dice": edema_scores,
                                  "n_train": len(train), "n_val": len(val), "n_test": len(test)}
        fsum = summarize(table, n_boot=n_boot)
        fsp = SegmenterPlan(unet=unet, slice_plan=plan, training={
            "config": cfg.to_dict(), **origin,
            "test_fold": k, "val_fold": v, "folds_file": str(folds_path), "folds_sha256": folds_sha256(folds),
            "n_train": len(train),
            "sources": counts.to_dict(orient="index"), "torch": torch.__version__, **fold_summaries[str(k)]},
            metrics={"held_out": json.loads(fsum.to_json(orient="records"))})
        save_segmenter(model, fsp, fold_dir / "model")
        if k == test_folds[0]:
            save_segmenter(model, fsp, out_dir / "model")
    table = pd.concat(tables, ignore_index=True)
    summary = summarize(table, n_boot=n_boot)
    if final:
        v = (test_folds[0] + 1) % n_folds
        train, val = data.subset(np.nonzero(fold != v)[0]), data.subset(np.nonzero(fold == v)[0])
        model, summ = train_fold(new_model(), train, val, cfg, out_dir / "final", desc="final")
        fold_summaries["final"] = {kk: vv for kk, vv in summ.items() if kk != "history"} | {"n_train": len(train)}
        save_segmenter(model, SegmenterPlan(unet=unet, slice_plan=plan, training={
            "config": cfg.to_dict(), **origin,
            "final_model": True, "val_fold": v, "folds_file": str(folds_path), "folds_sha256": folds_sha256(folds),
            "n_train": len(train),
            "sources": counts.to_dict(orient="index"), "torch": torch.__version__, **fold_summaries["final"]},
            metrics={"note": f"held-out figures of the fold models (test folds {list(test_folds)}), not of this model",
                     "held_out": json.loads(summary.to_json(orient="records"))}), out_dir / "model")
    extra = {"test_folds": list(test_folds), "folds": fold_summaries, "sources": counts.to_dict(orient="index"),
             "config": cfg.to_dict(), "unet": unet.to_dict(), **origin}
    write_report(summary, table, out_dir / "report", extra, paired=compare_methods(table, n_boot=n_boot))
    return {"summary": summary, "table": table, "folds": fold_summaries, "model_dir": out_dir / "model"}
