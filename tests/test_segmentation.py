"""Lesion segmentation: network, partial-label loss, mask decoding, quantification, save/load, Segmenter."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage as ndi

from strokescan.core.geometry import from_model_frame, to_model_frame
from strokescan.core.labels import EDEMA, HEMORRHAGE, INFARCT
from strokescan.datasets.lesion_masks import decode_sample
from strokescan.errors import DataError, ModelError
from strokescan.inference.quantification import abc2_ml, feret_diameters, quantify_series, slice_areas
from strokescan.inference.segmenter import DEFAULT_SEGMENTER_DIR
from strokescan.models.unet import SegmenterPlan, UNetConfig, build_unet, load_segmenter, save_segmenter
from strokescan.preprocessing.masking import head_masks
from strokescan.preprocessing.pipeline import SlicePlan
from strokescan.training.segmenter import allowed_classes, augment, partial_label_loss

torch.set_num_threads(1)
TINY = UNetConfig(arch="basic", features=(4, 4, 8, 8, 16, 4), dropout=0.0)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)


@pytest.fixture()
def tiny_model_dir(tmp_path):
    torch.manual_seed(0)
    model = build_unet(TINY)
    plan = SegmenterPlan(unet=TINY, slice_plan=SlicePlan(size=64), min_lesion_px=1)
    return save_segmenter(model.eval(), plan, tmp_path / "seg")


# --- network ------------------------------------------------------------------------------------------------


def test_networks_map_three_channels_to_four_class_logits():
    x = torch.rand(2, 3, 64, 64)
    assert build_unet(TINY)(x).shape == (2, 4, 64, 64)
    eff = build_unet(UNetConfig(freeze_encoder_blocks=3), pretrained=False).eval()
    assert eff(x).shape == (2, 4, 64, 64)
    frozen = [p.requires_grad for p in eff.stem.parameters()] + [p.requires_grad for p in eff.blocks[2].parameters()]
    assert not any(frozen) and all(p.requires_grad for p in eff.blocks[3].parameters())


# --- partial-label loss -------------------------------------------------------------------------------------


def _logits_for(cls: int, shape=(1, 8, 8)) -> torch.Tensor:
    logits = torch.full((shape[0], 4, *shape[1:]), -10.0)
    logits[:, cls] = 10.0
    return logits


def test_loss_does_not_punish_a_class_the_source_does_not_label():
    target = torch.zeros(1, 8, 8, dtype=torch.uint8)
    says_hemorrhage = _logits_for(HEMORRHAGE)
    says_background = _logits_for(0)
    # hemorrhage unlabelled (e.g. phe-sich inside a box, aisd): the bit is set, the class not labelled
    unknown = torch.full_like(target, 1 << HEMORRHAGE)
    lab_unknown = torch.tensor([[True, False, True, True]])
    loss_unlab, _ = partial_label_loss(says_hemorrhage, target, unknown, lab_unknown)
    loss_bg, _ = partial_label_loss(says_background, target, unknown, lab_unknown)
    # hemorrhage labelled absent (e.g. ctich-kaggle negative): the same prediction is heavily punished
    loss_lab, _ = partial_label_loss(says_hemorrhage, target, torch.zeros_like(target), torch.ones(1, 4, dtype=torch.bool))
    assert loss_unlab.item() < 0.05
    assert abs(loss_unlab.item() - loss_bg.item()) < 0.05
    assert loss_lab.item() > 5.0
    # a labelled lesion pixel is still punished when missed, whatever is unknown elsewhere
    t2 = target.clone()
    t2[0, 2:4, 2:4] = EDEMA
    u2 = unknown.clone()
    u2[t2 > 0] = 0
    loss_missed, _ = partial_label_loss(says_hemorrhage, t2, u2, lab_unknown)
    assert loss_missed.item() > loss_unlab.item() + 0.5


def test_allowed_classes_and_augmentation_keep_labels_consistent():
    t = torch.zeros(2, 16, 16, dtype=torch.uint8)
    t[:, 4:8, 4:8] = INFARCT
    u = torch.full_like(t, (1 << HEMORRHAGE) | (1 << EDEMA))
    u[t > 0] = 0
    a = allowed_classes(t, u)
    assert a[0, :, 5, 5].tolist() == [False, False, False, True]
    assert a[0, :, 0, 0].tolist() == [True, True, True, False]
    x, t2, u2 = augment(torch.rand(2, 3, 16, 16), t, u, torch.Generator().manual_seed(0))
    assert x.shape == (2, 3, 16, 16) and set(t2.unique().tolist()) <= {0, INFARCT}
    assert set(u2.unique().tolist()) <= {0, 6}


# --- mask decoding on the real files ------------------------------------------------------------------------


def _first(m: pd.DataFrame, n: int = 2) -> pd.DataFrame:
    return m[~m["augmented"]].head(n)


def test_mask_decoding_matches_the_counts_each_dataset_ships(data_root):
    from strokescan.datasets import local

    checks = [
        # loader, folder, index columns counting the class, class, classes labelled (the rest unknown)
        (local.load_bhsd_mini, "bhsd-mini", ["EDH_px", "IPH_px", "IVH_px", "SAH_px", "SDH_px"], HEMORRHAGE,
         {HEMORRHAGE, INFARCT}),
        (local.load_aisd_mini, "aisd-mini", ["infarct_px"], INFARCT, {INFARCT}),
        (local.load_cpaisd_mini, "cpaisd-mini", ["core_px", "penumbra_px"], INFARCT, {INFARCT}),
        (local.load_realtime_mini, "realtime-mini", ["ischemic_px"], INFARCT, {INFARCT}),
    ]
    for loader, name, cols, cls, labelled in checks:
        m = _first(loader(data_root))
        index = pd.read_csv(data_root / name / "index.csv")
        for _, row in m.iterrows():
            ms = decode_sample(row)
            want = int(index.loc[index["file"] == row["image_path"].split("/")[-1], cols].sum(axis=1).iloc[0])
            got = int((ms.target == cls).sum())
            assert abs(got - want) <= 0.02 * want + 5, (name, got, want)
            assert set(np.unique(ms.target)) <= {0, cls}
            assert {c for c in (1, 2, 3) if ms.labelled[c]} == labelled, name
            assert not ms.unknown[ms.target > 0].any()


def test_phe_sich_edema_labelled_and_a_derived_clot_inside_the_rim(data_root):
    from strokescan.datasets.local import load_phe_sich
    from strokescan.datasets.lesion_masks import row_slice

    m = load_phe_sich(data_root)
    index = pd.read_csv(data_root / "phe-sich" / "index.csv", dtype={"patient": str})
    row = m[m["image_path"].str.endswith("0004_18.png")].iloc[0]  # the large basal-ganglia hematoma
    ms = decode_sample(row)
    want = int(index.loc[index["slice_file"] == row["image_path"].split("/")[-1], "mask_pixels"].iloc[0])
    assert int((ms.target == EDEMA).sum()) == want
    clot = ms.target == HEMORRHAGE
    x0, y0, x1, y1 = json.loads(row["boxes"])[0]
    assert clot.sum() > 500 and clot[y0:y1 + 1, x0:x1 + 1].sum() == clot.sum()  # derived clot, inside the box
    pixels, _ = row_slice(row)
    assert (ndi.binary_dilation(ms.target == EDEMA, iterations=3) & clot).any()  # the rim lies on the clot
    brain = (pixels > 20) & (pixels < 200) & ~ndi.binary_dilation(ms.target > 0, iterations=10)
    assert pixels[clot].mean() > np.median(pixels[brain]) + 10  # hyperdense against the brain around it
    assert ms.labelled.tolist() == [True, True, True, True] and not ms.unknown.any()
    negative = decode_sample(m[m["label"] == 0].iloc[0])
    assert negative.labelled[HEMORRHAGE] and not negative.target.any()


def test_ctich_masks_land_on_the_jpeg_and_empty_masks_are_negatives(data_root):
    from strokescan.datasets.local import load_ctich_masks
    from strokescan.datasets.lesion_masks import row_slice

    if not (data_root / "ctich-masks").is_dir():
        pytest.skip("ctich-masks missing")
    m = load_ctich_masks(data_root)
    assert len(m) == 2299 and int(m["label"].sum()) == 318 and m["patient"].str.startswith("ctich-kaggle:").all()
    bleed = m[(m["label"] == 1) & (m["epidural"] == 1)].iloc[0]
    pixels, _ = row_slice(bleed)
    ms = decode_sample(bleed, pixels.shape)
    assert ms.target.shape == pixels.shape == (650, 650) and set(np.unique(ms.target)) == {0, HEMORRHAGE}
    assert ms.labelled[HEMORRHAGE] and ms.labelled[INFARCT] and not ms.labelled[EDEMA]
    blood = ms.target == HEMORRHAGE
    ring = ndi.binary_dilation(blood, iterations=15) & ~ndi.binary_dilation(blood, iterations=3)
    assert pixels[blood].mean() > pixels[ring & (pixels < 250)].mean()  # the mask sits on the bright clot
    empty = decode_sample(m[m["label"] == 0].iloc[0], pixels.shape)
    assert not empty.target.any() and empty.labelled[HEMORRHAGE]


def test_segmentation_folds_keep_ctich_patients_in_their_committed_classifier_folds(data_root):
    from strokescan.datasets.lesion_masks import build_segmentation_manifest, make_source_folds
    from strokescan.datasets.splits import ctich_kaggle_folds

    if not (data_root / "ctich-masks").is_dir():
        pytest.skip("ctich-masks missing")
    folds = make_source_folds(build_segmentation_manifest(data_root))
    committed = ctich_kaggle_folds(data_root)["folds"]
    for k, patients in folds["folds"].items():
        ctich = {p for p in patients if p.startswith("ctich-kaggle:")}
        assert ctich <= set(committed[k])
    everyone = [p for ps in folds["folds"].values() for p in ps]
    assert len(everyone) == len(set(everyone))  # a patient in one fold only


def test_model_frame_round_trip_keeps_a_rotated_mask_on_its_pixels(data_root):
    from strokescan.datasets.local import load_phe_sich

    m = load_phe_sich(data_root)
    row = m[m["edema"] == 1].iloc[0]
    truth = decode_sample(row).target == EDEMA
    box = (40, 30, 480, 470)
    small = to_model_frame(truth.astype(np.uint8), box, 90.0, 256)
    probs = np.stack([1 - small, small]).astype(np.float32)
    back = from_model_frame(probs, box, 90.0, truth.shape) == 1
    assert back.shape == truth.shape
    assert _dice(back, truth) > 0.75


# --- quantification -----------------------------------------------------------------------------------------


def test_quantification_of_a_synthetic_ellipsoid_with_abc2():
    a, b, c = 20.0, 12.0, 10.0  # semi-axes, mm (in-plane rows, cols; through-plane)
    ps, ss = 0.5, 1.0
    z = (np.arange(-15, 16) * ss)[:, None, None]
    r = ((np.arange(128) - 63.5) * ps)[None, :, None]
    q = ((np.arange(128) - 63.5) * ps)[None, None, :]
    inside = (r / a) ** 2 + (q / b) ** 2 + (z / c) ** 2 <= 1
    masks = [s.astype(np.uint8) * HEMORRHAGE for s in inside]
    res = quantify_series(masks, (ps, ps), ss)
    hem = res.classes["hemorrhage"]
    true_ml = 4 / 3 * np.pi * a * b * c / 1000
    assert hem.unit == "mL" and abs(hem.total - true_ml) / true_ml < 0.03
    lg = hem.largest
    # slices z = +-10 mm touch the ellipsoid only at a point that falls between pixel centres
    assert lg.first_slice == 6 and lg.last_slice == 24 and lg.n_slices == 19 and lg.largest_slice == 15
    assert abs(lg.abc2_ml - 4 * a * b * c / 1000) / (4 * a * b * c / 1000) < 0.08
    assert abs(lg.abc2_ml / true_ml - 3 / np.pi) < 0.08  # ABC/2 reads ~5 % low on an ellipsoid
    assert abs(abc2_ml(40, 24, 20) - 9.6) < 1e-9
    # no spacing: counts, clearly labelled, no ABC/2
    raw = quantify_series(masks, None, None).classes["hemorrhage"]
    assert raw.unit == "voxels" and raw.total == float(inside.sum()) and raw.largest.abc2_ml is None
    assert slice_areas(masks[15])["hemorrhage"].unit == "px"
    assert slice_areas(masks[15], (ps, ps))["hemorrhage"].area == pytest.approx(inside[15].sum() * 0.25)


def test_feret_diameters_of_a_rectangle():
    pts = np.argwhere(np.ones((10, 40), bool))
    a, b = feret_diameters(pts, (1.0, 1.0))
    assert a == pytest.approx(np.hypot(9, 39) + 1.0, abs=0.6)
    # B is the extent perpendicular to A (the diagonal here), plus one pixel's extent along that direction
    assert b == pytest.approx(2 * 9 * 39 / np.hypot(9, 39) + 48 / np.hypot(9, 39), abs=0.05)


# --- save / load --------------------------------------------------------------------------------------------


def test_save_load_round_trip_and_checksum_refusal(tiny_model_dir):
    model, plan = load_segmenter(tiny_model_dir)
    assert plan.unet == TINY and plan.slice_plan.size == 64
    assert json.loads((tiny_model_dir / "segmenter.json").read_text())["weights_sha256"] == plan.weights_sha256
    weights = tiny_model_dir / "segmenter.pt"
    data = bytearray(weights.read_bytes())
    data[-20] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="checksum"):
        load_segmenter(tiny_model_dir)
    with pytest.raises(ModelError):
        load_segmenter(tiny_model_dir / "nowhere")


# --- Segmenter ----------------------------------------------------------------------------------------------


def test_segmenter_returns_masks_on_the_input_grid_of_a_rotated_phe_sich_slice(tiny_model_dir, tmp_path):
    from dataclasses import replace

    from strokescan.config import SAMPLES_DIR
    from strokescan.inference import Predictor
    from strokescan.io import load_scan
    from strokescan.io.writers import write_masks, write_overlays

    path = SAMPLES_DIR / "phe-sich_0004_18.png"  # bundled copy of phe-sich/images/0004/0004_18.png
    if not path.is_file():
        pytest.skip("bundled phe-sich sample missing")
    scan = load_scan(path)
    scan = replace(scan, pixels=np.ascontiguousarray(scan.pixels[:, :, 20:470]))  # non-square on purpose
    predictor = Predictor(segmenter_dir=tiny_model_dir)
    predictor.rotation.slice_angles = lambda scan, correct=True: [90.0]  # face left: a quarter turn, as phe-sich's
    prepared = predictor.prepare(scan)
    masks = predictor.segment(prepared)
    assert len(masks) == 1 and masks[0].shape == scan.pixels.shape[1:] and masks[0].dtype == np.uint8
    assert set(np.unique(masks[0])) <= {0, 1, 2, 3}
    assert prepared.for_segmenter[0].rotation_deg == 90.0  # the phe-sich slice was turned upright before the model
    assert prepared.for_segmenter[0].channels.shape == (3, 64, 64)
    q = predictor.quantify(scan, masks)
    assert not q.spacing_known
    out = write_overlays(scan, masks, tmp_path / "ov", stem="s")
    mp = write_masks(masks, tmp_path / "m", stem="s")
    from PIL import Image

    assert Image.open(out[0]).size == (450, 512) and Image.open(mp[0]).size == (450, 512)


# --- metrics, baseline, training loop -----------------------------------------------------------------------


def test_slice_metrics_nan_when_both_empty_and_lesion_counts():
    from strokescan.evaluation.segmentation import slice_metrics

    empty = np.zeros((32, 32), np.uint8)
    m = slice_metrics(empty, empty, HEMORRHAGE)
    assert np.isnan(m["dice"]) and np.isnan(m["iou"]) and np.isnan(m["hd95_px"])
    truth = empty.copy()
    truth[2:6, 2:6] = HEMORRHAGE
    truth[20:24, 20:24] = HEMORRHAGE
    pred = empty.copy()
    pred[3:6, 2:6] = HEMORRHAGE  # finds the first lesion
    pred[10:12, 28:30] = HEMORRHAGE  # a false one
    m = slice_metrics(pred, truth, HEMORRHAGE)
    assert (m["lesions"], m["found"], m["missed"], m["false"]) == (2, 1, 1, 1)
    assert m["dice"] == pytest.approx(2 * 12 / (16 + 32)) and m["area_err_px"] == 16


def _synthetic_head() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An 8-bit-like 200 x 200 head (skull ring, noisy brain), its distance from the centre, and from a spot
    at (90, 110) where the tests put a lesion."""
    yy, xx = np.mgrid[:200, :200]
    r = np.hypot(yy - 100, xx - 100)
    img = np.where(r < 90, 255.0, 0.0)  # skull
    img[r < 80] = 100.0  # brain
    img += np.random.default_rng(0).normal(0, 4, img.shape) * (r < 80)
    return img, r, np.hypot(yy - 90, xx - 110)


