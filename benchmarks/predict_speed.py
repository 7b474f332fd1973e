"""Slices per second of `strokescan predict` on this machine, next to the seed-style CNN measured in the same run.

    .venv/bin/python benchmarks/predict_speed.py [--repeats 3] [--threads 2]

Each figure the median of --repeats runs: the full Predictor (read, rotation estimate, masks,
preprocessing, network) on the bundled 28-slice DICOM series and on the three bundled JPEG slices; the
network alone on preprocessed inputs; with a bundled segmenter, the Predictor with segmentation and the U-Net
alone; the seed CNN's forward pass on the same number of 128x128 slices (its
whole pipeline is a resize). Figures are for comparison within one run: these machines are noisy.
"""

from __future__ import annotations

import argparse
import json

import torch

from strokescan.config import SAMPLES_DIR
from strokescan.io import load_scan
from strokescan.models.seed_cnn import SEED_INPUT_SIZE, SeedCNN
from strokescan.prediction import Predictor
from strokescan.segmentation import DEFAULT_SEGMENTER_DIR
from timing import median_seconds  # benchmarks/timing.py


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    predictor = Predictor()
    series = load_scan(SAMPLES_DIR / "ge-hispeed-head-series.zip")
    jpegs = sorted(SAMPLES_DIR.glob("ctich_*.jpg"))
    n = series.n_slices
    rows = {}
    s = median_seconds(lambda: predictor.analyse(load_scan(SAMPLES_DIR / "ge-hispeed-head-series.zip")), args.repeats)
    rows["strokescan predict, DICOM series (read+preprocess+network)"] = n / s
    s = median_seconds(lambda: [predictor.analyse(load_scan(p)) for p in jpegs], args.repeats)
    rows["strokescan predict, JPEG slices (read+rotation+preprocess+network)"] = len(jpegs) / s
    x = torch.rand(n, 3, predictor.plan.slice_plan.size, predictor.plan.slice_plan.size)
    with torch.no_grad():
        s = median_seconds(lambda: predictor.model(x), args.repeats)
    rows["strokescan network alone (EfficientNet-Lite0, 224 px)"] = n / s
    if (DEFAULT_SEGMENTER_DIR / "segmenter.pt").is_file():
        with_masks = Predictor(segment=True)
        s = median_seconds(lambda: with_masks.analyse(load_scan(SAMPLES_DIR / "ge-hispeed-head-series.zip")),
                           args.repeats)
        rows["strokescan predict + segmentation, DICOM series (masks, areas, volumes)"] = n / s
        size = with_masks.segmenter.plan.slice_plan.size
        xu = torch.rand(n, 3, size, size)
        with torch.no_grad():
            s = median_seconds(lambda: with_masks.segmenter.model(xu), args.repeats)
        rows[f"segmentation network alone (U-Net, {size} px)"] = n / s
    seed = SeedCNN().eval()
    xs = torch.rand(n, 1, SEED_INPUT_SIZE, SEED_INPUT_SIZE)
    with torch.no_grad():
        s = median_seconds(lambda: seed(xs), args.repeats)
    rows["baseline: seed-style CNN forward (128 px)"] = n / s
    width = max(len(k) for k in rows)
    print(f"{'workload':<{width}}  slices/s   ({args.threads} threads, median of {args.repeats})")
    for k, v in rows.items():
        print(f"{k:<{width}}  {v:8.1f}")
    print(json.dumps({"slices_per_second": {k: round(v, 2) for k, v in rows.items()}, "threads": args.threads}))


if __name__ == "__main__":
    main()
