"""Seeded, patient-grouped, label-stratified K-fold splits, written once to JSON and reused.

Rule: every patient (manifest ``patient``) goes to exactly one fold; folds come from sklearn's
``StratifiedGroupKFold(shuffle=True, random_state=seed)`` over the manifest rows, grouped by patient and
stratified on the patient-level label "the patient has at least one slice with ``label_col`` == 1". A patient
whose slice labels are all unknown (NA) is stratified by ``patient_label`` when the manifest gives one (ctich-kaggle
patient 49: CT-ICH lists hemorrhage, so it counts as positive), else as negative.

The JSON file is the record: once written, :func:`load_or_create_folds` reads it and never recomputes
(a newer scikit-learn could shuffle differently), and checks its patients against the manifest.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from strokescan.config import RESOURCES_DIR, SEED
from strokescan.errors import DataError

from .local import load_ctich_kaggle

SPLITS_DIR = RESOURCES_DIR / "splits"
CTICH_KAGGLE_FOLDS = SPLITS_DIR / "ctich_kaggle_5fold.json"

LABEL_RULE = (
    "patient positive = any slice with {label_col} == 1; if all its slice labels are NA, patient_label "
    "(source's patient-level label) when given, else negative; groups = patient; "
    "sklearn StratifiedGroupKFold(shuffle=True, random_state=seed)"
)


def patient_strata(manifest: pd.DataFrame, label_col: str = "label") -> pd.Series:
    """Per patient 1/0 stratification label (index = patient id, sorted)."""
    if label_col not in manifest.columns or "patient" not in manifest.columns:
        raise DataError(f"manifest lacks 'patient' or {label_col!r} column")
    lab = pd.to_numeric(manifest[label_col], errors="coerce")
    g = lab.groupby(manifest["patient"])
    strat = g.max().fillna(-1)
    if "patient_label" in manifest.columns:
        pl = pd.to_numeric(manifest["patient_label"], errors="coerce").groupby(manifest["patient"]).max()
        unknown = strat < 0
        strat[unknown] = pl[unknown].fillna(0)
    strat[strat < 0] = 0
    return (strat > 0).astype(int).sort_index()


def _fold_counts(manifest: pd.DataFrame, patients: list[str], label_col: str, strata: pd.Series) -> dict:
    rows = manifest[manifest["patient"].isin(patients)]
    lab = pd.to_numeric(rows[label_col], errors="coerce")
    return {
        "patients": len(patients),
        "positive_patients": int(strata.loc[patients].sum()),
        "slices": int(len(rows)),
        "positive_slices": int((lab == 1).sum()),
        "unknown_slices": int(lab.isna().sum()),
    }


def make_patient_folds(manifest: pd.DataFrame, n_folds: int = 5, seed: int = SEED, label_col: str = "label",
                       dataset: str | None = None) -> dict:
    """Compute folds (see module doc). Returns the JSON-ready dict."""
    from sklearn import __version__ as sk_version
    from sklearn.model_selection import StratifiedGroupKFold

    if manifest.empty:
        raise DataError("cannot split an empty manifest")
    strata = patient_strata(manifest, label_col)
    if strata.size < n_folds:
        raise DataError(f"{strata.size} patients cannot fill {n_folds} folds")
    if dataset is None:
        dataset = ",".join(sorted(manifest["source"].astype(str).unique())) if "source" in manifest else ""
    m = manifest.reset_index(drop=True)
    y = m["patient"].map(strata).to_numpy()
    cv = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds: dict[str, list[str]] = {}
    for k, (_, test) in enumerate(cv.split(m, y, groups=m["patient"].to_numpy())):
        folds[str(k)] = sorted(m.loc[test, "patient"].unique().tolist())
    return {
        "dataset": dataset,
        "n_folds": n_folds,
        "seed": seed,
        "label_col": label_col,
        "label_rule": LABEL_RULE.format(label_col=label_col),
        "sklearn_version": sk_version,
        "folds": folds,
        "counts": {k: _fold_counts(m, v, label_col, strata) for k, v in folds.items()},
    }


def write_folds(folds: dict, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(folds, indent=1) + "\n", encoding="utf-8")
    return path


def read_folds(path: Path | str) -> dict:
    """Read and structurally check a folds JSON file (DataError if missing or malformed)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: folds file missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(f"{path}: folds file is not valid JSON") from None
    if not isinstance(data, dict) or not {"n_folds", "seed", "folds"} <= set(data):
        raise DataError(f"{path}: folds file lacks n_folds/seed/folds")
    folds = data["folds"]
    if not isinstance(folds, dict) or len(folds) != data["n_folds"]:
        raise DataError(f"{path}: folds file has {len(folds)} folds, n_folds says {data['n_folds']}")
    seen: dict[str, str] = {}
    for k, pats in folds.items():
        for p in pats:
            if p in seen:
                raise DataError(f"{path}: patient {p} in folds {seen[p]} and {k}")
            seen[p] = k
    return data


def fold_of(folds: dict) -> dict[str, int]:
    """patient -> fold number."""
    return {p: int(k) for k, pats in folds["folds"].items() for p in pats}


def check_folds(folds: dict, manifest: pd.DataFrame, where: str = "folds") -> None:
    """DataError unless every manifest patient is in exactly one fold and no fold names an unknown patient."""
    mapping = fold_of(folds)
    n_listed = sum(len(v) for v in folds["folds"].values())
    if n_listed != len(mapping):
        raise DataError(f"{where}: a patient is listed in more than one fold")
    have = set(manifest["patient"].astype(str))
    listed = set(mapping)
    if have != listed:
        missing, extra = sorted(have - listed), sorted(listed - have)
        raise DataError(f"{where}: patients do not match the manifest "
                        f"({len(missing)} not in any fold e.g. {missing[:3]}, {len(extra)} unknown e.g. {extra[:3]})")


def load_or_create_folds(manifest: pd.DataFrame, path: Path | str, n_folds: int = 5, seed: int = SEED,
                         label_col: str = "label", dataset: str | None = None) -> dict:
    """Read ``path`` if it exists (never recompute) and check it against ``manifest``; else make, write, return."""
    path = Path(path)
    if path.exists():
        folds = read_folds(path)
        check_folds(folds, manifest, where=str(path))
        return folds
    folds = make_patient_folds(manifest, n_folds=n_folds, seed=seed, label_col=label_col, dataset=dataset)
    write_folds(folds, path)
    return folds


def assign_folds(manifest: pd.DataFrame, folds: dict) -> pd.DataFrame:
    """Copy of ``manifest`` with an int ``fold`` column (DataError if a patient has no fold)."""
    check_folds(folds, manifest)
    out = manifest.copy()
    out["fold"] = out["patient"].map(fold_of(folds)).astype(int)
    return out


def ctich_kaggle_folds(root=None) -> dict:
    """The committed 5-fold split of ctich-kaggle, checked against the current manifest."""
    return load_or_create_folds(load_ctich_kaggle(root), CTICH_KAGGLE_FOLDS, dataset="ctich-kaggle")
