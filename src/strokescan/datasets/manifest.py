"""The manifest: one row per image (slice, or series/volume where documented), the same columns for every dataset.

A manifest is a :class:`pandas.DataFrame` with the columns of :data:`COLUMNS` (always present, in that order)
followed by the label columns of :data:`LABEL_COLUMNS` and :data:`EXTRA_COLUMNS` that apply (absent columns are
added and filled with NA by :func:`finalize`, so every manifest has every column).

Patient ids
    ``patient`` is always ``"<source>:<id as the dataset writes it>"`` (e.g. ``"ctich-kaggle:49"``,
    ``"phe-sich:0004"``) so ids are unique across datasets; ``source_patient`` keeps the raw id. Where a dataset
    has no patient id the grouping unit is documented by its adapter (a volume, or each image alone). A set
    holding the same people as another takes its ids (ctich-masks and ctich-nifti use ctich-kaggle's), so a
    person lands in one fold.

Labels
    Label columns are nullable integers (``Int64``): 1 present, 0 absent, NA unknown. ``label`` is the
    slice-level "lesion present" label each adapter defines (hemorrhage for ctich-kaggle, edema-or-box for
    phe-sich, 1 for every lesion-only mini set, the 3-reader majority ICH vote per scan for CQ500).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from strokescan.errors import DataError

#: Core columns, in order, with their meaning.
COLUMNS: dict[str, str] = {
    "source": "dataset name, e.g. 'ctich-kaggle'",
    "image_path": "absolute path (str) of the image file; a series folder or volume file for series/volume rows",
    "patient": "'<source>:<raw id>', the grouping unit for splits (patient, or volume where no patient id exists)",
    "source_patient": "the raw patient/volume id as the dataset writes it",
    "slice_index": "Int64 slice position within the patient's scan (0- or 1-based as documented per source) or NA",
    "label": "Int64 slice-level lesion present 1/0, NA when unknown (see each adapter for the rule)",
    "mask_path": "absolute path (str) of the mask file, or NA",
    "mask_meaning": "how to read the mask (see MASK_MEANINGS), NA when there is no mask",
    "augmented": "bool: True for synthetic/augmented copies (never evaluate on them)",
    "modality": "'CT' or 'MR'",
}

#: Finding columns (Int64, 1/0/NA), filled where a dataset gives them.
LABEL_COLUMNS: tuple[str, ...] = (
    "hemorrhage",
    "intraventricular",
    "intraparenchymal",
    "subarachnoid",
    "epidural",
    "subdural",
    "ischemic",
    "infarct",
    "core",
    "penumbra",
    "edema",
    "fracture",
    "patient_label",  # patient/scan-level label given by the source (e.g. CT-ICH patient has hemorrhage)
    "ich_votes",  # CQ500: number of the 3 readers who marked ICH
)

#: Other optional columns (object dtype, NA when not applicable).
EXTRA_COLUMNS: tuple[str, ...] = (
    "folder_label",  # ctich-kaggle: the original Kaggle folder 'Normal'/'Stroke' (patient-level)
    "boxes",  # JSON list of [xmin, ymin, xmax, ymax] (phe-sich Pascal-VOC), '[]' when none
    "orientation_note",
    "label_note",
    "n_files",  # series rows: number of DICOM files
    "frame",  # Int64 index of the slice inside a multi-slice file (a volume expanded per slice), NA otherwise
)

MASK_MEANINGS: dict[str, str] = {
    "phe-sich": "phe-sich: 255=perihematomal edema (clot not masked)",
    "bhsd": "bhsd: colour-coded EDH red, IPH blue, IVH yellow, SAH cyan, SDH green",
    "bhsd-nifti": "bhsd-nifti: 1=EDH 2=IPH 3=IVH 4=SAH 5=SDH, 0=background",
    "aisd": "aisd: >127 infarct",
    "cpaisd": "cpaisd: red core, green penumbra",
    "realtime": "realtime: red hemorrhagic, green ischemic (threshold, augmented edges anti-aliased)",
    "ctich-nifti": "ctich-nifti: >0 hemorrhage (any subtype)",
    "ctich-masks": "ctich-masks: >127 hemorrhage, in the raw export's frame: numpy.rot90(k=1), then resized (nearest) to the image",
    "teknofest": "teknofest: >0 lesion (ischemia or hemorrhage per class folder)",
}

ORDER: list[str] = list(COLUMNS) + list(LABEL_COLUMNS) + list(EXTRA_COLUMNS)


def pid(source: str, raw: object) -> str:
    """The manifest patient id for ``raw`` in ``source``."""
    return f"{source}:{raw}"


def require_dir(path: Path, what: str) -> Path:
    if not Path(path).is_dir():
        raise DataError(f"{path}: folder missing ({what})")
    return Path(path)


def require_file(path: Path, what: str) -> Path:
    if not Path(path).is_file():
        raise DataError(f"{path}: file missing ({what})")
    return Path(path)


def read_csv(path: Path, required: list[str], what: str, **kw) -> pd.DataFrame:
    """Read a csv and check it has the ``required`` columns, else :class:`DataError`."""
    require_file(path, what)
    try:
        df = pd.read_csv(path, encoding="utf-8-sig", **kw)
    except (ValueError, pd.errors.ParserError) as exc:  # empty or unparsable
        raise DataError(f"{path}: unreadable csv ({exc.__class__.__name__})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    return df


def check_exist(paths, folder: Path) -> None:
    """Raise :class:`DataError` naming the first listed file that does not exist."""
    for p in paths:
        if isinstance(p, str) and not Path(p).exists():
            raise DataError(f"{folder}: listed file missing: {Path(p).name}")


def finalize(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Add missing columns, set dtypes and column order; returns a new frame (index 0..n-1)."""
    df = df.copy()
    df["source"] = source
    for col in ORDER:
        if col not in df.columns:
            df[col] = pd.NA
    df["image_path"] = df["image_path"].astype(str)
    df["patient"] = df["patient"].astype(str)
    df["source_patient"] = df["source_patient"].astype(str)
    for col in ("slice_index", "label", *LABEL_COLUMNS):
        df[col] = pd.array(pd.to_numeric(df[col], errors="coerce"), dtype="Int64")
    for col in ("n_files", "frame"):
        df[col] = pd.array(pd.to_numeric(df[col], errors="coerce"), dtype="Int64")
    df["augmented"] = df["augmented"].fillna(False).astype(bool)
    df["modality"] = df["modality"].fillna("CT")
    for col in ("mask_path", "mask_meaning", "folder_label", "boxes", "orientation_note", "label_note"):
        df[col] = df[col].astype(object).where(df[col].notna(), None)
    extra = [c for c in df.columns if c not in ORDER]
    return df[ORDER + extra].reset_index(drop=True)


def summarize(df: pd.DataFrame) -> dict:
    """Counts of one manifest: rows, patients, positives per label column (NA not counted)."""
    out: dict = {
        "rows": int(len(df)),
        "patients": int(df["patient"].nunique()),
        "augmented": int(df["augmented"].sum()),
        "label_na": int(df["label"].isna().sum()),
    }
    for col in ("label", *LABEL_COLUMNS):
        if col in ("ich_votes", "patient_label"):
            continue
        s = df[col]
        if s.notna().any():
            out[col] = int((s == 1).sum())
    pos = df.loc[df["label"] == 1, "patient"]
    out["positive_patients"] = int(pos.nunique())
    return out


def boxes_json(boxes: list[list[int]]) -> str:
    return json.dumps(boxes)
