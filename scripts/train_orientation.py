"""Train the rotation estimator (strokescan.models.orientation_net) self-supervised on upright slices.

Run: .venv/bin/python scripts/train_orientation.py [--epochs 40] [--seed 0] [--out DIR] [--all-folds]

Training slices: ctich-kaggle patients of folds 1-4 of the committed split (fold 0 is held out for
benchmarks/rotation_accuracy.py) plus the upright mini sets (bhsd-mini, aisd-mini, cpaisd-mini, realtime-mini
originals). phe-sich is never used (external test). Each epoch every slice is turned by a fresh uniform random
angle in [0, 360) (plus a random left-right flip, small zoom/shift and contrast jitter) and the net regresses
(cos, sin) of that angle. Head views (downsampled, head-masked) are cached under strokescan.config.cache_root().
Default output: the bundled model folder src/strokescan/resources/models/orientation/.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from tqdm import tqdm

from strokescan.config import cache_root
from strokescan.models.orientation_net import (
    BUNDLED_DIR,
    INPUT_PX,
    WORK_PX,
    CROP_RADII,
    HeadView,
    OrientationNet,
    OrientationPlan,
    head_view,
    net_input,
    predict_angles,
    save_orientation_net,
)

MIN_HEAD = 0.05
CACHE_VERSION = f"v1_{WORK_PX}"


def build_cache() -> dict:
    """Head views of every ctich-kaggle and upright mini-set slice (cached as uint8)."""
    path = cache_root() / "orientation" / f"views_{CACHE_VERSION}.npz"
    if path.is_file():
        d = np.load(path, allow_pickle=False)
        return {k: d[k] for k in d.files}
    from strokescan.datasets import local
    from strokescan.io import load_scan

    frames = [local.load_ctich_kaggle()]
    for name in ("bhsd_mini", "aisd_mini", "cpaisd_mini", "realtime_mini"):
        m = getattr(local, f"load_{name}")()
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


def circ_err(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs((a - b + 180.0) % 360.0 - 180.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--all-folds", action="store_true", help="also train on fold 0 (no held-out check then)")
    ap.add_argument("--out", default=str(BUNDLED_DIR))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    from strokescan.datasets.splits import ctich_kaggle_folds

    cache = build_cache()
    fold0 = set(ctich_kaggle_folds()["folds"]["0"])
    ok = cache["geo"][:, 3] >= MIN_HEAD
    held = np.array([p in fold0 for p in cache["patients"]])
    train_idx = np.nonzero(ok & (~held | args.all_folds))[0]
    val_idx = np.nonzero(ok & held)[0]
    train_views, val_views = views(cache, train_idx), views(cache, val_idx)
    vrng = np.random.default_rng(12345)
    val_x, val_a = make_batch(val_views, vrng, augment=False)
    ds = cache["datasets"][train_idx]
    per_ds = ", ".join(f"{d}: {int((ds == d).sum())}" for d in np.unique(ds))
    print(f"train {len(train_idx)} slices ({per_ds}); held-out fold 0: {len(val_idx)} slices; "
          f"{int((~ok).sum())} slices with head < {MIN_HEAD:.0%} left out")

    model = OrientationNet()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * int(np.ceil(len(train_views) / args.batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.15)
    t0 = time.time()
    history = []
    for epoch in range(args.epochs):
        model.train()
        order = rng.permutation(len(train_views))
        losses = []
        bar = tqdm(range(0, len(order), args.batch), desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch", leave=False)
        for s in bar:
            x, a = make_batch([train_views[i] for i in order[s:s + args.batch]], rng, augment=True)
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
        if len(val_views) and (epoch % 5 == 4 or epoch == args.epochs - 1):
            est, _ = predict_angles(model, val_x)
            e = circ_err(est, val_a)
            frac = float((e <= 10).mean())
            msg += f"; fold-0 frame error within 10 deg {frac:.3f}, median {np.median(e):.1f}"
            history.append({"epoch": epoch + 1, "fold0_within_10": round(frac, 4), "median": round(float(np.median(e)), 2)})
        print(msg + f" ({time.time() - t0:.0f} s)", flush=True)
    plan = OrientationPlan(training={
        "data": "ctich-kaggle " + ("all folds" if args.all_folds else "folds 1-4 (fold 0 held out)")
                + " + bhsd-mini, aisd-mini, cpaisd-mini, realtime-mini originals; phe-sich never used",
        "slices": int(len(train_idx)), "epochs": args.epochs, "batch": args.batch, "lr": args.lr, "seed": args.seed,
        "input_px": INPUT_PX, "work_px": WORK_PX, "crop_radii": CROP_RADII, "torch": torch.__version__,
        "seconds": round(time.time() - t0), "command": "scripts/train_orientation.py"
        + (" --all-folds" if args.all_folds else "") + f" --epochs {args.epochs} --seed {args.seed}",
    }, metrics={"fold0_during_training": history})
    from pathlib import Path

    save_orientation_net(model, plan, Path(args.out))
    print(f"saved to {args.out}")


if __name__ == "__main__":
    main()
