"""Loaders for the full public data sets that are not in the shared data folder.

Each ``load_<name>(root)`` takes the folder where the set was unpacked and returns a manifest with the schema of
:mod:`strokescan.datasets.manifest`. Layouts are as documented by each set; where the documentation is thin the
assumption is stated in the docstring (and in docs/datasets.md). Volume sets with only volume-level masks give one
row per volume (``slice_index`` NA); sets with per-slice labels give one row per slice.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from strokescan.errors import DataError

from .local import SUBTYPES, cq500_scan_labels
from .manifest import MASK_MEANINGS, finalize, pid, read_csv, require_dir, require_file

NIFTI = (".nii.gz", ".nii")


def _root(root) -> Path:
    return require_dir(Path(root), "dataset root")


def _nifti_stem(p: Path) -> str:
    n = p.name
    for ext in NIFTI:
        if n.endswith(ext):
            return n[: -len(ext)]
    return p.stem


def _niftis(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith(NIFTI))


def _first_dir(root: Path, names: tuple[str, ...], what: str) -> Path:
    for n in names:
        if (root / n).is_dir():
            return root / n
    raise DataError(f"{root}: folder missing ({what}: one of {', '.join(names)})")


# --------------------------------------------------------------------------------------------- CT-ICH NIfTI
def load_ctich_nifti(root) -> pd.DataFrame:
    """CT-ICH on PhysioNet v1.3.1: ``ct_scans/NNN.nii``, ``masks/NNN.nii``, ``hemorrhage_diagnosis_raw_ct.csv``
    (PatientNumber, SliceNumber, the 5 subtypes, No_Hemorrhage, Fracture_Yes_No).

    One row per slice (labels are per slice): ``image_path`` = the volume, ``slice_index`` = SliceNumber − 1,
    assumed to be the index along the volume's last axis (not verified on the real files). Patient ids are the
    CT-ICH numbers (49–130), the same people as ctich-kaggle: never train on one and test on the other.
    """
    source = "ctich-nifti"
    root = _root(root)
    scans = require_dir(root / "ct_scans", "CT-ICH ct_scans")
    masks = root / "masks"
    csv = read_csv(root / "hemorrhage_diagnosis_raw_ct.csv",
                   ["PatientNumber", "SliceNumber", *SUBTYPES, "No_Hemorrhage"], "CT-ICH slice labels")
    vols = {int(_nifti_stem(p)): p for p in _niftis(scans) if _nifti_stem(p).isdigit()}
    if not vols:
        raise DataError(f"{scans}: no NNN.nii volumes")
    rows = []
    for r in csv.itertuples(index=False):
        p = int(r.PatientNumber)
        if p not in vols:
            raise DataError(f"{scans}: volume for patient {p:03d} missing")
        vol = vols[p]
        mask = masks / vol.name
        row = {
            "image_path": str(vol),
            "mask_path": str(mask) if mask.is_file() else None,
            "source_patient": f"{p:03d}",
            "slice_index": int(r.SliceNumber) - 1,
            "hemorrhage": 1 - int(r.No_Hemorrhage),
            "fracture": getattr(r, "Fracture_Yes_No", None),
        }
        for src, dst in SUBTYPES.items():
            row[dst] = getattr(r, src)
        rows.append(row)
    out = pd.DataFrame(rows)
    out["label"] = out["hemorrhage"]
    out["patient"] = [pid(source, p) for p in out["source_patient"]]
    out.loc[out["mask_path"].notna(), "mask_meaning"] = MASK_MEANINGS["ctich-nifti"]
    out["label_note"] = "image_path is a volume; slice_index = SliceNumber-1 along the last axis"
    return finalize(out, source)


# --------------------------------------------------------------------------------------------- BHSD
BHSD_CLASSES = {1: "epidural", 2: "intraparenchymal", 3: "intraventricular", 4: "subarachnoid", 5: "subdural"}


def load_bhsd(root, read_masks: bool = True) -> pd.DataFrame:
    """BHSD ``label_192`` (HuggingFace WuBiao/BHSD): ``images/<id>.nii.gz`` and ``ground truths/<id>.nii.gz``
    (also accepted: ``labels/`` or ``masks/``), mask values 1 EDH, 2 IPH, 3 IVH, 4 SAH, 5 SDH.

    One row per volume (``slice_index`` NA, patient = volume id: BHSD gives no patient id). With ``read_masks``
    the subtype columns say which classes occur in the volume and ``label`` = any class; without, they are NA.
    Assumed: image and mask share the file name; the class numbering follows BHSD's dataset.json order.
    """
    source = "bhsd"
    root = _root(root)
    img_dir = _first_dir(root, ("images", "imagesTr"), "BHSD images")
    mask_dir = _first_dir(root, ("ground truths", "ground_truths", "labels", "labelsTr", "masks"), "BHSD masks")
    rows = []
    for img in _niftis(img_dir):
        stem = _nifti_stem(img)
        cand = [mask_dir / f"{stem}{e}" for e in NIFTI]
        mask = next((c for c in cand if c.is_file()), None)
        row = {"image_path": str(img), "source_patient": stem,
               "mask_path": str(mask) if mask else None}
        if read_masks and mask is not None:
            import nibabel as nib

            present = set(np.unique(np.asarray(nib.load(str(mask)).dataobj)).astype(int).tolist())
            for v, col in BHSD_CLASSES.items():
                row[col] = int(v in present)
            row["label"] = row["hemorrhage"] = int(bool(present - {0}))
        rows.append(row)
    if not rows:
        raise DataError(f"{img_dir}: no NIfTI volumes (*.nii.gz; label_192.zip's files may lack the suffix: "
                        "BHSD's README says to add .nii.gz to each name)")
    out = pd.DataFrame(rows)
    out["patient"] = [pid(source, p) for p in out["source_patient"]]
    out.loc[out["mask_path"].notna(), "mask_meaning"] = MASK_MEANINGS["bhsd-nifti"]
    out["label_note"] = "volume-level row"
    return finalize(out, source)


# --------------------------------------------------------------------------------------------- AISD
def _mask_positive(path: Path, threshold: int = 127) -> int:
    from PIL import Image

    with Image.open(path) as im:
        return int(np.asarray(im).max() > threshold)


def load_aisd(root, read_masks: bool = True) -> pd.DataFrame:
    """AISD (github.com/GriffinLiang/AISD), unpacked ``image.zip`` and ``mask.zip``.

    Assumed layout (the README does not document it): ``image/<patient id>/<slice>.png`` and
    ``mask/<patient id>/<slice>.png`` (``images``/``masks`` also accepted), patient ids the 7-digit AISD ids.
    One row per slice; ``slice_index`` = the integer in the slice file name when it has one; with ``read_masks``
    ``label`` = ``infarct`` = mask max > 127, else NA.
    """
    source = "aisd"
    root = _root(root)
    img_dir = _first_dir(root, ("image", "images"), "AISD images")
    mask_dir = _first_dir(root, ("mask", "masks"), "AISD masks")
    rows = []
    for pdir in sorted(d for d in img_dir.iterdir() if d.is_dir()):
        for img in sorted(pdir.glob("*.png")):
            mask = mask_dir / pdir.name / img.name
            digits = re.findall(r"\d+", img.stem)
            row = {"image_path": str(img), "source_patient": pdir.name,
                   "slice_index": int(digits[-1]) if digits else None,
                   "mask_path": str(mask) if mask.is_file() else None}
            if read_masks and mask.is_file():
                row["infarct"] = row["label"] = _mask_positive(mask)
                row["ischemic"] = row["infarct"]
            rows.append(row)
    if not rows:
        raise DataError(f"{img_dir}: no <patient>/<slice>.png images")
    out = pd.DataFrame(rows)
    out["patient"] = [pid(source, p) for p in out["source_patient"]]
    out.loc[out["mask_path"].notna(), "mask_meaning"] = MASK_MEANINGS["aisd"]
    return finalize(out, source)


# --------------------------------------------------------------------------------------------- TEKNOFEST
TEKNOFEST_CLASSES = {"INMEYOK": (0, None), "ISKEMI": (1, "ischemic"), "KANAMA": (1, "hemorrhage")}


def _tf_norm(name: str) -> str:
    return re.sub(r"[^A-Z]", "", name.upper().replace("İ", "I"))


def load_teknofest(root, read_masks: bool = False) -> pd.DataFrame:
    """TEKNOFEST-2021 stroke competition set (Turkish Ministry of Health open data).

    Assumed layout (from public code using the set, not official documentation): a folder per class,
    ``INMEYOK`` (no stroke), ``ISKEMI`` (ischemic), ``KANAMA`` (hemorrhagic) — names matched ignoring case,
    ``_`` and ``İ`` — anywhere under ``root`` (e.g. ``TRAINING/KANAMA``), each holding ``PNG/`` (else ``DICOM/``)
    images and, for the stroke classes, ``MASK/`` (or ``MASKS``) PNGs of the same stem; ``OVERLAY/`` is ignored.
    One row per image. The public release has no patient ids: patient = image stem (each image its own group —
    neighbouring slices of one patient may land in different folds). ``label`` = class (0 INMEYOK, 1 otherwise).
    """
    source = "teknofest"
    root = _root(root)
    class_dirs = [d for d in sorted(root.rglob("*")) if d.is_dir() and _tf_norm(d.name) in TEKNOFEST_CLASSES]
    if not class_dirs:
        raise DataError(f"{root}: no INMEYOK/ISKEMI/KANAMA class folders")
    rows = []
    for cdir in class_dirs:
        cls = _tf_norm(cdir.name)
        label, col = TEKNOFEST_CLASSES[cls]
        subs = {_tf_norm(s.name): s for s in cdir.iterdir() if s.is_dir()}
        img_dir = subs.get("PNG") or subs.get("DICOM")
        if img_dir is None:
            raise DataError(f"{cdir}: folder missing (PNG or DICOM)")
        mask_dir = subs.get("MASK") or subs.get("MASKS")
        for img in sorted(p for p in img_dir.iterdir() if p.suffix.lower() in (".png", ".dcm")):
            mask = mask_dir / f"{img.stem}.png" if mask_dir else None
            row = {"image_path": str(img), "source_patient": img.stem, "label": label,
                   "hemorrhage": int(cls == "KANAMA"), "ischemic": int(cls == "ISKEMI"),
                   "mask_path": str(mask) if mask is not None and mask.is_file() else None,
                   "label_note": f"class folder {cdir.name}"}
            if read_masks and row["mask_path"]:
                row["label_note"] += f"; mask non-empty={_mask_positive(mask, 0)}"
            rows.append(row)
    if not rows:
        raise DataError(f"{root}: class folders hold no images")
    out = pd.DataFrame(rows)
    dup = out["source_patient"].duplicated(keep=False)
    if dup.any():  # same stem in two class folders: keep ids unique
        out.loc[dup, "source_patient"] = [f"{Path(p).parent.parent.name}/{s}" for p, s in
                                          zip(out.loc[dup, "image_path"], out.loc[dup, "source_patient"])]
    out["patient"] = [pid(source, p) for p in out["source_patient"]]
    out.loc[out["mask_path"].notna(), "mask_meaning"] = MASK_MEANINGS["teknofest"]
    return finalize(out, source)


# --------------------------------------------------------------------------------------------- RSNA ICH
RSNA_TYPES = ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural", "any")


def load_rsna_ich(root, csv_name: str | None = None, read_headers: bool = True) -> pd.DataFrame:
    """RSNA Intracranial Hemorrhage Detection 2019 (Kaggle): ``stage_2_train/ID_<hex>.dcm`` (or ``stage_1_train``)
    and ``stage_2_train.csv`` with rows ``ID,Label`` where ID = ``ID_<hex>_<subtype>`` (6 per image, subtype in
    epidural/intraparenchymal/intraventricular/subarachnoid/subdural/any).

    One row per slice; ``label`` = ``hemorrhage`` = ``any``. The csv has no patient id: with ``read_headers``
    (default) each DICOM header is read (no pixels) for PatientID (the grouping unit) and InstanceNumber
    (``slice_index``) — slow on the full 750k files; without it patient = the image id (slice-level groups,
    leaky). Images listed in the csv but absent on disk are dropped.
    """
    source = "rsna-ich"
    root = _root(root)
    for stage in ("stage_2", "stage_1"):
        if (root / f"{stage}_train").is_dir():
            img_dir = root / f"{stage}_train"
            csv_path = root / (csv_name or f"{stage}_train.csv")
            break
    else:
        raise DataError(f"{root}: folder missing (stage_2_train or stage_1_train)")
    raw = read_csv(csv_path, ["ID", "Label"], "RSNA labels")
    parts = raw["ID"].astype(str).str.extract(r"^(ID_[0-9a-fA-F]+)_(\w+)$")
    if parts.isna().any().any():
        raise DataError(f"{csv_path}: ID not of the form ID_<hex>_<subtype>")
    raw = raw.assign(image=parts[0], sub=parts[1]).drop_duplicates(["image", "sub"])
    wide = raw.pivot(index="image", columns="sub", values="Label")
    missing = [t for t in RSNA_TYPES if t not in wide.columns]
    if missing:
        raise DataError(f"{csv_path}: subtype(s) missing: {', '.join(missing)}")
    rows = []
    for image, lab in wide.iterrows():
        path = img_dir / f"{image}.dcm"
        if not path.is_file():
            continue
        row = {"image_path": str(path), "source_patient": image,
               "label": int(lab["any"]), "hemorrhage": int(lab["any"])}
        for t in RSNA_TYPES[:-1]:
            row[t] = int(lab[t])
        if read_headers:
            import pydicom

            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True,
                                 specific_tags=["PatientID", "InstanceNumber", "StudyInstanceUID"])
            row["source_patient"] = str(getattr(ds, "PatientID", "") or image)
            inst = getattr(ds, "InstanceNumber", None)
            row["slice_index"] = int(inst) if inst not in (None, "") else None
            row["study_uid"] = str(getattr(ds, "StudyInstanceUID", "") or "")
        rows.append(row)
    if not rows:
        raise DataError(f"{img_dir}: none of the labelled images is present")
    out = pd.DataFrame(rows)
    out["patient"] = [pid(source, p) for p in out["source_patient"]]
    out["label_note"] = "slice-level RSNA labels" + ("" if read_headers else "; patient = image id (no headers)")
    return finalize(out, source)


# --------------------------------------------------------------------------------------------- CQ500
_CQ500 = re.compile(r"CQ500[-_ ]?CT[-_ ]?(\d+)", re.IGNORECASE)


def load_cq500(root, reads_csv: str | Path | None = None) -> pd.DataFrame:
    """CQ500 (qure.ai): unzipped scans ``CQ500CT<n> CQ500CT<n>/Unknown Study/CT <series>/CT*.dcm`` and
    ``reads.csv`` (3 readers per scan) at ``root`` (or given).

    One row per series folder (a folder directly holding ``.dcm`` files): ``image_path`` = that folder, patient =
    ``CQ500-CT-<n>`` (from the first path part matching CQ500[- ]CT[- ]<n>). Scan-level labels by majority of the 3
    readers: ``label`` = ``hemorrhage`` = ICH by >= 2 readers, ``ich_votes`` = 0..3; all series of a scan share them.
    """
    source = "cq500"
    root = _root(root)
    reads = Path(reads_csv) if reads_csv else root / "reads.csv"
    labels = cq500_scan_labels(require_file(reads, "CQ500 reads.csv"))
    series = sorted({p.parent for p in root.rglob("*.dcm")})
    if not series:
        raise DataError(f"{root}: no DICOM series folders")
    rows = []
    for s in series:
        rel = s.relative_to(root)
        m = next((_CQ500.search(part) for part in rel.parts if _CQ500.search(part)), None)
        if m is None:
            raise DataError(f"{root}: series folder {rel} is not under a CQ500-CT-<n> folder")
        name = f"CQ500-CT-{int(m.group(1))}"
        row = {"image_path": str(s), "source_patient": name, "n_files": len(list(s.glob("*.dcm"))),
               "label_note": f"series {s.name}; scan-level labels"}
        if name in labels.index:
            lab = labels.loc[name]
            row.update({k: int(lab[k]) for k in labels.columns})
            row["label"] = row["hemorrhage"]
        rows.append(row)
    out = pd.DataFrame(rows)
    out["patient"] = [pid(source, p) for p in out["source_patient"]]
    return finalize(out, source)


PUBLIC_LOADERS = {
    "ctich-nifti": load_ctich_nifti,
    "bhsd": load_bhsd,
    "aisd": load_aisd,
    "teknofest": load_teknofest,
    "rsna-ich": load_rsna_ich,
    "cq500": load_cq500,
}
