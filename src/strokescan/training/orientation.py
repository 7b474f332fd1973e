"""Train the orientation network (:mod:`strokescan.models.orientation`) self-supervised on upright slices.

Run: ``strokescan train orientation [--epochs 40] [--seed 0] [--out runs/orientation] [--all-folds]``

Training slices: ctich-kaggle patients of folds 1-4 of the committed split (fold 0 is held out for
benchmarks/rotation_accuracy.py) plus the upright mini sets (bhsd-mini, aisd-mini, cpaisd-mini, realtime-mini
originals). phe-sich is never used (external test). Each epoch every slice is turned by a fresh uniform random
angle in [0, 360) (plus a random left-right flip, small zoom/shift and contrast jitter) and the net regresses
(cos, sin) of that angle. Head views (downsampled, head-masked) are cached under strokescan.config.cache_root().
Output: a model folder (default ``runs/orientation``; copy it into the package's resources/models/orientation
to bundle it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from strokescan.config import cache_root
from strokescan.core.geometry import circular_error_deg
from strokescan.datasets import local
from strokescan.datasets.splits import ctich_kaggle_folds
from strokescan.io import load_scan
from strokescan.models.orientation import (
    CROP_RADII,
    INPUT_PX,
    WORK_PX,
    HeadView,
    OrientationNet,
    OrientationPlan,
    head_view,
    net_input,
    predict_angles,
    save_orientation_net,
)
from strokescan.models.rotation import MIN_HEAD_FRACTION

UPRIGHT_MINI_SETS = (local.load_bhsd_mini, local.load_aisd_mini, local.load_cpaisd_mini, local.load_realtime_mini)
CACHE_VERSION = f"v1_{WORK_PX}"


def build_cache() -> dict:
    """Head views of every ctich-kaggle and upright mini-set slice (cached as uint8)."""
    path = cache_root() / "orientation" / f"views_{CACHE_VERSION}.npz"
    if path.is_file():
        d = np.load(path, allow_pickle=False)
        return {k: d[k] for k in d.files}
    frames = [local.load_ctich_kaggle()]
    for load in UPRIGHT_MINI_SETS:
        m = load()
        if "augmented" in m:
            m = m[~m["augmented"].astype(bool)]
        frames.append(m)
    paths, patients, datasets = [], [], []
    for m in frames:
        paths += list(m["image_path"])
        patients += list(m["patient"])
        datasets += [p.split(":")[0] for p in m["patient"]]
    imgs, geo = [], []
    for p in tqdm(paths, desc="caching head views", unit="slice"):
        scan = load_scan(p)
        v = head_view(scan.pixels[0], scan.is_hu)
        imgs.append(np.round(v.image * 255).astype(np.uint8))
        geo.append([v.cy, v.cx, v.radius, v.head_fraction])
    out = {"images": np.stack(imgs), "geo": np.array(geo, np.float32), "paths": np.array(paths),
           "patients": np.array(patients), "datasets": np.array(datasets)}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out


def views(cache: dict, idx: np.ndarray) -> list[HeadView]:
    return [HeadView(cache["images"][i].astype(np.float32) / 255.0, *map(float, cache["geo"][i])) for i in idx]


def make_batch(vs: list[HeadView], rng: np.random.Generator, augment: bool) -> tuple[np.ndarray, np.ndarray]:
    angles = rng.uniform(0.0, 360.0, len(vs))
    xs = []
    for v, a in zip(vs, angles):
        if augment:
            x = net_input(v, a, scale_jitter=float(rng.uniform(0.9, 1.1)), shift=tuple(rng.uniform(-3, 3, 2)),
                          flip=bool(rng.random() < 0.5))
            x = np.clip(x, 0, 1) ** float(rng.uniform(0.8, 1.25)) * float(rng.uniform(0.85, 1.15))
        else:
            x = net_input(v, a)
        xs.append(x)
    return np.stack(xs).astype(np.float32), angles


@dataclass(frozen=True)
class OrientationTrainConfig:
    epochs: int = 40
    batch: int = 64
    lr: float = 3e-3
    seed: int = 0
    threads: int = 1
    all_folds: bool = False  # also train on fold 0 (no held-out check then)


def train_orientation(out: Path | str, cfg: OrientationTrainConfig = OrientationTrainConfig()) -> Path:
    """Train the orientation network and save it to ``out``; prints progress and the fold-0 check."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    cache = build_cache()
    fold0 = set(ctich_kaggle_folds()["folds"]["0"])
    ok = cache["geo"][:, 3] >= MIN_HEAD_FRACTION
    held = np.array([p in fold0 for p in cache["patients"]])
    train_idx = np.nonzero(ok & (~held | cfg.all_folds))[0]
    val_idx = np.nonzero(ok & held)[0]
    train_views, val_views = views(cache, train_idx), views(cache, val_idx)
    vrng = np.random.default_rng(12345)
    val_x, val_a = make_batch(val_views, vrng, augment=False)
    ds = cache["datasets"][train_idx]
    per_ds = ", ".join(f"{d}: {int((ds == d).sum())}" for d in np.unique(ds))
    print(f"train {len(train_idx)} slices ({per_ds}); held-out fold 0: {len(val_idx)} slices; "
          f"{int((~ok).sum())} slices with head < {MIN_HEAD_FRACTION:.0%} left out")

    model = OrientationNet()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    steps = cfg.epochs * int(np.ceil(len(train_views) / cfg.batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.15)
    t0 = time.time()
    history = []
    for epoch in range(cfg.epochs):
        model.train()
        order = rng.permutation(len(train_views))
        losses = []
        bar = tqdm(range(0, len(order), cfg.batch), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False)
        for s in bar:
            x, a = make_batch([train_views[i] for i in order[s:s + cfg.batch]], rng, augment=True)
            target = torch.from_numpy(np.stack([np.cos(np.radians(a)), np.sin(np.radians(a))], 1).astype(np.float32))
            out = model(torch.from_numpy(x)[:, None])
            loss = ((out - target) ** 2).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses):.3f}")
        model.eval()
        msg = f"epoch {epoch + 1}: loss {np.mean(losses):.4f}"
        if len(val_views) and (epoch % 5 == 4 or epoch == cfg.epochs - 1):
            est, _ = predict_angles(model, val_x)
            e = circular_error_deg(est, val_a)
            frac = float((e <= 10).mean())
            msg += f"; fold-0 frame error within 10 deg {frac:.3f}, median {np.median(e):.1f}"
            history.append({"epoch": epoch + 1, "fold0_within_10": round(frac, 4), "median": round(float(np.median(e)), 2)})
        print(msg + f" ({time.time() - t0:.0f} s)", flush=True)
    plan = OrientationPlan(training={
        "data": "ctich-kaggle " + ("all folds" if cfg.all_folds else "folds 1-4 (fold 0 held out)")
                + " + bhsd-mini, aisd-mini, cpaisd-mini, realtime-mini originals; phe-sich never used",
        "slices": int(len(train_idx)), "epochs": cfg.epochs, "batch": cfg.batch, "lr": cfg.lr, "seed": cfg.seed,
        "input_px": INPUT_PX, "work_px": WORK_PX, "crop_radii": CROP_RADII, "torch": torch.__version__,
        "seconds": round(time.time() - t0), "command": "strokescan train orientation"
        + (" --all-folds" if cfg.all_folds else "") + f" --epochs {cfg.epochs} --seed {cfg.seed}",
    }, metrics={"fold0_during_training": history})
    save_orientation_net(model, plan, Path(out))
    print(f"saved to {out}")
    return Path(out)