def test_threshold_baseline_finds_a_bright_blob_inside_the_brain():
    from strokescan.evaluation.segmentation import threshold_baseline

    img, _, d = _synthetic_head()
    blob = d < 12
    img[blob] = 170.0  # blood
    pred = threshold_baseline(img.astype(np.float32), False, k=2.0) == HEMORRHAGE
    assert _dice(pred, blob) > 0.8


def test_edema_baseline_finds_the_hypodense_rim_around_the_clot_and_its_fit_prefers_the_right_ring():
    from strokescan.evaluation.segmentation import edema_baseline, fit_edema_baseline

    img, r, d = _synthetic_head()
    rim = (d >= 12) & (d < 20)
    img[rim] = 97.0  # edema: darker than the brain, brighter than CSF
    img[d < 12] = 170.0  # clot
    truth = np.where(rim, EDEMA, 0).astype(np.uint8)
    pred = edema_baseline(img.astype(np.float32), False, k=2.0, lo=0.5, ring_px=10) == EDEMA
    assert _dice(pred, rim) > 0.8
    assert not pred[r > 60].any()  # nothing far from the clot
    params, scores = fit_edema_baseline([img.astype(np.float32)], [truth], ks=(2.0,), los=(0.5,), rings=(2.0, 10.0))
    assert params == {"k": 2.0, "lo": 0.5, "ring_px": 10.0} and len(scores) == 2
    flat = np.where(r < 80, 100.0, 0.0)  # no clot, no edema
    assert not edema_baseline(flat, False).any()


