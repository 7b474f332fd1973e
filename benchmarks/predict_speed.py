"""Speed of the inference path on this machine, each figure beside its baseline measured in the same run.

    .venv/bin/python benchmarks/predict_speed.py [--repeats 5] [--threads 2]

On the bundled 28-slice GE DICOM series (the issue's limits in brackets):
- import: ``import strokescan.inference`` in a new process beside ``import torch`` alone   [at most 1 s more]
- loading the bundled models (classifier + orientation net; + segmenter)                  [at most 1 s]
- warm ``Predictor.analyse`` in slices/s, without and with segmentation, beside the bare
  network forward passes on the same 28 prepared slices                                   [>= 25 and >= 10 /s]
- a whole ``strokescan predict SERIES --json`` process beside a process that only imports torch  [at most 4 s]
- the seed-style CNN's forward pass on 28 slices, the seed project's own speed
Medians of --repeats runs. These machines are noisy: compare figures within one run, not across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

from strokescan.config import SAMPLES_DIR
from strokescan.inference import Predictor
from strokescan.io import load_scan
from strokescan.models.seed_cnn import SEED_INPUT_SIZE, SeedCNN
from timing import median_seconds  # benchmarks/timing.py

SERIES = SAMPLES_DIR / "ge-hispeed-head-series.zip"


def process_seconds(argv: list[str], repeats: int, threads: int) -> float:
    env = {**os.environ, "STROKESCAN_TORCH_THREADS": str(threads)}
    return median_seconds(lambda: subprocess.run(argv, check=True, capture_output=True, env=env), repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    py, r = sys.executable, args.repeats
    rows: list[tuple[str, str, float, str]] = []

    torch_import = process_seconds([py, "-c", "import torch"], r, args.threads)
    inference_import = process_seconds([py, "-c", "import strokescan.inference"], r, args.threads)
    rows.append(("import strokescan.inference (new process)", "s", inference_import, "<= torch + 1.0"))
    rows.append(("  baseline: import torch (new process)", "s", torch_import, ""))

    rows.append(("load bundled classifier + orientation net", "s", median_seconds(Predictor, r), "<= 1.0"))
    rows.append(("load bundled classifier + orientation net + segmenter", "s",
                 median_seconds(lambda: Predictor(segment=True), r), "<= 1.0"))

    scan = load_scan(SERIES)
    n = scan.n_slices
    for segment in (False, True):
        predictor = Predictor(segment=segment)
        predictor.analyse(scan)  # warm
        s = median_seconds(lambda: predictor.analyse(scan), r)
        rows.append((f"warm analyse, {'with' if segment else 'without'} segmentation", "slices/s", n / s,
                     ">= 10" if segment else ">= 25"))
        prepared = predictor.prepare(scan)
        rows.append(("  prepare only (rotation estimate + preprocessing)", "slices/s",
                     n / median_seconds(lambda: predictor.prepare(scan), r), ""))
        rows.append(("  baseline: classifier forward alone", "slices/s",
                     n / median_seconds(lambda: predictor.logits(prepared), r), ""))
        if segment:
            rows.append(("  baseline: U-Net forward alone", "slices/s",
                         n / median_seconds(lambda: predictor.segmenter.probabilities(prepared.for_segmenter), r), ""))

    whole = process_seconds([py, "-m", "strokescan.app.cli", "predict", str(SERIES), "--json"], r, args.threads)
    rows.append(("whole process: strokescan predict GE series --json", "s", whole, "<= 4.0"))
    rows.append(("  baseline: a process that imports torch", "s", torch_import, ""))

    seed = SeedCNN().eval()
    xs = torch.rand(n, 1, SEED_INPUT_SIZE, SEED_INPUT_SIZE)
    with torch.inference_mode():
        rows.append(("seed-style CNN forward (128 px, the seed project's network)", "slices/s",
                     n / median_seconds(lambda: seed(xs), r), ""))

    width = max(len(k) for k, *_ in rows)
    print(f"{'workload (28-slice GE series)':<{width}}  {'value':>8}  unit       limit    "
          f"({args.threads} threads, median of {r}, {time.strftime('%Y-%m-%d')})")
    for name, unit, value, limit in rows:
        print(f"{name:<{width}}  {value:8.2f}  {unit:<9}  {limit}")
    print(json.dumps({"threads": args.threads, "repeats": r,
                      "figures": [{"workload": k.strip(), "unit": u, "value": round(v, 3), "limit": lim}
                                  for k, u, v, lim in rows]}))


if __name__ == "__main__":
    main()
