"""Batch throughput of ``strokescan predict``: the embedded (serial) engine beside ``--workers N`` in the same run.

    .venv/bin/python benchmarks/batch_throughput.py [--copies 3] [--workers 2] [--threads 1]

Analyses the bundled samples (four PNG slices and the 28-slice GE series) ``--copies`` times over, with the
bundled models and JSON output, once per engine, each as a whole ``strokescan predict`` process (so the
figures include start-up: importing, loading the models, and for ``--workers`` starting the local cluster).
Prints scans/s and slices/s for each side by side with n. No limits: compare figures within one run (these
machines are noisy, and on 2 shared cores the workers compete with everything else).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from strokescan.config import SAMPLES_DIR

SAMPLE_SUFFIXES = (".png", ".zip")


def copy_samples(folder: Path, copies: int) -> list[Path]:
    """``copies`` sub-folders of ``folder``, each holding the bundled sample scans."""
    inputs = []
    for k in range(copies):
        sub = folder / f"copy{k}"
        sub.mkdir()
        for sample in sorted(p for p in SAMPLES_DIR.iterdir() if p.suffix in SAMPLE_SUFFIXES):
            inputs.append(Path(shutil.copy(sample, sub / sample.name)))
    return inputs


def timed_predict(inputs: list[Path], engine: list[str], threads: int) -> tuple[float, list[dict]]:
    """Wall-clock seconds of one ``strokescan predict --json`` process, and its JSON lines."""
    env = {**os.environ, "STROKESCAN_TORCH_THREADS": str(threads)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "strokescan.app.cli", "predict", *map(str, inputs), "--json",
                           *engine], check=True, capture_output=True, text=True, env=env)
    return time.perf_counter() - start, [json.loads(line) for line in proc.stdout.splitlines()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=3, help="how many times over the bundled samples are analysed")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process ($STROKESCAN_TORCH_THREADS)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="strokescan-batch-") as tmp:
        inputs = copy_samples(Path(tmp), args.copies)
        rows = []
        for name, engine in (("embedded (serial)", []), (f"--workers {args.workers}", ["--workers", str(args.workers)])):
            seconds, lines = timed_predict(inputs, engine, args.threads)
            n_slices = sum(1 for line in lines if not line.get("scan"))
            rows.append((name, len(inputs), n_slices, seconds))
    print(f"{'engine':<20} {'n scans':>8} {'slices':>7} {'seconds':>8} {'scans/s':>8} {'slices/s':>9}  "
          f"({args.threads} torch thread(s) per process, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')})")
    for name, n, n_slices, seconds in rows:
        print(f"{name:<20} {n:8d} {n_slices:7d} {seconds:8.2f} {n / seconds:8.2f} {n_slices / seconds:9.2f}")
    print(json.dumps({"threads": args.threads, "copies": args.copies, "figures": [
        {"engine": name, "n_scans": n, "n_slices": k, "seconds": round(s, 3), "scans_per_s": round(n / s, 3)}
        for name, n, k, s in rows]}))


if __name__ == "__main__":
    main()