def test_compare_methods_pairs_the_same_slices_and_bounds_the_difference():
    from strokescan.evaluation.segmentation import compare_methods, paired_markdown

    rows = []
    for i in range(12):
        common = {"source": "phe-sich", "patient": f"p{i // 2}", "image_path": f"s{i}.png", "class": "edema"}
        rows.append({**common, "method": "unet", "true_px": 50, "dice": 0.6})
        rows.append({**common, "method": "threshold", "true_px": 50, "dice": 0.3 + 0.02 * (i % 3)})
    empty = {"source": "phe-sich", "patient": "p0", "image_path": "empty.png", "class": "edema", "true_px": 0}
    rows += [{**empty, "method": "unet", "dice": np.nan}, {**empty, "method": "threshold", "dice": 0.0}]
    rows.append({"source": "aisd-mini", "patient": "a", "image_path": "a.png", "class": "infarct",
                 "method": "unet", "true_px": 9, "dice": 0.5})  # no baseline for infarct: not paired
    paired = compare_methods(pd.DataFrame(rows), n_boot=50)
    assert set(paired["class"]) == {"edema"} and set(paired["source"]) == {"phe-sich", "all"}
    row = paired[paired["source"] == "phe-sich"].iloc[0]
    assert row["n_slices"] == 12 and row["n_patients"] == 6
    assert row["dice_difference"] == pytest.approx(0.6 - 0.32)
    lo, hi = row["difference_ci95"]
    assert 0.25 <= lo <= row["dice_difference"] <= hi <= 0.31
    assert "| phe-sich | edema | 12 | 6 |" in paired_markdown(paired)
    volume = [{"source": "bhsd", "patient": "v", "image_path": "v.nii.gz", "frame": k, "class": "hemorrhage",
               "method": m, "true_px": 9, "dice": d} for k in (3, 4) for m, d in (("unet", 0.5), ("threshold", 0.1))]
    paired = compare_methods(pd.DataFrame(volume), n_boot=5)  # two slices of one file: two pairs, not four
    assert paired.set_index("source").loc["bhsd", "n_slices"] == 2
    unet = pd.DataFrame(rows[:4]).query("method == 'unet'")  # 2 slices
    old = unet.assign(method="old")  # a table written before frames existed, beside a new one
    mixed = pd.concat([unet.assign(frame=-1), old], ignore_index=True)
    assert compare_methods(mixed, method="unet", baseline="old", n_boot=5)["n_slices"].iloc[0] == 2


