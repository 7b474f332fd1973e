"""Print the per-dataset manifest counts and the ctich-kaggle fold counts (docs/datasets.md).

Usage: .venv/bin/python scripts/dataset_counts.py   (data folder: $STROKESCAN_DATA or ../shared/data)
"""

from __future__ import annotations

import pandas as pd

from strokescan.datasets import counts_table, ctich_kaggle_folds


def main() -> None:
    table = counts_table()
    table = table.apply(lambda c: c.map(lambda v: "-" if pd.isna(v) else str(int(v))))
    with pd.option_context("display.width", 250, "display.max_columns", 50):
        print(table.to_string())
        print()
        folds = ctich_kaggle_folds()
        print(f"ctich-kaggle folds (seed {folds['seed']}, {folds['n_folds']} folds):")
        print(pd.DataFrame(folds["counts"]).T.rename_axis("fold").to_string())


if __name__ == "__main__":
    main()
