"""Time of the 5-fold classifier run on this machine, next to the seed-style CNN measured in the same run.

    .venv/bin/python benchmarks/train_speed.py [--slices 64] [--steps 5] [--threads 2] [--run-dir runs/classifier]

Measures each stage on real ctich-kaggle slices (from $STROKESCAN_DATA or ../shared/data), then extrapolates
to the whole 5-fold run on 2501 slices: preprocessing, trunk features for 3 views (computed once, cached),
and the top's training steps for the number of epochs each fold actually ran in --run-dir (the maximum, 25,
when no run is there); next to it the seed CNN's training step (128 px, batch 32) for 5 folds of its maximum
12 epochs. These machines are noisy: compare the two columns of one run, not runs with each other.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from strokescan.models.classifier import SliceClassifier
from strokescan.models.seed_cnn import SEED_INPUT_SIZE, SeedCNN
from strokescan.preprocessing.pipeline import SlicePlan
from strokescan.training.classifier import TrainConfig
from strokescan.training.features import prepare_inputs, trunk_features
from strokescan.training.workflow import ctich_manifest
from timing import median_seconds  # benchmarks/timing.py

N_FOLDS, SEED_MAX_EPOCHS, SEED_BATCH = 5, 12, 32


def _train_step(model: nn.Module, params, forward, x: torch.Tensor, y: torch.Tensor):
    opt = torch.optim.AdamW(params, lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()

    def step() -> None:
        loss = loss_fn(forward(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def _epochs_run(run_dir: Path) -> list[int]:
    """Epochs each finished fold trained (early stopping), from the run's fold files."""
    return [len(json.loads(f.read_text())["history"]) for f in sorted(run_dir.glob("fold_*.json"))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=64, help="real slices to preprocess and featurise")
    ap.add_argument("--steps", type=int, default=5, help="training steps timed (median)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--run-dir", type=Path, default=Path("runs/classifier"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg, plan = TrainConfig(), SlicePlan()
    manifest = ctich_manifest()
    n_total, n_labelled = len(manifest), int(manifest["label"].notna().sum())
    paths = manifest["image_path"].sample(args.slices, random_state=0).tolist()

    t = time.perf_counter()
    inputs = prepare_inputs(paths, plan)
    prep_per_slice = (time.perf_counter() - t) / len(paths)
    model = SliceClassifier(pretrained=True)
    t = time.perf_counter()
    feats = trunk_features(model, inputs, n_views=1, seed=0)
    trunk_per_slice = (time.perf_counter() - t) / len(paths)

    x = feats[0, : cfg.batch_size].float().repeat(max(1, cfg.batch_size // len(paths) + 1), 1, 1, 1)[: cfg.batch_size]
    y = torch.randint(0, 2, (len(x),)).float()
    model.train()
    model.frozen_blocks.eval()
    top_step = median_seconds(_train_step(model, model.top_parameters(), model.top, x, y), args.steps)
    seed = SeedCNN().train()
    xs, ys = torch.rand(SEED_BATCH, 1, SEED_INPUT_SIZE, SEED_INPUT_SIZE), torch.randint(0, 2, (SEED_BATCH,)).float()
    seed_step = median_seconds(_train_step(seed, seed.parameters(), seed, xs, ys), args.steps)

    train_rows = n_labelled * (N_FOLDS - 2) / N_FOLDS  # three of five folds train, one validates, one tests
    epochs = _epochs_run(args.run_dir) or [cfg.max_epochs] * N_FOLDS
    ours_cache = n_total * (prep_per_slice + cfg.n_views * trunk_per_slice)
    ours_train = sum(epochs) * np.ceil(train_rows / cfg.batch_size) * top_step
    seed_train = N_FOLDS * SEED_MAX_EPOCHS * np.ceil(train_rows / SEED_BATCH) * seed_step
    seed_prep = n_total * prep_per_slice / 3  # a resize only: an upper bound of a third of our preprocessing
    rows = {
        "preprocess, s/slice": (prep_per_slice, None),
        "trunk features (frozen blocks 0-13), s/slice/view": (trunk_per_slice, None),
        f"training step, s (ours: top, batch {cfg.batch_size}; seed CNN: batch {SEED_BATCH})": (top_step, seed_step),
        "5-fold run, min: feature cache (once)": (ours_cache / 60, seed_prep / 60),
        f"5-fold run, min: training ({sum(epochs)} epochs ours, {N_FOLDS * SEED_MAX_EPOCHS} max seed)":
            (ours_train / 60, seed_train / 60),
        "5-fold run, min: total": ((ours_cache + ours_train) / 60, (seed_prep + seed_train) / 60),
    }
    width = max(len(k) for k in rows)
    print(f"{'stage':<{width}}  {'strokescan':>10}  {'seed CNN':>9}   ({args.threads} threads)")
    for k, (ours, base) in rows.items():
        print(f"{k:<{width}}  {ours:10.3f}  {'' if base is None else f'{base:9.3f}'}")
    print(json.dumps({"threads": args.threads, "epochs_per_fold": epochs,
                      "figures": {k: [round(v, 4) if v is not None else None for v in pair] for k, pair in rows.items()}}))


if __name__ == "__main__":
    main()