def test_training_loop_learns_and_resumes(tmp_path):
    from strokescan.training.segmenter import SegArrays, SegTrainConfig, train_fold

    rng = np.random.default_rng(0)
    n, s = 8, 32
    images = (rng.random((n, 3, s, s)) * 60).astype(np.uint8)
    target = np.zeros((n, s, s), np.uint8)
    target[:4, 8:20, 8:20] = HEMORRHAGE
    images[:4, :, 8:20, 8:20] = 230
    unknown = np.zeros_like(target)
    labelled = np.ones((n, 4), bool)
    rows = pd.DataFrame({"patient": [f"p{i}" for i in range(n)]})
    data = SegArrays(images, target, unknown, labelled, rows)
    cfg = SegTrainConfig(max_epochs=2, patience=5, steps_per_epoch=3, batch_size=4, threads=1, augment=False)
    torch.manual_seed(0)
    model, summ = train_fold(build_unet(TINY), data, data, cfg, tmp_path / "run")
    assert summ["epochs_run"] == 2 and (tmp_path / "run" / "checkpoint.pt").is_file()
    longer = SegTrainConfig(**{**cfg.to_dict(), "max_epochs": 3})
    _, summ2 = train_fold(build_unet(TINY), data, data, longer, tmp_path / "run")
    assert summ2["epochs_run"] == 3 and [h["epoch"] for h in summ2["history"]] == [1, 2, 3]
    assert summ2["history"][-1]["loss"] < summ2["history"][0]["loss"]
    one = SegTrainConfig(**{**cfg.to_dict(), "max_epochs": 1})
    start = build_unet(TINY).state_dict()
    weights = []
    for name, train_seed in (("a", None), ("b", None), ("c", 7)):  # same draws unless train_seed differs
        model = build_unet(TINY)
        model.load_state_dict(start)
        weights.append(train_fold(model, data, data, SegTrainConfig(**{**one.to_dict(), "train_seed": train_seed}),
                                  tmp_path / name)[0].state_dict())
    same = [all(torch.equal(x, y) for x, y in zip(weights[0].values(), w.values())) for w in weights[1:]]
    assert same == [True, False]


def test_segmentation_and_classifier_share_one_encoder():
    from strokescan.models.classifier import SliceClassifier

    torch.manual_seed(0)
    unet = build_unet(UNetConfig(), pretrained=False)
    clf = SliceClassifier(pretrained=False)
    clf.load_encoder_from_segmenter(unet)
    x = torch.rand(1, 3, 64, 64)
    unet.eval(), clf.eval()
    with torch.no_grad():
        h = unet.stem((x - unet.mean) / unet.std)
        for block in unet.blocks[:14]:
            h = block(h)
        assert torch.allclose(clf.trunk(x), h)
    back = build_unet(UNetConfig(), pretrained=False)
    back.load_encoder_from_classifier(clf)
    assert all(torch.equal(a, b) for a, b in zip(back.blocks.state_dict().values(), unet.blocks.state_dict().values()))


