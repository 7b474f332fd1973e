"""strokescan.datasets: local adapters (counts from the PROVENANCE files), folds, public loaders on fake layouts."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from strokescan.config import data_root
from strokescan.datasets import (
    CTICH_KAGGLE_FOLDS,
    COLUMNS,
    LOCAL_ADAPTERS,
    check_folds,
    load_manifest,
    load_or_create_folds,
    make_patient_folds,
    read_folds,
    write_folds,
)
from strokescan.datasets import public
from strokescan.errors import DataError

HAVE_DATA = (data_root() / "ctich-kaggle").is_dir()
needs_data = pytest.mark.skipif(not HAVE_DATA, reason="shared data folder not present")


@pytest.fixture(scope="module")
def manifests():
    if not HAVE_DATA:
        pytest.skip("shared data folder not present")
    return {name: fn() for name, fn in LOCAL_ADAPTERS.items()}


def _pos(df, col):
    return int((df[col] == 1).sum())


# ------------------------------------------------------------------ local adapters: PROVENANCE counts
def test_schema(manifests):
    for name, df in manifests.items():
        assert list(df.columns[: len(COLUMNS)]) == list(COLUMNS), name
        assert (df["source"] == name).all()
        owner = {"ctich-masks": "ctich-kaggle"}.get(name, name)  # the same people: ctich-kaggle's ids (one fold)
        assert df["patient"].str.startswith(owner + ":").all()
        assert str(df["label"].dtype) == "Int64"
        assert df["image_path"].map(lambda p: p.startswith("/")).all()


def test_ctich_kaggle_counts(manifests):
    df = manifests["ctich-kaggle"]
    assert len(df) == 2501 and df["patient"].nunique() == 82
    assert (df["folder_label"] == "Stroke").sum() == 950 and (df["folder_label"] == "Normal").sum() == 1551
    # 318 CT-ICH hemorrhage slices in 36 patients; patient 49's 9 are unknown here (33 NA slices)
    assert _pos(df, "label") == 309 and df["label"].isna().sum() == 33
    assert df.loc[df["label"].isna(), "patient"].unique().tolist() == ["ctich-kaggle:49"]
    assert df.loc[df["patient_label"] == 1, "patient"].nunique() == 36
    st = df["folder_label"] == "Stroke"
    assert _pos(df[st], "label") == 259 and _pos(df[~st], "label") == 50


def test_phe_sich_counts(manifests):
    df = manifests["phe-sich"]
    assert len(df) == 566 and df["patient"].nunique() == 18
    assert _pos(df, "edema") == 104
    assert (df["boxes"] != "[]").sum() == 98
    assert sum(len(json.loads(b)) for b in df["boxes"]) == 98
    assert ((df["edema"] == 1) & (df["boxes"] == "[]")).sum() == 6
    assert _pos(df, "label") == 104  # no box without mask
    assert df["mask_path"].notna().all()


def test_mini_counts(manifests):
    b = manifests["bhsd-mini"]
    assert len(b) == 36 and _pos(b, "label") == 36
    assert [_pos(b, c) for c in ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural")] \
        == [5, 18, 19, 14, 7]
    assert b["patient"].nunique() == 25  # PROVENANCE: "about 28" volumes by file-name prefix
    a = manifests["aisd-mini"]
    assert len(a) == 24 and _pos(a, "infarct") == 24
    c = manifests["cpaisd-mini"]
    assert len(c) == 24 and _pos(c, "penumbra") == 24 and _pos(c, "core") == 14
    r = manifests["realtime-mini"]
    assert len(r) == 24 and r["augmented"].sum() == 12
    assert (r.loc[r["augmented"], "hemorrhage"] == 1).all() and (r.loc[~r["augmented"], "ischemic"] == 1).all()
    assert r.loc[~r["augmented"]].groupby("source_patient").size().to_dict() == {"0539025": 7, "0539035": 3,
                                                                                   "0539043": 2}


def test_head_ct_dicom(manifests):
    df = manifests["head-ct-dicom"].set_index("source_patient")
    assert len(df) == 4 and int(df["n_files"].sum()) == 82
    assert df.loc["CQ500-CT-0", "ich_votes"] == 1 and df.loc["CQ500-CT-0", "label"] == 0
    assert df.loc["CQ500-CT-1", "ich_votes"] == 3 and df.loc["CQ500-CT-1", "label"] == 1
    assert df.loc["CQ500-CT-1", "image_path"].endswith(".dcm")
    assert df.loc["mr-transfer-syntaxes", "modality"] == "MR"
    assert pd.isna(df.loc["mr-transfer-syntaxes", "label"]) and pd.isna(df.loc["QMNx85rKkkg", "label"])


# ------------------------------------------------------------------ DataError on missing / malformed folders
def test_missing_folder_raises(tmp_path):
    for name in LOCAL_ADAPTERS:
        with pytest.raises(DataError, match=name):
            load_manifest(name, root=tmp_path)
    with pytest.raises(DataError):
        load_manifest("no-such-set")


def test_malformed_folder_raises(tmp_path):
    d = tmp_path / "aisd-mini"
    (d / "images").mkdir(parents=True)
    (d / "masks").mkdir()
    (d / "index.csv").write_text("file,wrong\n1.png,3\n")
    with pytest.raises(DataError, match="infarct_px"):
        load_manifest("aisd-mini", root=tmp_path)
    (d / "index.csv").write_text("file,infarct_px\n1.png,3\n")
    with pytest.raises(DataError, match="1.png"):  # listed file absent
        load_manifest("aisd-mini", root=tmp_path)
    (d / "images" / "1.png").write_bytes(b"x")
    assert len(load_manifest("aisd-mini", root=tmp_path)) == 1


# ------------------------------------------------------------------ folds
def _assert_partition(folds, manifest):
    seen = [p for pats in folds["folds"].values() for p in pats]
    assert len(seen) == len(set(seen)), "a patient is in two folds"
    assert set(seen) == set(manifest["patient"]), "a patient is in no fold"
    check_folds(folds, manifest)


def test_committed_ctich_folds(manifests):
    df = manifests["ctich-kaggle"]
    folds = read_folds(CTICH_KAGGLE_FOLDS)
    assert folds["n_folds"] == 5 and folds["dataset"] == "ctich-kaggle"
    _assert_partition(folds, df)
    assert any("ctich-kaggle:49" in v for v in folds["folds"].values())
    assert sum(c["patients"] for c in folds["counts"].values()) == 82
    assert sum(c["slices"] for c in folds["counts"].values()) == 2501
    assert sum(c["positive_slices"] for c in folds["counts"].values()) == 309
    assert sum(c["positive_patients"] for c in folds["counts"].values()) == 36
    # re-loading the committed JSON (never recomputed) gives identical folds
    again = load_or_create_folds(df, CTICH_KAGGLE_FOLDS)
    assert again == folds


def test_fresh_folds_roundtrip(manifests, tmp_path):
    df = manifests["ctich-kaggle"]
    fresh = make_patient_folds(df, n_folds=5, seed=7, dataset="ctich-kaggle")
    _assert_partition(fresh, df)
    assert make_patient_folds(df, n_folds=5, seed=7, dataset="ctich-kaggle") == fresh  # seeded
    path = tmp_path / "f.json"
    created = load_or_create_folds(df, path, seed=7)
    assert read_folds(path)["folds"] == created["folds"]
    # existing file is read, not recomputed: a different seed argument does not change it
    assert load_or_create_folds(df, path, seed=99)["folds"] == created["folds"]
    # patients not matching the manifest -> DataError
    with pytest.raises(DataError, match="do not match"):
        load_or_create_folds(df[df["patient"] != "ctich-kaggle:60"], path)
    bad = json.loads(path.read_text())
    bad["folds"]["1"].append(bad["folds"]["0"][0])
    write_folds(bad, path)
    with pytest.raises(DataError):
        read_folds(path)
    path.write_text("{not json")
    with pytest.raises(DataError):
        load_or_create_folds(df, path)


def test_folds_synthetic_without_data():
    df = pd.DataFrame({"source": "x", "patient": [f"x:{i // 3}" for i in range(60)],
                       "label": [1 if (i // 3) % 4 == 0 and i % 3 == 0 else 0 for i in range(60)]})
    f = make_patient_folds(df, n_folds=5, seed=1)
    _assert_partition(f, df)
    assert all(c["positive_patients"] == 1 for c in f["counts"].values())


# ------------------------------------------------------------------ public loaders on fake layouts
def _png(path, value=0, rgb=False):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((8, 8, 3) if rgb else (8, 8), value, np.uint8)
    Image.fromarray(arr).save(path)


def _nii(path, data):
    nib = pytest.importorskip("nibabel")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4)), str(path))


def _dcm(path, patient_id, instance):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.PatientID = patient_id
    ds.InstanceNumber = instance
    ds.StudyInstanceUID = "1.2.3"
    ds.Modality = "CT"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)
    assert pydicom.dcmread(path).PatientID == patient_id


def test_ctich_nifti_fake(tmp_path):
    for p in (49, 50):
        _nii(tmp_path / "ct_scans" / f"{p:03d}.nii", np.zeros((4, 4, 3), np.int16))
        _nii(tmp_path / "masks" / f"{p:03d}.nii", np.zeros((4, 4, 3), np.uint8))
    rows = ["PatientNumber,SliceNumber,Intraventricular,Intraparenchymal,Subarachnoid,Epidural,Subdural,"
            "No_Hemorrhage,Fracture_Yes_No"]
    rows += [f"{p},{s},0,{int(p == 50 and s == 2)},0,0,0,{int(not (p == 50 and s == 2))},0"
             for p in (49, 50) for s in (1, 2, 3)]
    (tmp_path / "hemorrhage_diagnosis_raw_ct.csv").write_text("\n".join(rows) + "\n")
    df = public.load_ctich_nifti(tmp_path)
    assert len(df) == 6 and df["patient"].nunique() == 2 and _pos(df, "label") == 1
    hit = df[df["label"] == 1].iloc[0]
    assert hit["patient"] == "ctich-nifti:050" and hit["slice_index"] == 1 and hit["intraparenchymal"] == 1
    assert df["mask_path"].notna().all()
    (tmp_path / "ct_scans" / "050.nii").unlink()
    with pytest.raises(DataError, match="050"):
        public.load_ctich_nifti(tmp_path)


def test_bhsd_fake(tmp_path):
    m = np.zeros((4, 4, 2), np.uint8)
    m[0, 0, 0] = 2
    m[1, 1, 1] = 5
    _nii(tmp_path / "images" / "ID_a.nii.gz", np.zeros((4, 4, 2), np.int16))
    _nii(tmp_path / "ground truths" / "ID_a.nii.gz", m)
    _nii(tmp_path / "images" / "ID_b.nii.gz", np.zeros((4, 4, 2), np.int16))
    _nii(tmp_path / "ground truths" / "ID_b.nii.gz", np.zeros((4, 4, 2), np.uint8))
    df = public.load_bhsd(tmp_path).set_index("source_patient")
    assert df.loc["ID_a", "intraparenchymal"] == 1 and df.loc["ID_a", "subdural"] == 1
    assert df.loc["ID_a", "epidural"] == 0 and df.loc["ID_a", "label"] == 1 and df.loc["ID_b", "label"] == 0
    shutil.rmtree(tmp_path / "ground truths")
    with pytest.raises(DataError, match="masks"):
        public.load_bhsd(tmp_path)
    (tmp_path / "ground truths").mkdir()
    for p in (tmp_path / "images").iterdir():  # as label_192.zip ships them: no suffix
        p.rename(p.with_name(p.name.replace(".nii.gz", "")))
    with pytest.raises(DataError, match="add .nii.gz"):
        public.load_bhsd(tmp_path)


def test_aisd_fake(tmp_path):
    for s, v in ((1, 0), (2, 255)):
        _png(tmp_path / "image" / "0091465" / f"{s}.png")
        _png(tmp_path / "mask" / "0091465" / f"{s}.png", v, rgb=True)
    _png(tmp_path / "image" / "0091468" / "1.png")
    _png(tmp_path / "mask" / "0091468" / "1.png", 100)
    df = public.load_aisd(tmp_path)
    assert len(df) == 3 and df["patient"].nunique() == 2 and _pos(df, "label") == 1
    assert df.loc[df["label"] == 1, "slice_index"].tolist() == [2]


def test_teknofest_fake(tmp_path):
    t = tmp_path / "TRAINING"
    _png(t / "INME_YOK" / "PNG" / "10001.png")
    _png(t / "ISKEMI" / "PNG" / "10002.png")
    _png(t / "ISKEMI" / "MASK" / "10002.png", 1)
    _png(t / "KANAMA" / "PNG" / "10003.png")
    _png(t / "KANAMA" / "MASK" / "10003.png", 1)
    _png(t / "KANAMA" / "OVERLAY" / "10003.png")
    df = public.load_teknofest(tmp_path).set_index("source_patient")
    assert len(df) == 3
    assert df.loc["10001", "label"] == 0 and pd.isna(df.loc["10001", "mask_path"])
    assert df.loc["10002", "ischemic"] == 1 and df.loc["10003", "hemorrhage"] == 1
    assert df.loc["10003", "mask_path"].endswith("MASK/10003.png")
    with pytest.raises(DataError):
        public.load_teknofest(tmp_path / "TRAINING" / "KANAMA" / "OVERLAY")


def test_rsna_fake(tmp_path):
    types = public.RSNA_TYPES
    lines = ["ID,Label"]
    for img, pos in (("ID_0a1", "subdural"), ("ID_0b2", None), ("ID_0c3", None)):
        lines += [f"{img}_{t},{int(t in (pos, 'any') and pos is not None)}" for t in types]
    (tmp_path / "stage_2_train.csv").write_text("\n".join(lines) + "\n")
    _dcm(tmp_path / "stage_2_train" / "ID_0a1.dcm", "ID_pat1", 3)
    _dcm(tmp_path / "stage_2_train" / "ID_0b2.dcm", "ID_pat1", 4)
    _dcm(tmp_path / "stage_2_train" / "ID_0c3.dcm", "ID_pat2", 1)
    df = public.load_rsna_ich(tmp_path)
    assert len(df) == 3 and df["patient"].nunique() == 2 and _pos(df, "label") == 1
    row = df[df["label"] == 1].iloc[0]
    assert row["subdural"] == 1 and row["patient"] == "rsna-ich:ID_pat1" and row["slice_index"] == 3
    assert public.load_rsna_ich(tmp_path, read_headers=False)["patient"].nunique() == 3


def test_cq500_fake(tmp_path):
    head = "name,Category," + ",".join(
        f"R{r}:{f}" for r in (1, 2, 3) for f in ("ICH", "IPH", "IVH", "SDH", "EDH", "SAH"))
    (tmp_path / "reads.csv").write_text(
        head + "\nCQ500-CT-0,B2," + ",".join(["1,0,0,0,0,1", "0,0,0,0,0,0", "0,0,0,0,0,0"])
        + "\nCQ500-CT-1,B2," + ",".join(["1,1,0,0,0,1"] * 3) + "\n")
    for scan, series in (("CQ500CT0 CQ500CT0", "CT 0.625mm"), ("CQ500CT1 CQ500CT1", "CT 5mm"),
                         ("CQ500CT1 CQ500CT1", "CT PLAIN THIN")):
        _dcm(tmp_path / scan / "Unknown Study" / series / "CT000000.dcm", "x", 1)
    df = public.load_cq500(tmp_path)
    assert len(df) == 3 and df["patient"].nunique() == 2
    s = df.groupby("source_patient")[["ich_votes", "label"]].max()
    assert s.loc["CQ500-CT-0"].tolist() == [1, 0] and s.loc["CQ500-CT-1"].tolist() == [3, 1]
    assert _pos(df, "intraparenchymal") == 2
