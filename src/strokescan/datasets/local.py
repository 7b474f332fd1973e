"""One adapter per folder of the shared data folder (``strokescan.config.data_root()``).

Each ``load_<name>(root=None)`` reads the folder's ``index.csv`` (or ``image_labels.csv``) and returns a
manifest (see :mod:`strokescan.datasets.manifest`). ``root`` is the data folder (default ``data_root()``),
not the dataset folder. Nothing here decodes images: counts come from the csv files the folder ships
(phe-sich boxes come from its Pascal-VOC XML files).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable

import pandas as pd

from strokescan.config import data_root
from strokescan.errors import DataError

from .manifest import MASK_MEANINGS, check_exist, finalize, pid, read_csv, require_dir, summarize

SUBTYPES = {  # CT-ICH csv column -> manifest column
    "Intraventricular": "intraventricular",
    "Intraparenchymal": "intraparenchymal",
    "Subarachnoid": "subarachnoid",
    "Epidural": "epidural",
    "Subdural": "subdural",
}
#: CT-ICH's JPEGs carry no spacing. Assumed: the raw 512 x 512 export at 0.5 mm per pixel, resized to 650 px,
#: and CT-ICH's stated 5 mm slices. Volumes in mL of these slices scale with this; Dice and ratios do not.
CTICH_JPEG_PIXEL_MM = 0.5 * 512 / 650
CTICH_SLICE_MM = 5.0


def _folder(root: Path | str | None, name: str) -> Path:
    base = Path(root) if root is not None else data_root()
    return require_dir(base / name, f"dataset {name}")


def _flag(series: pd.Series) -> pd.Series:
    return (pd.to_numeric(series, errors="coerce") > 0).astype(int)


def load_ctich_kaggle(root=None) -> pd.DataFrame:
    """ctich-kaggle: 2501 JPEG slices of CT-ICH patients 49-130.

    ``label`` = ``hemorrhage`` = ``slice_hemorrhage`` of image_labels.csv (NA for patient 49, whose slice order is
    unresolved); ``patient_label`` = CT-ICH patient-level hemorrhage; ``folder_label`` = the Kaggle folder
    (patient-level, wrong for 49-53). ``slice_index`` = inferred CT-ICH SliceNumber (1-based, NA for 49).
    """
    name = "ctich-kaggle"
    folder = _folder(root, name)
    df = read_csv(
        folder / "image_labels.csv",
        ["file", "folder_label", "patient_number", "inferred_slice_number", "slice_hemorrhage",
         "patient_hemorrhage_ctich", *SUBTYPES, "Fracture_Yes_No"],
        f"{name} labels",
    )
    out = pd.DataFrame({
        "image_path": [str(folder / f) for f in df["file"]],
        "source_patient": df["patient_number"].astype(int).astype(str),
        "slice_index": df["inferred_slice_number"],
        "label": df["slice_hemorrhage"],
        "hemorrhage": df["slice_hemorrhage"],
        "patient_label": df["patient_hemorrhage_ctich"],
        "fracture": df["Fracture_Yes_No"],
        "folder_label": df["folder_label"],
        "orientation_note": "upright",
    })
    for src, dst in SUBTYPES.items():
        out[dst] = df[src]
    out["patient"] = [pid(name, p) for p in out["source_patient"]]
    out.loc[out["label"].isna(), "label_note"] = "slice order unresolved: slice labels unknown"
    check_exist(out["image_path"], folder)
    return finalize(out, name)


def load_ctich_masks(root=None) -> pd.DataFrame:
    """ctich-masks: CT-ICH's own hand-drawn clot masks matched to the ctich-kaggle JPEGs (2299 slices, 318 with
    blood; see its PROVENANCE.md). One row per matched JPEG with its mask; unmatched masks are left out.

    ``patient`` is the ctich-kaggle id (the same people: one fold for both); ``label`` = ``hemorrhage`` = the
    mask holds blood; subtypes per slice from the raw table; ``slice_index`` = the raw export's slice number.
    """
    name = "ctich-masks"
    folder = _folder(root, name)
    images = _folder(root, "ctich-kaggle")
    df = read_csv(folder / "index.csv", ["mask_file", "patient_number", "raw_slice_number", "kaggle_file",
                                          "mask_pixels", *SUBTYPES], f"{name} index")
    df = df[df["kaggle_file"].notna() & (df["kaggle_file"].astype(str) != "")]
    blood = (pd.to_numeric(df["mask_pixels"]) > 0).astype(int)
    out = pd.DataFrame({
        "image_path": [str(images / f) for f in df["kaggle_file"]],
        "source_patient": df["patient_number"].astype(int).astype(str),
        "slice_index": df["raw_slice_number"],
        "label": blood,
        "hemorrhage": blood,
        "mask_path": [str(folder / f) for f in df["mask_file"]],
        "mask_meaning": MASK_MEANINGS["ctich-masks"],
        "orientation_note": "upright",
        "label_note": "clot mask drawn by CT-ICH's annotators; label = mask holds blood",
    })
    for src, dst in SUBTYPES.items():
        out[dst] = pd.to_numeric(df[src]).astype(int).to_numpy()
    out["patient"] = [pid("ctich-kaggle", p) for p in out["source_patient"]]
    check_exist(out["image_path"], images)
    check_exist(out["mask_path"], folder)
    return finalize(out, name)


def _voc_boxes(xml_path: Path) -> list[list[int]]:
    if not xml_path.is_file():
        return []
    try:
        tree = ET.parse(xml_path)
    except ET.ParseError:
        raise DataError(f"{xml_path}: malformed Pascal-VOC XML") from None
    boxes = []
    for obj in tree.getroot().iter("object"):
        bb = obj.find("bndbox")
        if bb is None:
            continue
        boxes.append([int(float(bb.findtext(k))) for k in ("xmin", "ymin", "xmax", "ymax")])
    return boxes


def load_phe_sich(root=None) -> pd.DataFrame:
    """phe-sich: 18 PHE-SICH-CT-IDS patients, 566 PNG slices.

    ``edema`` = edema mask non-empty (index.csv mask_pixels > 0); ``boxes`` from the XML (clot + edema);
    ``label`` = lesion-positive = edema mask non-empty OR at least one box (a derived label).
    ``slice_index`` = SS of ``PPPP_SS.png`` (0-based, as in the file name).
    """
    name = "phe-sich"
    folder = _folder(root, name)
    for sub in ("images", "masks", "annotations"):
        require_dir(folder / sub, f"{name} {sub}")
    df = read_csv(folder / "index.csv", ["patient", "slice_file", "mask_pixels", "n_boxes"], f"{name} index",
                  dtype={"patient": str})
    rows = []
    for r in df.itertuples(index=False):
        p = str(r.patient).zfill(4)
        stem = Path(r.slice_file).stem
        boxes = _voc_boxes(folder / "annotations" / p / f"{stem}.xml")
        if len(boxes) != int(r.n_boxes):
            raise DataError(f"{folder}: {stem}.xml has {len(boxes)} boxes, index.csv says {r.n_boxes}")
        edema = int(r.mask_pixels > 0)
        rows.append({
            "image_path": str(folder / "images" / p / r.slice_file),
            "mask_path": str(folder / "masks" / p / r.slice_file),
            "source_patient": p,
            "slice_index": int(stem.split("_")[-1]),
            "edema": edema,
            "boxes": json.dumps(boxes),
            "label": int(edema or len(boxes) > 0),
        })
    out = pd.DataFrame(rows)
    out["patient"] = [pid(name, p) for p in out["source_patient"]]
    out["mask_meaning"] = MASK_MEANINGS["phe-sich"]
    out["orientation_note"] = "rotated ~90°, face left"
    out["label_note"] = "derived: edema mask or box"
    check_exist(out["image_path"], folder)
    check_exist(out["mask_path"], folder)
    return finalize(out, name)


def _mini(root, name: str, required: list[str]) -> tuple[Path, pd.DataFrame]:
    folder = _folder(root, name)
    require_dir(folder / "images", f"{name} images")
    require_dir(folder / "masks", f"{name} masks")
    df = read_csv(folder / "index.csv", ["file", *required], f"{name} index")
    return folder, df


def _paths(folder: Path, files) -> dict:
    files = list(files)
    return {
        "image_path": [str(folder / "images" / f) for f in files],
        "mask_path": [str(folder / "masks" / f) for f in files],
    }


def load_bhsd_mini(root=None) -> pd.DataFrame:
    """bhsd-mini: 36 BHSD slices, all with hemorrhage. Patient = volume = first 3 digits of ``VVVSSS.png``
    (an undocumented guess per PROVENANCE.md); ``slice_index`` = the last 3 digits."""
    name = "bhsd-mini"
    cols = {"EDH_px": "epidural", "IPH_px": "intraparenchymal", "IVH_px": "intraventricular",
            "SAH_px": "subarachnoid", "SDH_px": "subdural"}
    folder, df = _mini(root, name, list(cols))
    stems = df["file"].map(lambda f: Path(f).stem)
    if not stems.str.fullmatch(r"\d{6}").all():
        raise DataError(f"{folder}: index.csv file names are not VVVSSS.png")
    out = pd.DataFrame(_paths(folder, df["file"]))
    out["source_patient"] = stems.str[:3]
    out["slice_index"] = stems.str[3:].astype(int)
    for src, dst in cols.items():
        out[dst] = _flag(df[src])
    out["hemorrhage"] = 1
    out["label"] = 1
    out["mask_meaning"] = MASK_MEANINGS["bhsd"]
    out["orientation_note"] = "upright"
    out["patient"] = [pid(name, p) for p in out["source_patient"]]
    check_exist(out["image_path"], folder)
    return finalize(out, name)


def load_aisd_mini(root=None) -> pd.DataFrame:
    """aisd-mini: 24 AISD slices, all with infarct. File names are the repackager's numbering and do not map to
    AISD patients, so each image is its own group (patient = file stem); ``slice_index`` NA."""
    name = "aisd-mini"
    folder, df = _mini(root, name, ["infarct_px"])
    out = pd.DataFrame(_paths(folder, df["file"]))
    out["source_patient"] = df["file"].map(lambda f: Path(f).stem)
    out["infarct"] = _flag(df["infarct_px"])
    out["ischemic"] = out["infarct"]
    out["label"] = 1
    out["mask_meaning"] = MASK_MEANINGS["aisd"]
    out["orientation_note"] = "upright"
    out["label_note"] = "no patient id: each image is its own group"
    out["patient"] = [pid(name, p) for p in out["source_patient"]]
    check_exist(out["image_path"], folder)
    return finalize(out, name)


def load_cpaisd_mini(root=None) -> pd.DataFrame:
    """cpaisd-mini: 24 CPAISD slices (all penumbra, some core). No study id kept: each image its own group.
    ``core`` (= ``infarct``) and ``penumbra`` from pixel counts; ``ischemic`` = 1."""
    name = "cpaisd-mini"
    folder, df = _mini(root, name, ["core_px", "penumbra_px"])
    out = pd.DataFrame(_paths(folder, df["file"]))
    out["source_patient"] = df["file"].map(lambda f: Path(f).stem)
    out["core"] = _flag(df["core_px"])
    out["infarct"] = out["core"]
    out["penumbra"] = _flag(df["penumbra_px"])
    out["ischemic"] = 1
    out["label"] = 1
    out["mask_meaning"] = MASK_MEANINGS["cpaisd"]
    out["orientation_note"] = "roughly upright, some head tilt"
    out["label_note"] = "no study id: each image is its own group"
    out["patient"] = [pid(name, p) for p in out["source_patient"]]
    check_exist(out["image_path"], folder)
    return finalize(out, name)


_RT_ISCH = re.compile(r"Ischemic_(\d+)_(\d+)\.png$")
_RT_HEM = re.compile(r"(Hemorrhagic_\d+)_(\d+)\.png$")


def load_realtime_mini(root=None) -> pd.DataFrame:
    """realtime-mini: 12 ischemic originals (patient = the 7-digit id in ``Ischemic_PPPPPPP_SSS.png``) and 12
    barrel-distorted copies of series ``Hemorrhagic_075`` (``augmented`` True; one group)."""
    name = "realtime-mini"
    folder, df = _mini(root, name, ["hemorrhagic_px", "ischemic_px", "augmented"])
    out = pd.DataFrame(_paths(folder, df["file"]))
    pats, idx = [], []
    for f in df["file"]:
        m = _RT_ISCH.search(f) or _RT_HEM.search(f)
        if not m:
            raise DataError(f"{folder}: unexpected file name in index.csv: {f}")
        pats.append(m.group(1))
        idx.append(int(m.group(2)))
    out["source_patient"] = pats
    out["slice_index"] = idx
    out["hemorrhage"] = _flag(df["hemorrhagic_px"])
    out["ischemic"] = _flag(df["ischemic_px"])
    out["augmented"] = df["augmented"].astype(int).astype(bool)
    out["label"] = 1
    out["mask_meaning"] = MASK_MEANINGS["realtime"]
    out.loc[out["augmented"], "label_note"] = "augmented (barrel distortion): never evaluate"
    out["patient"] = [pid(name, p) for p in out["source_patient"]]
    check_exist(out["image_path"], folder)
    return finalize(out, name)


CQ500_FINDINGS = {"IPH": "intraparenchymal", "IVH": "intraventricular", "SDH": "subdural", "EDH": "epidural",
                  "SAH": "subarachnoid"}


def cq500_scan_labels(reads_csv: Path) -> pd.DataFrame:
    """CQ500 reads.csv -> one row per scan name: ``ich_votes`` (0-3), ``hemorrhage`` = majority (>= 2 of 3),
    and the subtype columns by majority. Index: the scan name ('CQ500-CT-<n>')."""
    need = [f"R{r}:{f}" for r in (1, 2, 3) for f in ("ICH", *CQ500_FINDINGS)]
    reads = read_csv(Path(reads_csv), ["name", *need], "CQ500 reads.csv")
    out = pd.DataFrame(index=reads["name"].astype(str).str.strip())
    votes = sum(pd.to_numeric(reads[f"R{r}:ICH"], errors="coerce").fillna(0).astype(int) for r in (1, 2, 3))
    out["ich_votes"] = votes.to_numpy()
    out["hemorrhage"] = (votes >= 2).astype(int).to_numpy()
    for f, col in CQ500_FINDINGS.items():
        v = sum(pd.to_numeric(reads[f"R{r}:{f}"], errors="coerce").fillna(0).astype(int) for r in (1, 2, 3))
        out[col] = (v >= 2).astype(int).to_numpy()
    return out


#: the real scanner series the detector's report shows (folders of head-ct-dicom)
REAL_SERIES_FOLDERS = {"CQ500-CT-0": "cq500-ct-0_thin_jpeg-lossless", "CQ500-CT-1": "cq500-ct-1_single-slice",
                       "GE HiSpeed": "ge-hispeed-dual_gantry-tilt"}


def real_series(root=None) -> dict[str, str]:
    """Name -> folder of each real scanner series in head-ct-dicom."""
    folder = _folder(root, "head-ct-dicom")
    return {name: str(folder / sub) for name, sub in REAL_SERIES_FOLDERS.items()}


def load_head_ct_dicom(root=None) -> pd.DataFrame:
    """head-ct-dicom: one row per series folder (image_path = the folder, or the file when the folder holds a
    single DICOM). CQ500 rows get scan-level labels from labels/cq500_reads.csv (``label`` = ``hemorrhage`` =
    majority ICH vote, ``ich_votes`` = readers marking ICH); GE has no label (NA); the MR folder (one image in 5
    transfer syntaxes) is one row with modality MR, label NA. Patient = the DICOM PatientID for CT; the MR row uses
    the folder name (its PatientID is one of the identifying tags that must not reach outputs)."""
    name = "head-ct-dicom"
    folder = _folder(root, name)
    idx = read_csv(folder / "index.csv", ["file", "folder", "modality", "patient_id", "series_uid",
                                          "transfer_syntax"], f"{name} index", dtype=str)
    labels = cq500_scan_labels(folder / "labels" / "cq500_reads.csv")
    check_exist([str(folder / f) for f in idx["file"]], folder)
    rows = []
    for fold, g in idx.groupby("folder", sort=True):
        modality = g["modality"].iloc[0]
        raw = fold if modality == "MR" else str(g["patient_id"].iloc[0])
        row = {
            "image_path": str(folder / (g["file"].iloc[0] if len(g) == 1 else fold)),
            "source_patient": raw,
            "modality": modality,
            "n_files": len(g),
            "label_note": "series-level row",
        }
        if raw in labels.index:
            lab = labels.loc[raw]
            row.update({k: int(lab[k]) for k in labels.columns})
            row["label"] = row["hemorrhage"]
            row["label_note"] = f"scan-level: {row['ich_votes']}/3 readers ICH (majority)"
            if row["ich_votes"] in (1, 2):
                row["label_note"] += "; readers disagree"
        rows.append(row)
    out = pd.DataFrame(rows)
    out["patient"] = [pid(name, p) for p in out["source_patient"]]
    return finalize(out, name)


LOCAL_ADAPTERS: dict[str, Callable[..., pd.DataFrame]] = {
    "ctich-kaggle": load_ctich_kaggle,
    "ctich-masks": load_ctich_masks,
    "phe-sich": load_phe_sich,
    "bhsd-mini": load_bhsd_mini,
    "aisd-mini": load_aisd_mini,
    "cpaisd-mini": load_cpaisd_mini,
    "realtime-mini": load_realtime_mini,
    "head-ct-dicom": load_head_ct_dicom,
}


def load_manifest(name: str, root=None) -> pd.DataFrame:
    """Manifest of one shared-data folder by name (see :data:`LOCAL_ADAPTERS`)."""
    try:
        fn = LOCAL_ADAPTERS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(LOCAL_ADAPTERS)}") from None
    return fn(root)


def load_all(root=None) -> pd.DataFrame:
    """All local manifests concatenated."""
    return pd.concat([fn(root) for fn in LOCAL_ADAPTERS.values()], ignore_index=True)


def counts_table(root=None) -> pd.DataFrame:
    """One row per local dataset: patients, rows, positives per label column (the table in docs/datasets.md)."""
    recs = []
    for name, fn in LOCAL_ADAPTERS.items():
        df = fn(root)
        s = summarize(df)
        rec: dict = {"dataset": name, "patients": s["patients"], "rows": s["rows"], "label=1": s.get("label", 0),
               "label=NA": s["label_na"], "pos_patients": s["positive_patients"], "augmented": s["augmented"]}
        if name == "head-ct-dicom":
            rec["files"] = int(df["n_files"].sum())
        if name == "phe-sich":
            rec["box_slices"] = int((df["boxes"] != "[]").sum())
        for col in ("hemorrhage", "intraventricular", "intraparenchymal", "subarachnoid", "epidural", "subdural",
                    "ischemic", "infarct", "core", "penumbra", "edema", "fracture"):
            if col in s:
                rec[col] = s[col]
        recs.append(rec)
    return pd.DataFrame(recs).set_index("dataset")