def test_run_training_writes_model_report_and_fine_tunes_from_a_saved_model(tmp_path, monkeypatch, data_root):
    """The whole run on 3 patients per source, one per fold (wiring, not learning): model + per-source report, then the saved
    model as the start of a second run that only evaluates it (max_epochs 0) keeps its weights."""
    from strokescan.training.segmenter import SegTrainConfig, run_training

    monkeypatch.setenv("STROKESCAN_CACHE", str(tmp_path / "cache"))
    cfg = SegTrainConfig(max_epochs=1, patience=1, steps_per_epoch=1, batch_size=2, threads=1)
    first = run_training(tmp_path / "a", cfg, unet=TINY, test_folds=(0,), n_folds=3, limit_per_source=3,
                         ctich_negatives_per_patient=1, root=data_root, n_boot=5)
    report = (tmp_path / "a" / "report" / "report.md").read_text()
    assert "unet" in report and "| threshold |" in report
    baseline_classes = set(first["summary"].query("method == 'threshold'")["class"])
    assert {"hemorrhage", "edema"} <= baseline_classes and "infarct" not in baseline_classes
    model, plan = load_segmenter(first["model_dir"])
    assert plan.training["test_fold"] == 0 and plan.training["init_model"] == ""
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "folds.json").write_text((tmp_path / "a" / "folds.json").read_text())
    zero = SegTrainConfig(**{**cfg.to_dict(), "max_epochs": 0})
    with pytest.raises(DataError, match="leak"):  # another held-out fold: refused
        run_training(tmp_path / "b", zero, test_folds=(1,), n_folds=3, limit_per_source=2,
                     ctich_negatives_per_patient=1, root=data_root, n_boot=5, init_model=first["model_dir"])
    moved = json.loads((tmp_path / "a" / "folds.json").read_text())
    moved["folds"]["1"].append(moved["folds"]["0"].pop())  # one patient in another fold: refused by fingerprint
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "folds.json").write_text(json.dumps(moved))
    with pytest.raises(DataError, match="leak"):
        run_training(tmp_path / "c", zero, test_folds=(0,), n_folds=3, limit_per_source=3,
                     ctich_negatives_per_patient=1, root=data_root, n_boot=5, init_model=first["model_dir"])
    (tmp_path / "a" / "folds.json").unlink()  # the model's folds file is gone (a fresh clone): the fingerprint suffices
    second = run_training(tmp_path / "b", zero, test_folds=(0,), n_folds=3, limit_per_source=3,
                          ctich_negatives_per_patient=1, root=data_root, n_boot=5, init_model=first["model_dir"])
    again, plan2 = load_segmenter(second["model_dir"])
    assert plan2.training["init_model"] == str(first["model_dir"]) and plan2.unet == plan.unet
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))
    cols = ["method", "source", "class", "n_slices"]  # the same held-out slices, scored again
    assert second["summary"][cols].equals(first["summary"][cols])


# --- the full public sets in the segmentation manifest (layouts that mimic them) ---------------------------


def _hu_head_volume(lesion_slices: tuple[int, ...], n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """A (x, y, z) HU volume of synthetic heads (air, skull, brain) with a 70-HU clot off centre on
    ``lesion_slices``, and its BHSD-style mask (2 = intraparenchymal)."""
    img, r, d = _synthetic_head()
    head = np.where(r < 90, 1000.0, -1000.0)
    head[r < 80] = 35.0
    vol = np.repeat(head[..., None], n, axis=2).astype(np.int16)
    mask = np.zeros(vol.shape, np.uint8)
    for k in lesion_slices:
        vol[..., k][d < 12] = 70
        mask[..., k][d < 12] = 2
    return vol, mask


def _save_nii(path, data, affine):
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))


def test_full_bhsd_volumes_become_slice_rows_whose_masks_lie_on_their_pixels(tmp_path, data_root):
    """Volume rows expand to lesion slices + sampled lesion-free ones; bhsd-mini is replaced; image and mask of
    a flipped (LPS-like) affine come back in one grid, so the clot label sits on the clot's pixels."""
    from strokescan.datasets.lesion_masks import build_segmentation_manifest, row_slice
    from strokescan.training.segmenter import prepare_sample

    flipped = np.diag([-0.5, -0.5, 5.0, 1.0])
    vol, mask = _hu_head_volume((2, 3))
    _save_nii(tmp_path / "images" / "ID_a.nii.gz", vol, flipped)
    _save_nii(tmp_path / "ground truths" / "ID_a.nii.gz", mask, flipped)
    vol_b, mask_b = _hu_head_volume(())
    _save_nii(tmp_path / "images" / "ID_b.nii.gz", vol_b, flipped)
    _save_nii(tmp_path / "ground truths" / "ID_b.nii.gz", mask_b, flipped)
    m = build_segmentation_manifest(data_root, sources=("bhsd-mini",), ctich_negatives_per_patient=1,
                                    public={"bhsd": tmp_path})
    assert set(m["source"]) == {"bhsd"}  # the mini set cut from BHSD is replaced
    by_patient = m.groupby("patient")["label"].agg(list).to_dict()
    assert sorted(by_patient["bhsd:ID_a"]) == [0, 1, 1] and by_patient["bhsd:ID_b"] == [0]
    for _, row in m[m["label"] == 1].iterrows():
        pixels, is_hu = row_slice(row)
        ms = decode_sample(row)
        clot = (pixels > 60) & (pixels < 100)
        assert is_hu and ms.labelled.tolist() == [True, True, False, True]
        assert _dice(ms.target == HEMORRHAGE, clot) == 1.0
        img, target, unknown, _, _ = prepare_sample(row, SlicePlan(size=64), 0.0)
        assert (target == HEMORRHAGE).sum() > 10 and not unknown[target > 0].any()
    bad = tmp_path / "ground truths" / "ID_b.nii.gz"
    for data, affine in ((mask_b[:, :, :4], flipped), (mask_b, np.diag([0.5, 0.5, 5.0, 1.0]))):
        _save_nii(bad, data, affine)  # fewer slices; the same voxels in another orientation (RAS, not LPS)
        with pytest.raises(DataError, match="does not match"):
            build_segmentation_manifest(data_root, sources=(), public={"bhsd": tmp_path})
    with pytest.raises(DataError, match="not a segmentation set"):
        build_segmentation_manifest(data_root, sources=(), public={"rsna-ich": tmp_path})


