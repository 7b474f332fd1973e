"""Paired comparison of two segmentation runs on the same held-out slices (an ablation's figure).

    .venv/bin/python studies/compare_segmentation_runs.py runs/seg_abl20_full runs/seg_abl20_nopre \\
        --names ImageNet random

Reads each run's ``fold<k>/per_slice.csv`` (U-Net rows), pairs the slices that contain each class, and prints
run A minus run B Dice per dataset and class with a 95 % patient-bootstrap interval (an interval that excludes
0 = a difference these slices can show). Both runs must hold out the same folds (their ``folds.json`` equal).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from strokescan.errors import DataError
from strokescan.evaluation.segmentation import compare_methods, paired_markdown


def unet_rows(run: Path, name: str) -> pd.DataFrame:
    """The U-Net per-slice rows of every held-out fold of ``run``, method renamed to ``name``."""
    tables = sorted(run.glob("fold*/per_slice.csv"))
    if not tables:
        raise DataError(f"{run}: no fold*/per_slice.csv (not a finished segmentation run)")
    t = pd.concat([pd.read_csv(p) for p in tables], ignore_index=True)
    return t[t["method"] == "unet"].assign(method=name)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_a", type=Path)
    ap.add_argument("run_b", type=Path)
    ap.add_argument("--names", nargs=2, default=("A", "B"), metavar=("NAME_A", "NAME_B"))
    ap.add_argument("--bootstrap", type=int, default=1000)
    a = ap.parse_args(argv)
    try:
        folds = [json.loads((r / "folds.json").read_text())["folds"] if (r / "folds.json").is_file() else None
                 for r in (a.run_a, a.run_b)]
        if folds[0] is None or folds[0] != folds[1]:
            raise DataError(f"{a.run_a} and {a.run_b} do not share one folds.json: their held-out slices differ")
        table = pd.concat([unet_rows(a.run_a, a.names[0]), unet_rows(a.run_b, a.names[1])], ignore_index=True)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    paired = compare_methods(table, method=a.names[0], baseline=a.names[1], n_boot=a.bootstrap)
    print(paired_markdown(paired, a.names[0], a.names[1]) if len(paired) else "no slice is paired")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
