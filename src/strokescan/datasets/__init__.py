"""Dataset manifests (one row per image, one schema for every set), patient-grouped folds, public-set loaders.

    from strokescan.datasets import load_manifest, ctich_kaggle_folds
    df = load_manifest("ctich-kaggle")

``python scripts/dataset_counts.py`` prints the counts table of every local folder (see docs/datasets.md).
"""

from .local import LOCAL_ADAPTERS, counts_table, load_all, load_manifest
from .manifest import COLUMNS, EXTRA_COLUMNS, LABEL_COLUMNS, MASK_MEANINGS, summarize
from .public import PUBLIC_LOADERS
from .splits import (
    CTICH_KAGGLE_FOLDS,
    assign_folds,
    check_folds,
    ctich_kaggle_folds,
    load_or_create_folds,
    make_patient_folds,
    read_folds,
    write_folds,
)

__all__ = [
    "COLUMNS", "LABEL_COLUMNS", "EXTRA_COLUMNS", "MASK_MEANINGS", "LOCAL_ADAPTERS", "PUBLIC_LOADERS",
    "CTICH_KAGGLE_FOLDS", "counts_table", "load_manifest", "load_all", "summarize", "make_patient_folds", "write_folds",
    "read_folds", "check_folds", "load_or_create_folds", "assign_folds", "ctich_kaggle_folds",
]