def test_ctich_nifti_shares_ctich_kaggle_patients_and_their_folds(tmp_path, data_root):
    from strokescan.datasets.lesion_masks import build_segmentation_manifest, make_source_folds

    eye = np.diag([0.5, 0.5, 5.0, 1.0])
    rows = ["PatientNumber,SliceNumber,Intraventricular,Intraparenchymal,Subarachnoid,Epidural,Subdural,No_Hemorrhage"]
    for p in (50, 51, 52):  # (49 has no slice labels in ctich-kaggle, so no lesion-free rows there)
        vol, mask = _hu_head_volume((3,) if p == 50 else ())
        _save_nii(tmp_path / "ct_scans" / f"{p:03d}.nii", vol, eye)
        _save_nii(tmp_path / "masks" / f"{p:03d}.nii", (mask > 0).astype(np.uint8), eye)
        rows += [f"{p},{s},0,0,0,0,0,1" for s in range(1, 7)]
    (tmp_path / "hemorrhage_diagnosis_raw_ct.csv").write_text("\n".join(rows) + "\n")
    m = build_segmentation_manifest(data_root, sources=("ctich-kaggle",), public={"ctich-nifti": tmp_path})
    nifti = m[m["source"] == "ctich-nifti"]
    assert set(nifti["patient"]) == {"ctich-kaggle:50", "ctich-kaggle:51", "ctich-kaggle:52"}
    assert set(nifti["patient"]) <= set(m.loc[m["source"] == "ctich-kaggle", "patient"])
    assert nifti.loc[nifti["label"] == 1, "frame"].tolist() == [3]
    folds = make_source_folds(m, n_folds=5)["folds"]
    placed = [p for ps in folds.values() for p in ps]
    assert len(placed) == len(set(placed)) == m["patient"].nunique()  # each person in exactly one fold


def test_teknofest_rows_label_by_class_folder(tmp_path, data_root):
    from PIL import Image

    from strokescan.datasets.lesion_masks import build_segmentation_manifest

    def png(path, arr):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(path)

    blank, spot = np.zeros((16, 16), np.uint8), np.zeros((16, 16), np.uint8)
    spot[4:8, 4:8] = 255
    for cls, stem in (("INMEYOK", "1"), ("ISKEMI", "2"), ("KANAMA", "3")):
        png(tmp_path / "TRAINING" / cls / "PNG" / f"{stem}.png", blank + 80)
        if cls != "INMEYOK":
            png(tmp_path / "TRAINING" / cls / "MASK" / f"{stem}.png", spot)
    m = build_segmentation_manifest(data_root, sources=(), public={"teknofest": tmp_path}).set_index("source_patient")
    expect = {"1": (None, [True, True, True, True]), "2": (INFARCT, [True, False, False, True]),
              "3": (HEMORRHAGE, [True, True, False, False])}
    for stem, (cls, labelled) in expect.items():
        ms = decode_sample(m.loc[stem], shape=(16, 16))
        assert ms.labelled.tolist() == labelled
        assert (ms.target > 0).sum() == (0 if cls is None else 16) and set(np.unique(ms.target)) <= {0, cls or 0}
    (tmp_path / "TRAINING" / "KANAMA" / "MASK" / "3.png").unlink()  # a stroke image without its mask: left out
    assert set(build_segmentation_manifest(data_root, sources=(), public={"teknofest": tmp_path})["source_patient"]) == {"1", "2"}


def _script(name: str):
    """A module of studies/ loaded by path (studies/ is not a package)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "studies" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_segmenter_refuses_a_bad_public_set_in_one_line(tmp_path, capsys):
    from strokescan.app.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["train", "segmenter", "--out", str(tmp_path / "a"), "--public", "rsna-ich=/x"])
    assert exc.value.code == 2 and "NAME=FOLDER" in capsys.readouterr().err
    assert main(["train", "segmenter", "--out", str(tmp_path / "b"), "--public", f"bhsd={tmp_path / 'missing'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("strokescan: error:") and "missing" in err and len(err.splitlines()) == 1


def test_compare_runs_pairs_held_out_slices_and_refuses_runs_with_other_folds(tmp_path, capsys):
    script = _script("compare_segmentation_runs")
    rows = [{"method": "unet", "source": "bhsd-mini", "patient": f"p{i}", "image_path": f"{i}.png",
             "class": "hemorrhage", "true_px": 50, "dice": d} for i, d in enumerate((0.6, 0.7, 0.8))]
    for run, shift in (("a", 0.0), ("b", 0.2)):
        (tmp_path / run / "fold0").mkdir(parents=True)
        pd.DataFrame([{**r, "dice": r["dice"] - shift} for r in rows]).to_csv(tmp_path / run / "fold0" / "per_slice.csv")
        (tmp_path / run / "folds.json").write_text(json.dumps({"folds": {"0": ["p0", "p1", "p2"]}}))
    assert script.main([str(tmp_path / "a"), str(tmp_path / "b"), "--names", "aug", "noaug", "--bootstrap", "20"]) == 0
    out = capsys.readouterr().out
    assert "aug minus noaug" in out and "| bhsd-mini | hemorrhage | 3 | 3 | 0.700 | 0.500 | 0.200 [0.20, 0.20] |" in out
    (tmp_path / "b" / "folds.json").write_text(json.dumps({"folds": {"0": ["p0"]}}))
    assert script.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "do not share one folds.json" in capsys.readouterr().err


def test_flip_tta_check_refuses_the_held_out_fold(tmp_path, capsys):
    held_out = load_segmenter(DEFAULT_SEGMENTER_DIR)[1].training["test_fold"]
    assert _script("segmentation_flip_tta").main(["--folds", str(tmp_path / "f.json"), "--fold", str(held_out)]) == 2
    assert "held-out fold" in capsys.readouterr().err


def test_run_training_refuses_folds_that_miss_patients_of_this_run(tmp_path, data_root):
    """A resumed run whose sets changed (e.g. another --public) would train its new patients in every fold."""
    from strokescan.training.segmenter import SegTrainConfig, run_training

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "folds.json").write_text(json.dumps({"n_folds": 3, "folds": {"0": ["x"], "1": [], "2": []}}))
    with pytest.raises(DataError, match="in no fold"):
        run_training(tmp_path / "run", SegTrainConfig(max_epochs=1), unet=TINY, n_folds=3, limit_per_source=1,
                     root=data_root)


def test_fine_tuning_split_check_allows_declared_new_patients_only():
    from strokescan.training.segmenter import _check_same_split, folds_sha256

    old = {"folds": {"0": ["a", "b"], "1": ["c"], "2": ["d"]}}
    plan = {"folds_sha256": folds_sha256(old), "test_fold": 0}
    _check_same_split(plan, old, (0,))
    grown = {"folds": {"0": ["a", "b"], "1": ["c"], "2": ["d", "new"]}, "added_patients": ["new"]}
    _check_same_split(plan, grown, (0,))  # a new patient in a training fold: the rest is unchanged
    _check_same_split({"folds_sha256": folds_sha256(grown), "test_fold": 0}, grown, (0,))  # made on these folds
    moved = {"folds": {"0": ["a"], "1": ["c"], "2": ["d", "b"]}, "added_patients": ["new"]}
    with pytest.raises(DataError, match="would leak"):
        _check_same_split(plan, moved, (0,))  # b changed side
    hidden = {"folds": {"0": ["a"], "1": ["c"], "2": ["d", "b"]}, "added_patients": ["b"]}
    with pytest.raises(DataError, match="would leak"):
        _check_same_split(plan, hidden, (0,))  # declaring an old patient "new" cannot hide that it moved
    with pytest.raises(DataError, match="would leak"):
        _check_same_split(plan, old, (1,))  # another held-out fold


def test_clot_decision_weights_the_clot_and_drops_weak_components():
    from strokescan.inference.segmenter import decide_clot

    probs = np.zeros((4, 20, 20), np.float32)
    probs[0] = 1.0
    probs[:, 2:5, 2:5], probs[HEMORRHAGE, 2:5, 2:5], probs[0, 2:5, 2:5] = 0, 0.65, 0.35  # weak clot (peak 0.65)
    probs[:, 10:15, 10:15], probs[HEMORRHAGE, 10:15, 10:15], probs[EDEMA, 10:15, 10:15] = 0, 0.95, 0.05  # sure clot
    probs[:, 17:19, 17:19], probs[HEMORRHAGE, 17:19, 17:19], probs[EDEMA, 17:19, 17:19] = 0, 0.4, 0.6  # edema, just

    def areas(weight, confidence):
        ids = decide_clot(probs, weight, confidence).argmax(0)
        return int((ids == HEMORRHAGE).sum()), int((ids == EDEMA).sum())

    assert decide_clot(probs) is probs  # the defaults (every model before v0.4.1) change nothing
    assert areas(1.0, 0.0) == (9 + 25, 4)
    assert areas(1.0, 0.7) == (25, 4)  # the weak component goes to the background
    assert areas(2.0, 0.0) == (9 + 25 + 4, 0)  # weighted, the clot takes the edema square
    assert areas(2.0, 0.7) == (25, 4)  # ...whose own peak (0.4) is too weak: edema again
    text = SegmenterPlan().to_json()
    old = {k: v for k, v in json.loads(text).items() if k not in ("hemorrhage_weight", "min_hemorrhage_confidence")}
    plan = SegmenterPlan.from_json(json.dumps(old))  # a plan written before the fields existed
    assert (plan.hemorrhage_weight, plan.min_hemorrhage_confidence) == (1.0, 0.0)


def test_clot_calibration_refuses_the_held_out_fold_and_a_foreign_split(tmp_path, capsys):
    script = _script("calibrate_segmenter")
    held_out = load_segmenter(DEFAULT_SEGMENTER_DIR)[1].training["test_fold"]
    assert script.main(["--fold", str(held_out)]) == 2
    assert "held-out fold" in capsys.readouterr().err
    (tmp_path / "f.json").write_text(json.dumps({"n_folds": 2, "seed": 1, "folds": {"0": ["p0"], "1": ["p1"]}}))
    assert script.main(["--fold", "1", "--folds", str(tmp_path / "f.json")]) == 2
    assert "not the split" in capsys.readouterr().err


def test_clot_calibration_on_a_cv_takes_one_finished_model_per_fold_of_the_split(tmp_path, capsys):
    script = _script("calibrate_segmenter")
    assert script.main(["--cv", str(tmp_path)]) == 2
    assert "no finished fold model" in capsys.readouterr().err
    assert script.main(["--fold", "1", "--cv", str(tmp_path)]) == 2
    assert "either --fold" in capsys.readouterr().err
    model, plan = load_segmenter(DEFAULT_SEGMENTER_DIR)

    def fold_model(run: str, k: int, **training) -> None:
        fields = {**plan.training, "test_fold": k, "val_fold": (k + 1) % 5, **training}
        save_segmenter(model, dataclasses.replace(plan, training=fields), tmp_path / run / f"fold{k}" / "model")

    fold_model("a", 0)
    (tmp_path / "a" / "fold2").mkdir()  # a fold still training: no model yet, not counted
    fold_model("b", 0)
    assert script.main(["--cv", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "two fold models hold out fold 0" in capsys.readouterr().err
    fold_model("c", 1, folds_sha256="0" * 64)
    assert script.main(["--cv", str(tmp_path / "a"), str(tmp_path / "c")]) == 2
    assert "not trained on the split" in capsys.readouterr().err


def test_clinical_figures_pool_the_folds_of_several_runs_and_refuse_a_slice_held_out_twice(tmp_path, capsys, data_root):
    script = _script("segmentation_clinical_figures")  # it reads the ctich-masks subtypes: skipped without data

    def fold_table(run: str, k: int, dice: float) -> None:
        rows = []
        for p in range(3):  # three ctich patients with a clot slice and a lesion-free slice each, one phe-sich slice
            for method, d in (("unet", dice), ("threshold", 0.2)):
                patient = f"ctich-kaggle:{k}{p}"
                rows += [dict(source="ctich-masks", patient=patient, image_path=f"/x/{k}{p}_1.jpg", frame=-1,
                              method=method, **{"class": "hemorrhage"}, true_px=500, pred_px=400, dice=d, found=1,
                              lesions=1, fold=k),
                         dict(source="ctich-masks", patient=patient, image_path=f"/x/{k}{p}_2.jpg", frame=-1,
                              method=method, **{"class": "hemorrhage"}, true_px=0, pred_px=(p == 0) * 30,
                              dice=float("nan"), found=0, lesions=0, fold=k)]
            rows.append(dict(source="phe-sich", patient=f"phe-sich:{k}{p}", image_path=f"/y/{k}{p}.png", frame=-1,
                             method="unet", **{"class": "edema"}, true_px=900, pred_px=800, dice=0.5, found=1,
                             lesions=1, fold=k))
        (tmp_path / run / f"fold{k}").mkdir(parents=True)
        pd.DataFrame(rows).to_csv(tmp_path / run / f"fold{k}" / "per_slice.csv", index=False)

    fold_table("a", 0, 0.6)
    fold_table("b", 1, 0.4)
    assert script.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    text = capsys.readouterr().out
    assert "| 0 | 3 | 0.600 (3) | 0.333 (3) | n/a | 0.500 (3) | n/a |" in text  # fold 0: 1 of 3 lesion-free painted
    assert "| pooled | 6 | 0.500 (6) | 0.333 (6) |" in text
    assert "| ctich-masks | hemorrhage | 6 (6) | 0.500 | 0.200 | +0.300" in text  # paired with the baseline
    fold_table("c", 1, 0.4)
    assert script.main([str(tmp_path / "b"), str(tmp_path / "c")]) == 2
    assert "held out in two" in capsys.readouterr().err


def test_clot_growth_fills_the_hyperdense_clot_around_the_network_seed_only():
    from strokescan.inference.segmenter import clot_decision_text, grow_clot

    pixels = np.full((200, 200), 0, np.uint8)
    yy, xx = np.mgrid[:200, :200]
    pixels[(yy - 100) ** 2 + (xx - 100) ** 2 < 85 ** 2] = 255  # skull
    pixels[(yy - 100) ** 2 + (xx - 100) ** 2 < 78 ** 2] = 90  # brain
    rng = np.random.default_rng(0)
    pixels = np.clip(pixels.astype(int) + rng.integers(-4, 5, pixels.shape) * (pixels == 90), 0, 255).astype(np.uint8)
    pixels[(yy - 100) ** 2 + (xx - 80) ** 2 < 12 ** 2] = 170  # a clot: the seed covers its centre only
    pixels[(yy - 100) ** 2 + (xx - 130) ** 2 < 8 ** 2] = 170  # a second clot the network missed
    ids = np.zeros_like(pixels)
    ids[(yy - 100) ** 2 + (xx - 80) ** 2 < 5 ** 2] = HEMORRHAGE
    ids[60:64, 60:64] = EDEMA
    brain = head_masks(pixels, False).brain
    assert grow_clot(ids, pixels, False, brain, 0.0, 10) is ids  # off by default
    grown = grow_clot(ids, pixels, False, brain, 2.0, 20)
    clot = (yy - 100) ** 2 + (xx - 80) ** 2 < 12 ** 2
    assert (grown == HEMORRHAGE).sum() > 3 * (ids == HEMORRHAGE).sum()
    assert _dice(grown == HEMORRHAGE, clot) > 0.8  # the whole clot, not the brain around it
    assert not (grown[(yy - 100) ** 2 + (xx - 130) ** 2 < 8 ** 2] == HEMORRHAGE).any()  # no new lesion
    assert (grown[60:64, 60:64] == EDEMA).all()
    near = grow_clot(ids, pixels, False, brain, 2.0, 3)  # at most 3 px from the seed
    assert (near == HEMORRHAGE).sum() < (grown == HEMORRHAGE).sum()
    plan = SegmenterPlan(hemorrhage_weight=3.0, min_hemorrhage_confidence=0.95, clot_growth_k=2.0, clot_growth_px=10)
    assert clot_decision_text(plan) == "weight 3, min confidence 0.95, growth k 2 within 10 px"
    assert clot_decision_text(SegmenterPlan()) == "weight 1, min confidence 0"


def test_clot_inside_the_skull_and_the_detector_gate_in_the_shared_mask_step():
    from strokescan.inference.segmenter import clot_decision_text, to_input_mask

    yy, xx = np.mgrid[:200, :200]
    pixels = np.zeros((200, 200), np.uint8)
    pixels[(yy - 100) ** 2 + (xx - 100) ** 2 < 85 ** 2] = 255  # skull
    pixels[(yy - 100) ** 2 + (xx - 100) ** 2 < 78 ** 2] = 90  # brain
    pixels[(yy - 100) ** 2 + (xx - 100) ** 2 >= 85 ** 2] = 60  # scalp and face: head, not skull cavity
    pixels[(yy - 100) ** 2 + (xx - 100) ** 2 >= 97 ** 2] = 0  # air
    probs = np.zeros((4, 200, 200), np.float32)
    probs[0] = 1.0
    inside = (yy - 100) ** 2 + (xx - 70) ** 2 < 10 ** 2
    outside = (np.abs(yy - 100) < 4) & (np.abs(xx - 190) < 4)  # in the scalp, 5 px beyond the skull
    for region in (inside, outside):
        probs[0][region], probs[HEMORRHAGE][region] = 0.0, 1.0
    box = (0, 0, 200, 200)
    plain = to_input_mask(probs, box, 0.0, pixels, False, SegmenterPlan(min_lesion_px=1))
    assert (plain[inside] == HEMORRHAGE).all() and not plain[outside].any()  # no lesion outside the skull, ever
    skull = SegmenterPlan(min_lesion_px=1, clot_within_brain_px=0)
    within = to_input_mask(probs, box, 0.0, pixels, False, skull)
    assert (within[inside] == HEMORRHAGE).all() and not within[outside].any()
    assert (to_input_mask(probs, box, 0.0, pixels, False, dataclasses.replace(skull, clot_within_brain_px=20))
            [outside] == HEMORRHAGE).all()  # the cavity grown by 20 px reaches it
    gate = SegmenterPlan(min_lesion_px=1, min_slice_probability=0.2)
    assert not (to_input_mask(probs, box, 0.0, pixels, False, gate, slice_probability=0.1) == HEMORRHAGE).any()
    assert (to_input_mask(probs, box, 0.0, pixels, False, gate, slice_probability=0.3)[inside] == HEMORRHAGE).all()
    assert (to_input_mask(probs, box, 0.0, pixels, False, gate)[inside] == HEMORRHAGE).all()  # no detector: no gate
    assert clot_decision_text(skull) == "weight 1, min confidence 0, inside the skull + 0 px"
    assert clot_decision_text(gate, gated=True) == "weight 1, min confidence 0, detector gate 0.2"
    assert clot_decision_text(gate) == "weight 1, min confidence 0, detector gate 0.2 (off: other detector)"
