"""Explanations of the hemorrhage detector, checked against reference lesions on held-out patients (issue 17).

The bundled detector trained on every patient of ctich-kaggle, phe-sich and bhsd-mini, so no patient is held
out from it. This script therefore retrains ONE cross-validation fold's detector from the cached trunk features
(the recipe of ``strokescan train classifier --protocol all``: :func:`strokescan.training.detection.train_detector`
with ``DetectorConfig()``; test fold K, early stopping on fold K+1, the other three folds train), checks that
it reproduces that fold's out-of-fold logits (``runs/detect_all/fold_K.json``), and evaluates the explanations
on fold K's patients, which the retrained model never saw. It also trains the label-randomisation control (the
same recipe on the same training rows with their labels permuted, for the trained model's number of epochs).

    nice -n 10 .venv/bin/python studies/explanation_figures.py              # fold 0, writes reports/explanations/
    nice -n 10 .venv/bin/python studies/explanation_figures.py --fold 2 --occlusion-slices 10

Training takes a few minutes per model on one thread (models are cached under
``$STROKESCAN_CACHE/explanations/fold_K``); the evaluation about as long.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from strokescan.config import SEED, cache_root
from strokescan.models.classifier import ClassifierPlan, save_classifier
from strokescan.preprocessing.pipeline import SlicePlan

log = logging.getLogger("explanation_figures")
ROOT = Path(__file__).resolve().parents[1]
REPORT_DIR = ROOT / "reports" / "explanations"
RUN_DIR = ROOT / "runs" / "detect_all"


# ----------------------------------------------------------------------------------------------------------
# The held-out fold's models


def _save(model, folder: Path, calibrators: dict, points: dict, training: dict) -> None:
    plan = ClassifierPlan(slice_plan=SlicePlan(), calibration={n: c.to_dict() for n, c in calibrators.items()},
                          operating_points=points, scan_score="max", training=training)
    save_classifier(model, plan, folder)


def fold_models(fold: int, work: Path, retrain: bool = False, shuffled: bool = True) -> dict:
    """Train (or reuse) the fold's detector and (``shuffled``) its label-shuffled twin; returns their folders
    and facts."""
    from strokescan.training.detection import (
        DetectorConfig,
        calibrate,
        fit_calibrators,
        label_matrix,
        operating_points,
        predict_runs,
        scan_frame,
        scan_runs,
        train_detector,
    )
    from strokescan.training.detection_data import SOURCES, cached_detection_features, detection_folds, detection_manifest

    trained_dir, shuffled_dir = work / "trained", work / "shuffled"
    info_file = work / "models.json"
    if info_file.exists() and not retrain:
        info = json.loads(info_file.read_text())
        if "trained" in info and (not shuffled or "shuffled" in info):
            return info
    cfg = DetectorConfig()
    manifest = detection_manifest()
    feats, brain = cached_detection_features(manifest, SlicePlan(), cfg.n_views, cfg.seed)
    row_fold = manifest["patient"].map(detection_folds(manifest)).to_numpy(int)
    labels = label_matrix(manifest)
    n_folds = int(row_fold.max()) + 1
    val_k = (fold + 1) % n_folds
    trainable = manifest["source"].isin(SOURCES).to_numpy() & ~np.isnan(labels[:, 0])
    train = np.flatnonzero(trainable & (row_fold != fold) & (row_fold != val_k))
    val = np.flatnonzero(trainable & (row_fold == val_k))
    test = np.flatnonzero(row_fold == fold)
    info: dict = {"fold": fold, "val_fold": val_k, "n_train_slices": int(train.size),
                  "n_train_patients": int(manifest.iloc[train]["patient"].nunique()),
                  "test_patients": sorted(manifest.iloc[test]["patient"].unique().tolist()),
                  "val_patients": sorted(manifest.iloc[val]["patient"].unique().tolist())}

    def finish(model, name: str, folder: Path, extra: dict) -> None:
        both = np.concatenate([val, test])
        logits = predict_runs(model, feats[0], scan_runs(manifest, both), len(labels))
        cals = fit_calibrators(logits[val], labels[val])
        prob = calibrate(logits, cals)
        y = labels[val, 0]
        sb = brain[val] >= cfg.min_brain_fraction
        known = ~np.isnan(y) & sb
        scans = scan_frame(manifest.iloc[val], prob[val, 0], brain[val], cfg.min_brain_fraction, "max")
        scans = scans[scans["label"].notna()]
        points = operating_points(y[known].astype(int), prob[val, 0][known], scans["label"].to_numpy(int),
                                  scans["score"].to_numpy(), cfg.target_sensitivity)
        _save(model, folder, cals, points, {"protocol": "all", "sources": list(SOURCES), "fold": fold,
                                            "val_fold": val_k, "model": name, **extra})
        info[name] = {"folder": str(folder), "test_logits_any": logits[test, 0].tolist(), **extra}

    t0 = time.time()
    model, best_epoch, history = train_detector(feats, labels, scan_runs(manifest, train), scan_runs(manifest, val),
                                                cfg, desc=f"fold {fold}")
    finish(model, "trained", trained_dir, {"best_epoch": best_epoch, "history": history,
                                           "train_seconds": round(time.time() - t0, 1)})
    reference = RUN_DIR / f"fold_{fold}.json"
    if reference.exists():  # does the retrained model reproduce the cross-validation run's fold?
        ref = json.loads(reference.read_text())
        ref_logits = dict(zip(ref["rows"], np.asarray(ref["logits"], float)[:, 0]))
        mine = np.asarray(info["trained"]["test_logits_any"])
        theirs = np.array([ref_logits.get(int(r), np.nan) for r in test])
        ok = ~np.isnan(theirs)
        info["reproduces_cv_fold"] = {
            "reference": str(reference.relative_to(ROOT)), "reference_best_epoch": ref["best_epoch"],
            "max_abs_logit_diff": float(np.max(np.abs(mine[ok] - theirs[ok]))) if ok.any() else None,
            "pearson": float(np.corrcoef(mine[ok], theirs[ok])[0, 1]) if ok.sum() > 2 else None}
    if not shuffled:
        info_file.write_text(json.dumps(info, indent=1))
        return info
    # label randomisation: the same recipe on the same training rows, labels permuted across them
    rng = np.random.default_rng(SEED + 17)
    shuffled_labels = labels.copy()
    shuffled_labels[train] = labels[rng.permutation(train)]
    t0 = time.time()
    model, _, history = train_detector(feats, shuffled_labels, scan_runs(manifest, train), None, cfg,
                                       epochs=best_epoch, desc=f"fold {fold} shuffled labels")
    finish(model, "shuffled", shuffled_dir, {"epochs": best_epoch, "history": history,
                                             "label_permutation_seed": SEED + 17,
                                             "train_seconds": round(time.time() - t0, 1)})
    info_file.write_text(json.dumps(info, indent=1))
    return info


# ----------------------------------------------------------------------------------------------------------
# Reference lesions of held-out slices

CANDIDATES = (("gradcam", "head"), ("gradcam", "block13"), ("gradcam", "block10"), ("gradcam", "block7"),
              ("gradcampp", "head"), ("vanillagrad", None), ("smoothgrad", None))
BASELINES = ("brain_mask", "blood_channel", "blood_channel_smoothed")


def cname(method: str, layer: str | None) -> str:
    return f"{method}@{layer}" if layer else method


@dataclass
class Case:
    """One held-out slice with its reference lesion, everything on the slice's own pixel grid."""

    source: str
    patient: str
    fold: int
    image_path: str
    slice_index: int
    prepared: object  # PreparedScan
    lesion: np.ndarray  # bool: ctich clot mask, or the union of the phe-sich boxes
    region: np.ndarray  # lesion dilated by TOLERANCE_PX
    clot: np.ndarray | None  # phe-sich: the derived clot (a second, tighter reference)
    brain: np.ndarray
    head: np.ndarray  # the head mask (brain, skull, scalp)
    blood: np.ndarray  # the detector's blood channel mapped back
    subtypes: list[str]
    lesion_share: float  # lesion area / brain area

    @property
    def key(self) -> str:
        return f"{self.patient}/{Path(self.image_path).name}"


def reference_slices(folds: set[int]):
    """Metadata of the positive ctich-masks slices and boxed phe-sich slices of patients in ``folds``, with each
    patient's fold and the phe-sich training angles; and the detection manifest."""
    import pandas as pd

    from strokescan.datasets.lesion_masks import training_rotation
    from strokescan.datasets.local import load_ctich_masks, load_phe_sich
    from strokescan.training.detection_data import detection_folds, detection_manifest

    manifest = detection_manifest()
    fold_of = detection_folds(manifest)
    ctich = load_ctich_masks()
    ctich = ctich[ctich["label"] == 1].copy()
    phe = load_phe_sich()
    phe = phe[phe["boxes"].map(lambda b: len(json.loads(b)) > 0)].copy()
    meta = pd.concat([ctich, phe], ignore_index=True)
    meta["fold"] = meta["patient"].map(fold_of)
    meta = meta[meta["fold"].isin(folds)].sort_values(["source", "patient", "slice_index"]).reset_index(drop=True)
    pm = manifest[(manifest["source"] == "phe-sich") & manifest["patient"].isin(meta["patient"])]
    angles = training_rotation(pm) if not pm.empty else {}
    return meta, angles, manifest, fold_of


def build_case(row, angles: dict, plans: list) -> Case:
    from strokescan.core.labels import HEMORRHAGE, HEMORRHAGE_SUBTYPES, LesionClass
    from strokescan.datasets.lesion_masks import decode_sample
    from strokescan.evaluation.explanations import boxes_mask, dilate
    from strokescan.inference.explanations import heat_to_input_grid
    from strokescan.inference.predictor import PreparedScan
    from strokescan.io import load_scan
    from strokescan.preprocessing.masking import head_masks
    from strokescan.preprocessing.pipeline import prepare_slices

    scan = load_scan(row["image_path"])
    shape = tuple(scan.pixels.shape[1:])
    angle = float(angles.get(row["patient"], 0.0))
    slices = prepare_slices(scan.pixels[0], scan.is_hu, plans, angle)
    prepared = PreparedScan(scan=scan, rotation_deg=[angle], for_classifier=[slices[0]],
                            for_segmenter=[slices[1]] if len(slices) > 1 else None)
    clot = None
    if row["source"] == "ctich-masks":
        lesion = decode_sample(row, shape=shape).target == HEMORRHAGE
        subtypes = [s for s in HEMORRHAGE_SUBTYPES if row.get(s) == 1] or ["unspecified"]
    else:
        lesion = boxes_mask(json.loads(row["boxes"]), shape)
        clot = decode_sample(row, shape=shape).target == LesionClass.HEMORRHAGE
        subtypes = ["intraparenchymal (phe-sich)"]
    masks = head_masks(scan.pixels[0], scan.is_hu)
    brain = masks.brain
    p = slices[0]
    blood = heat_to_input_grid(p.channels[2], p.box, p.rotation_deg, shape)
    return Case(source=row["source"], patient=row["patient"], fold=int(row["fold"]), image_path=row["image_path"],
                slice_index=int(row["slice_index"]), prepared=prepared, lesion=lesion, region=dilate(lesion),
                clot=clot, brain=brain, head=masks.head, blood=blood, subtypes=subtypes,
                lesion_share=float(lesion.sum() / max(1, brain.sum())))


def explain_case(predictor, case: Case, method: str, layer: str | None):
    from strokescan.inference.explanations import explain_slices

    return explain_slices(predictor, case.prepared, method, "any", layer=layer or "head")[0]


def score_case(case: Case, hm, prefix: str) -> dict:
    """Pointing hit and energy share of one map; whether its peak lies in the brain (dilated 5 px); the hit of
    the map restricted to that brain (a display variant, not the model's own map); phe-sich: the hit against the
    derived clot."""
    from strokescan.evaluation.explanations import dilate, localisation, pointing_hit
    from strokescan.inference.explanations import map_peak

    out = {f"{prefix}_{k}": v for k, v in localisation(hm.heat, hm.peak, case.lesion, region=case.region).items()}
    out[f"{prefix}_peak"] = list(hm.peak) if hm.peak is not None else None
    brain = dilate(case.brain)
    out[f"{prefix}_peak_in_brain"] = float(hm.peak is not None and brain[hm.peak])
    out[f"{prefix}_peak_outside_head"] = float(hm.peak is None or not dilate(case.head)[hm.peak])
    out[f"{prefix}_inbrain_hit"] = pointing_hit(map_peak(hm.heat * brain), case.lesion, region=case.region)
    if case.clot is not None and case.clot.any():
        out[f"{prefix}_clot_hit"] = localisation(hm.heat, hm.peak, case.clot, region=dilate(case.clot))["hit"]
    return out


# ----------------------------------------------------------------------------------------------------------
# Pictures


def _display(case: Case) -> np.ndarray:
    from strokescan.core.windows import display_unit

    return display_unit(case.prepared.scan.pixels[0], case.prepared.scan.is_hu)


def overlay_png(case: Case, heat: np.ndarray, peak, title: str, path: Path, second: tuple | None = None) -> None:
    """Image with the reference outline (green), beside the heat map overlay with the peak (white cross)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("image + reference", None, None), (title, heat, peak)] + ([second] if second else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), dpi=80)
    img = _display(case)
    for ax, (name, h, pk) in zip(axes, panels):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        if h is not None:
            ax.imshow(np.ma.masked_less(h, 0.05), cmap="jet", alpha=0.45, vmin=0, vmax=1)
        ax.contour(case.lesion, levels=[0.5], colors="lime", linewidths=0.8)
        if case.clot is not None and case.clot.any():
            ax.contour(case.clot, levels=[0.5], colors="magenta", linewidths=0.6)
        if pk is not None:
            ax.plot(pk[1], pk[0], "w+", markersize=12, markeredgewidth=2)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def strip_png(maps: list[tuple[str, np.ndarray]], background: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(maps), figsize=(1.6 * len(maps), 2.0), dpi=80)
    for ax, (name, h) in zip(axes, maps):
        ax.imshow(background, cmap="gray", vmin=0, vmax=1)
        ax.imshow(h, cmap="jet", alpha=0.5, vmin=0, vmax=1)
        ax.set_title(name, fontsize=6)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------------
# The run


def _progress(what: str, n: int, every: int = 25) -> None:
    if n % every == 0:
        import gc
        import resource

        gc.collect()
        log.info("%s: %d slices (max RSS %.0f MB)", what, n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def _load_predictor(folder: str, segment: bool = False, threads: int = 1):
    from strokescan.inference.predictor import Predictor

    return Predictor(Path(folder), segment=segment, threads=threads)


def evaluate(folds: list[int], models: dict[int, dict], n_occlusion: int, n_random: int, out_dir: Path,
             stage_dir: Path | None = None) -> dict:
    """The whole evaluation. The validation scores, the sanity checks and the test scores are kept in
    ``stage_dir`` as they finish (keyed by the folds, candidates and sample sizes), so that a run killed later
    resumes after the last finished stage."""
    import pandas as pd

    from strokescan.core.calibration import PlattCalibrator
    from strokescan.evaluation import explanations as ev
    from strokescan.inference.explanations import model_frame_maps

    n_folds = 5
    val_of = {k: (k + 1) % n_folds for k in folds}
    meta, angles, manifest, fold_of = reference_slices(set(folds) | set(val_of.values()))
    plan = SlicePlan()
    summary: dict = {"folds": folds, "val_folds": val_of, "tolerance_px": ev.TOLERANCE_PX}
    key = json.dumps({"folds": folds, "candidates": CANDIDATES, "n_random": n_random, "seed": SEED})
    stage = None
    if stage_dir is not None:
        stage = stage_dir / hashlib.sha256(key.encode()).hexdigest()[:12]
        stage.mkdir(parents=True, exist_ok=True)
        (stage / "key.json").write_text(key)

    # 1. score every candidate on the validation folds (never the test folds)
    t0 = time.time()
    val_rows = []
    val_file = stage / "val.csv" if stage else None
    for k in (folds if not (val_file and val_file.exists()) else []):
        pred = _load_predictor(models[k]["trained"]["folder"])
        for _, row in meta[meta["fold"] == val_of[k]].iterrows():
            case = build_case(row, angles, [plan])
            rec = {"model_fold": k, "source": case.source, "patient": case.patient, "key": case.key}
            for m, layer in CANDIDATES:
                rec.update(score_case(case, explain_case(pred, case, m, layer), cname(m, layer)))
            val_rows.append(rec)
            _progress("validation", len(val_rows))
    if val_file and val_file.exists():
        val = pd.read_csv(val_file)
        log.info("validation scores from %s", val_file)
    else:
        val = pd.DataFrame(val_rows)
        if val_file:
            val.to_csv(val_file, index=False)
    summary["val_seconds"] = round(time.time() - t0, 1)

    # 2. sanity checks (no reference lesion used) on a seeded sample of the validation slices of the first model
    #    that has a label-shuffled twin
    t0 = time.time()
    random_fold = next((k for k in folds if "shuffled" in models[k]), None)
    rng = np.random.default_rng(SEED)
    strips: dict = {}
    summary["randomisation"] = {"fold": random_fold, "pass_rule": f"mean Spearman rank correlation with the trained "
                                f"model's maps < {ev.PASS_SPEARMAN} once every trained layer is re-initialised "
                                f"(cascade step '{ev.LAST_TRAINED_STEP}') and for the label-shuffled model"}
    rand_file = stage / "randomisation.json" if stage else None
    if rand_file and rand_file.exists():
        summary["randomisation"] = json.loads(rand_file.read_text())
        log.info("sanity checks from %s", rand_file)
    elif random_fold is not None:
        pool = [r for _, r in meta[meta["fold"] == val_of[random_fold]].iterrows()]
        pick = sorted(rng.choice(len(pool), size=min(n_random, len(pool)), replace=False).tolist())
        cases = [build_case(pool[i], angles, [plan]) for i in pick]
        x = torch.from_numpy(np.stack([c.prepared.for_classifier[0].channels for c in cases]))
        trained = _load_predictor(models[random_fold]["trained"]["folder"]).model
        shuffled_model = _load_predictor(models[random_fold]["shuffled"]["folder"]).model
        per_method = {}
        for m, layer in CANDIDATES:
            c = cname(m, layer)
            ref, _ = model_frame_maps(trained, x, m, 0, layer or "head")
            steps = []
            strips[c] = [("trained", ref[0])]
            for step, randomised in ev.cascading_randomisation(trained):
                maps, _ = model_frame_maps(randomised, x, m, 0, layer or "head")
                steps.append(ev.summarise_similarity(ev.map_similarity(ref, maps), step))
                strips[c].append((step, maps[0]))
            lab, _ = model_frame_maps(shuffled_model, x, m, 0, layer or "head")
            label_row = ev.summarise_similarity(ev.map_similarity(ref, lab), "label-shuffled model")
            strips[c].append(("labels shuffled", lab[0]))
            last = next(s for s in steps if s["step"] == ev.LAST_TRAINED_STEP)
            per_method[c] = {"cascade": steps, "label_randomisation": label_row,
                             "cascade_pass": bool(last["spearman_mean"] < ev.PASS_SPEARMAN),
                             "label_pass": bool(label_row["spearman_mean"] < ev.PASS_SPEARMAN)}
        summary["randomisation"].update({"n_slices": len(cases), "n_patients": len({c.patient for c in cases}),
                                         "methods": per_method, "seconds": round(time.time() - t0, 1)})
        summary["randomisation"]["slices_from"] = f"validation fold {val_of[random_fold]} (positive reference slices)"
        if rand_file:
            rand_file.write_text(json.dumps(summary["randomisation"], default=_jsonable))
            np.savez_compressed(stage / "strips.npz", background=cases[0].prepared.for_classifier[0].channels[0],
                                **{f"{c}|{i}|{step}": m for c, st in strips.items() for i, (step, m) in enumerate(st)})
    log.info("randomisation done")


    passing = {c for c, v in summary["randomisation"].get("methods", {}).items() if v["cascade_pass"] and v["label_pass"]}
    choice = {}
    for m, layer in CANDIDATES:
        c = cname(m, layer)
        by_source = val.groupby("source")[f"{c}_hit"].mean()
        choice[c] = {"ctich_val_hit": float(by_source.get("ctich-masks", np.nan)),
                     "phe_val_hit": float(by_source.get("phe-sich", np.nan)),
                     "score": float(np.nanmean(by_source.to_numpy())), "passes_sanity_checks": c in passing}
    eligible = [c for c in choice if c in passing] or list(choice)
    primary = max(eligible, key=lambda c: (round(choice[c]["score"], 6), c == "gradcam@head"))
    summary["selection"] = {"rule": "among the methods that pass both sanity checks, the highest mean of the "
                                    "ctich and phe-sich validation-fold pointing games (each model's "
                                    "early-stopping fold K+1; ties: gradcam@head)",
                            "n_val_slices": {s: int(n) for s, n in val["source"].value_counts().items()},
                            "candidates": choice, "chosen": primary, "seconds": round(time.time() - t0, 1)}
    log.info("selection: %s", summary["selection"])
    p_method, p_layer = {cname(m, layer): (m, layer) for m, layer in CANDIDATES}[primary]
    if stage and (stage / "strips.npz").exists():
        saved = np.load(stage / "strips.npz")
        maps = sorted(((int(k.split("|")[1]), k.split("|")[2], saved[k]) for k in saved.files
                       if k.split("|")[0] == primary), key=lambda t: t[0])
        strip_png([(step, m) for _, step, m in maps], saved["background"], out_dir / "randomisation_cascade.png")
    elif strips:
        strip_png(strips[primary], cases[0].prepared.for_classifier[0].channels[0], out_dir / "randomisation_cascade.png")

    # 2. the held-out test folds: candidates, baselines, the label-shuffled model, the detector's probability
    t0 = time.time()
    rows, example_pool = [], []
    logit_of: dict[str, float] = {}
    for k in folds:
        test_rows = np.flatnonzero(manifest["patient"].map(fold_of).to_numpy() == k)
        for path, lg in zip(manifest["image_path"].to_numpy()[test_rows], models[k]["trained"]["test_logits_any"]):
            logit_of[path] = lg
    test_file = stage / f"test_{primary}.csv" if stage else None
    cached_test = bool(test_file and test_file.exists())
    for k in folds:
        if cached_test:
            example_pool.extend(r for _, r in meta[meta["fold"] == k].iterrows())
            continue
        pred = _load_predictor(models[k]["trained"]["folder"])
        cal = PlattCalibrator.from_dict(pred.plan.calibration["any"])
        threshold = pred.plan.threshold("slice", "balanced")
        shuffled = _load_predictor(models[k]["shuffled"]["folder"]) if "shuffled" in models[k] else None
        for _, row in meta[meta["fold"] == k].iterrows():
            case = build_case(row, angles, [plan])
            p_any = float(cal(np.array([logit_of.get(case.image_path, np.nan)]))[0])
            rec = {"model_fold": k, "source": case.source, "patient": case.patient, "key": case.key,
                   "slice_index": case.slice_index, "subtypes": ",".join(case.subtypes),
                   "lesion_share": case.lesion_share, "size": ev.size_bin(case.lesion_share),
                   "lesion_px": int(case.lesion.sum()), "p_any": p_any, "detected": bool(p_any >= threshold),
                   "angle": float(case.prepared.rotation_deg[0])}
            for m, layer in CANDIDATES:
                hm = explain_case(pred, case, m, layer)
                rec.update(score_case(case, hm, cname(m, layer)))
                if cname(m, layer) == primary:
                    rec["explained_logit"] = hm.score
            for name, sc in ev.baseline_scores(case.brain, case.blood, case.lesion).items():
                rec.update({f"{name}_{k2}": v for k2, v in sc.items()})
            if shuffled is not None:
                rec.update(score_case(case, explain_case(shuffled, case, p_method, p_layer), "shuffled"))
            rows.append(rec)
            example_pool.append(row)
            _progress("test", len(rows))
    if cached_test:
        test = pd.read_csv(test_file)
        log.info("test scores from %s", test_file)
    else:
        test = pd.DataFrame(rows)
        if test_file:
            test.to_csv(test_file, index=False)
    test.to_csv(out_dir / "slices.csv", index=False)
    summary["test_seconds"] = round(time.time() - t0, 1)

    def block(frame: pd.DataFrame) -> dict:
        names = [cname(m, layer) for m, layer in CANDIDATES] + list(BASELINES)
        cols = [f"{n}_{q}" for n in names for q in ("hit", "energy")]
        cols += [f"{cname(m, layer)}_{q}" for m, layer in CANDIDATES for q in ("inbrain_hit", "peak_in_brain",
                                                                                  "peak_outside_head")]
        out = {"n_slices": len(frame), "n_patients": int(frame["patient"].nunique()),
               "metrics": ev.mean_with_ci(frame, cols)}
        out["primary_minus_baseline_hit"] = {b: ev.paired_difference(frame, f"{primary}_hit", f"{b}_hit")
                                             for b in BASELINES}
        out["primary_within_brain_minus_baseline_hit"] = {
            b: ev.paired_difference(frame, f"{primary}_inbrain_hit", f"{b}_hit") for b in BASELINES}
        out["primary_minus_baseline_energy"] = {b: ev.paired_difference(frame, f"{primary}_energy", f"{b}_energy")
                                                for b in BASELINES}
        if "shuffled_hit" in frame and frame["shuffled_hit"].notna().any():
            f2 = frame[frame["shuffled_hit"].notna()]
            out["label_shuffled_hit"] = ev.paired_difference(f2, f"{primary}_hit", "shuffled_hit")
        if f"{primary}_clot_hit" in frame and frame[f"{primary}_clot_hit"].notna().any():
            out["primary_hit_vs_derived_clot"] = ev.mean_with_ci(frame[frame[f"{primary}_clot_hit"].notna()],
                                                                 [f"{primary}_clot_hit"])
        return out

    results = {}
    for source, g in test.groupby("source"):
        results[source] = block(g)
        results[source]["detected_only"] = {
            "n_slices": int(g["detected"].sum()),
            "metrics": ev.mean_with_ci(g[g["detected"]], [f"{primary}_hit", "brain_mask_hit", "blood_channel_hit"])}
    summary["test"] = results
    cols = [f"{primary}_hit", f"{primary}_energy", "brain_mask_hit", "blood_channel_hit", "blood_channel_smoothed_hit"]
    by_sub = test.assign(subtype=test["subtypes"].str.split(",")).explode("subtype")
    summary["by_subtype"] = ev.grouped_table(by_sub, "subtype", cols).to_dict("records")
    summary["by_size"] = {s: ev.grouped_table(g, "size", cols).to_dict("records") for s, g in test.groupby("source")}

    # 3. occlusion on a seeded sample of test slices (slow), paired with the primary method on the same slices
    t0 = time.time()
    rng = np.random.default_rng(SEED + 1)
    pick = sorted(rng.choice(len(example_pool), size=min(n_occlusion, len(example_pool)), replace=False).tolist())
    occ_rows = []
    preds = {}
    for i in pick:
        row = example_pool[i]
        k = int(row["fold"])
        preds.setdefault(k, _load_predictor(models[k]["trained"]["folder"]))
        case = build_case(row, angles, [plan])
        t1 = time.time()
        hm = explain_case(preds[k], case, "occlusion", None)
        rec = {"patient": case.patient, "source": case.source, "key": case.key, "seconds": time.time() - t1}
        rec.update(score_case(case, hm, "occlusion"))
        base = test[test["key"] == case.key].iloc[0]
        rec[f"{primary}_hit"], rec[f"{primary}_energy"] = base[f"{primary}_hit"], base[f"{primary}_energy"]
        rec["brain_mask_hit"] = base["brain_mask_hit"]
        occ_rows.append(rec)
    occ = pd.DataFrame(occ_rows)
    summary["occlusion"] = {
        "n_slices": len(occ), "n_patients": int(occ["patient"].nunique()) if len(occ) else 0,
        "sources": occ["source"].value_counts().to_dict() if len(occ) else {},
        "seconds_per_slice_1_thread": float(occ["seconds"].median()) if len(occ) else None,
        "occlusion_minus_primary_hit": ev.paired_difference(occ, "occlusion_hit", f"{primary}_hit") if len(occ) else None,
        "occlusion_minus_brain_mask_hit": ev.paired_difference(occ, "occlusion_hit", "brain_mask_hit") if len(occ) else None,
        "occlusion_energy": ev.mean_with_ci(occ, ["occlusion_energy", f"{primary}_energy"]) if len(occ) else None,
        "seconds": round(time.time() - t0, 1)}
    log.info("occlusion: %s", summary["occlusion"])

    # 5. example pictures: hits and failures of the primary method, each source
    examples = []
    for source in ("ctich-masks", "phe-sich"):
        g = test[test["source"] == source]
        hits = g[g[f"{primary}_hit"] == 1].sort_values("p_any", ascending=False).head(2 if source == "ctich-masks" else 1)
        misses = g[g[f"{primary}_hit"] == 0].sort_values("p_any", ascending=False).head(2 if source == "ctich-masks" else 1)
        for kind, sel in (("hit", hits), ("miss", misses)):
            for _, r in sel.iterrows():
                row = next(x for x in example_pool if f"{x['patient']}/{Path(x['image_path']).name}" == r["key"])
                k = int(row["fold"])
                preds.setdefault(k, _load_predictor(models[k]["trained"]["folder"]))
                case = build_case(row, angles, [plan])
                hm = explain_case(preds[k], case, p_method, p_layer)
                bl = (f"blood channel (baseline hit {r['blood_channel_hit']:.2f})", case.blood, None)
                name = f"example_{source.split('-')[0]}_{kind}_{len(examples)}.png"
                title = f"{primary}: {kind}, p(any)={r['p_any']:.2f}, {r['subtypes'].split(' ')[0]}, {r['size'].split(' ')[0]}"
                overlay_png(case, hm.heat, hm.peak, title, out_dir / name, bl)
                examples.append({"file": name, "kind": kind, "source": source, "patient": r["patient"],
                                 "subtypes": r["subtypes"], "size": r["size"], "p_any": r["p_any"],
                                 "lesion_px": int(r["lesion_px"]), "energy": r[f"{primary}_energy"]})
    summary["examples"] = examples
    summary["primary"] = primary
    return summary


def timing(model_folder: str, out_dir: Path) -> tuple[dict, dict]:
    """Seconds per slice (median and fastest of several runs after a warm-up) on 2 and on 1 threads: Grad-CAM,
    Grad-CAM++, the gradient maps, occlusion and the segmenter's uncertainty; and an uncertainty example picture.
    The machine is shared: the fastest run is the better estimate of the uncontended cost."""
    import os

    from strokescan.inference.explanations import explain_slices, segmentation_uncertainty
    from strokescan.io import load_scan

    pred = _load_predictor(model_folder, segment=True, threads=2)
    sample = "src/strokescan/samples/phe-sich_0021_13.png"
    scan = load_scan(ROOT / sample)
    prepared = pred.prepare(scan)
    out: dict = {"load_average_1min_before": os.getloadavg()[0], "cpu_count": os.cpu_count(),
                 "input": f"{sample} (one 512 x 512 slice, 224-px model input)"}
    out["monai_already_imported"] = "monai.visualize" in sys.modules
    t = time.perf_counter()
    explain_slices(pred, prepared, "gradcam")
    out["first_call_seconds"] = time.perf_counter() - t

    def runs(fn, n):
        ts = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return {"median": float(np.median(ts)), "fastest": float(np.min(ts)), "runs": n}

    steps = {
        "classify (whole result, for scale)": (lambda: pred.classify(prepared), 5),
        "gradcam@head": (lambda: explain_slices(pred, prepared, "gradcam", layer="head"), 10),
        "gradcam@block13": (lambda: explain_slices(pred, prepared, "gradcam", layer="block13"), 10),
        "gradcam@block10": (lambda: explain_slices(pred, prepared, "gradcam", layer="block10"), 10),
        "gradcampp@head": (lambda: explain_slices(pred, prepared, "gradcampp"), 5),
        "vanillagrad": (lambda: explain_slices(pred, prepared, "vanillagrad"), 5),
        "smoothgrad": (lambda: explain_slices(pred, prepared, "smoothgrad"), 3),
        "occlusion": (lambda: explain_slices(pred, prepared, "occlusion"), 3),
        "segmentation_uncertainty": (lambda: segmentation_uncertainty(pred, prepared), 3),
    }
    for threads in (2, 1):
        torch.set_num_threads(threads)
        out[f"{threads}_threads"] = {name: runs(fn, n) for name, (fn, n) in steps.items()}
    out["load_average_1min_after"] = os.getloadavg()[0]
    torch.set_num_threads(1)
    unc = segmentation_uncertainty(pred, prepared)[0]
    mask = pred.segment(prepared)[0]
    seg = {"example": "uncertainty_example.png", "example_input": sample, "max_spread": float(unc.heat.max()),
           "mean_lesion_probability_max": unc.score, "predicted_lesion_px": int((mask > 0).sum())}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from strokescan.core.windows import display_unit

    img = display_unit(scan.pixels[0], scan.is_hu)
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.4), dpi=80)
    for ax, (name, h) in zip(axes, (("segmenter mask (outline)", None), ("TTA spread (2 x std)", unc.heat))):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        if h is not None:
            ax.imshow(np.ma.masked_less(h, 0.05), cmap="magma", alpha=0.6, vmin=0, vmax=1)
        if mask.any():
            ax.contour(mask > 0, levels=[0.5], colors="cyan", linewidths=0.8)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out_dir / "uncertainty_example.png")
    plt.close(fig)
    return out, seg


SEGMENTER_FOLDS = ROOT / "reports" / "segmentation" / "folds_v0.4.0.json"  # the bundled segmenter's folds


def segmenter_uncertainty_check(classifier_folder: str, limit: int = 24) -> dict:
    """Does the segmenter's TTA spread mark its errors? Per slice, the pixel ROC-AUC of the spread for error
    pixels (predicted clot xor reference clot) inside the head, on positive ctich-masks slices of the bundled
    segmenter's held-out test fold (a seeded sample of ``limit``)."""
    from strokescan.core.labels import HEMORRHAGE
    from strokescan.evaluation.metrics import roc_auc
    from strokescan.inference.explanations import segmentation_uncertainty
    from strokescan.models.unet import load_segmenter
    from strokescan.preprocessing.masking import head_masks

    _, seg_plan = load_segmenter(ROOT / "src/strokescan/resources/models/segmenter")
    test_fold = str(seg_plan.training.get("test_fold", 0))
    held_out = set(json.loads(SEGMENTER_FOLDS.read_text())["folds"][test_fold])
    meta, angles, _, _ = reference_slices({0, 1, 2, 3, 4})
    meta = meta[(meta["source"] == "ctich-masks") & meta["patient"].isin(held_out)]
    meta = meta.sample(n=min(limit, len(meta)), random_state=SEED).sort_values(["patient", "slice_index"])
    pred = _load_predictor(classifier_folder, segment=True)  # the detector is not used here
    plans = [SlicePlan(), pred.segmenter.plan.slice_plan]
    aucs, dice = [], []
    for _, row in meta.iterrows():
        case = build_case(row, angles, plans)
        mask = pred.segment(case.prepared)[0] == HEMORRHAGE
        unc = segmentation_uncertainty(pred, case.prepared)[0].heat
        head = head_masks(case.prepared.scan.pixels[0], case.prepared.scan.is_hu).head
        err = (mask ^ case.lesion)[head]
        aucs.append(roc_auc(err.astype(int), unc[head]))
        dice.append(2 * (mask & case.lesion).sum() / max(1, mask.sum() + case.lesion.sum()))
    a = np.asarray(aucs, float)
    return {"n_slices": len(meta), "n_patients": int(meta["patient"].nunique()),
            "held_out_from": f"the bundled segmenter (its test fold {test_fold} in {SEGMENTER_FOLDS.relative_to(ROOT)})",
            "error_pixel_auc_mean": float(np.nanmean(a)) if a.size else None,
            "error_pixel_auc_q10_q90": [float(np.nanquantile(a, 0.1)), float(np.nanquantile(a, 0.9))] if a.size else None,
            "clot_dice_mean_same_slices": float(np.mean(dice)) if dice else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fold", type=int, nargs="+", default=[0], help="test fold(s); the first gets the label "
                    "randomisation model")
    ap.add_argument("--work", type=Path, default=None, help="model cache (default $STROKESCAN_CACHE/explanations)")
    ap.add_argument("--train-only", action="store_true")
    ap.add_argument("--retrain", action="store_true")
    ap.add_argument("--occlusion-slices", type=int, default=30)
    ap.add_argument("--random-slices", type=int, default=24)
    ap.add_argument("--out", type=Path, default=REPORT_DIR)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fresh", action="store_true", help="recompute every evaluation stage (default: resume "
                    "from the stages a previous run with the same settings finished)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import warnings

    warnings.filterwarnings("ignore", message="Using a non-tuple sequence")
    torch.set_num_threads(args.threads)
    work = args.work or cache_root() / "explanations"
    models = {k: fold_models(k, work / f"fold_{k}", args.retrain, shuffled=(i == 0)) for i, k in enumerate(args.fold)}
    log.info("models: %s", {k: m.get("reproduces_cv_fold") for k, m in models.items()})
    if args.train_only:
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    timed = timing(models[args.fold[0]]["trained"]["folder"], args.out)  # first: its first call imports MONAI
    summary = evaluate(args.fold, models, args.occlusion_slices, args.random_slices, args.out,
                       None if args.fresh else work / "evaluation")
    summary["models"] = {k: {n: v for n, v in m.items() if n not in ("trained", "shuffled", "test_patients",
                                                                        "val_patients")}
                         | {"trained_best_epoch": m["trained"]["best_epoch"],
                            "shuffled_epochs": m.get("shuffled", {}).get("epochs")} for k, m in models.items()}
    summary["timing"], summary["segmenter_uncertainty"] = timed
    summary["segmenter_uncertainty"].update(segmenter_uncertainty_check(models[args.fold[0]]["trained"]["folder"]))
    summary["command"] = "nice -n 10 .venv/bin/python studies/explanation_figures.py " + " ".join(argv or sys.argv[1:])
    summary["total_seconds"] = round(time.time() - t0, 1)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, default=_jsonable))
    (args.out / "report.md").write_text(report_markdown(summary))
    log.info("wrote %s", args.out)
    return 0


def _jsonable(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.bool_,)):
        return bool(o)
    raise TypeError(type(o))


def _ci(m: dict | None, digits: int = 2) -> str:
    if not m or m.get("value") is None or np.isnan(m["value"]):
        return "n/a"
    lo, hi = m["ci95"]
    return f"{m['value']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def report_markdown(s: dict) -> str:
    primary = s["primary"]
    names = [cname(m, layer) for m, layer in CANDIDATES] + list(BASELINES)
    lines = ["# Explanations of the hemorrhage detector, checked against reference lesions", "",
             f"Generated by `{s['command']}` ({s['total_seconds'] / 60:.0f} min). Test fold(s) {s['folds']}: "
             "patients the evaluated detector never trained on (it is retrained per fold from the cached "
             "features with the cross-validation recipe; the bundled detector trained on everyone). "
             f"Method chosen on the validation fold(s) {sorted(set(s['val_folds'].values()))}: **{primary}** "
             f"({s['selection']['rule']}). Pointing game: the map's maximum inside the lesion dilated by "
             f"{s['tolerance_px']} px. 95 % intervals: patient bootstrap (1000 resamples).", "",
             "## Held-out localisation (pointing game, energy share, where the peak lies)", "",
             "Hit: the map's own maximum. In brain: share of maxima inside the brain mask (dilated 5 px). "
             "Hit within brain: the maximum of the map multiplied by that mask (a display variant, not the "
             "model's own map).", "",
             "| method | ctich hit | ctich energy | ctich peak in brain | ctich hit within brain | phe-sich (box) hit "
             "| phe-sich energy | phe-sich peak in brain | phe-sich hit within brain |",
             "|---|---|---|---|---|---|---|---|---|"]
    ct, ph = s["test"].get("ctich-masks", {}), s["test"].get("phe-sich", {})
    for n in names:
        def g(block, q):
            return _ci(block.get("metrics", {}).get(f"{n}_{q}"))
        extra = n not in BASELINES
        lines.append(f"| {n}{' (primary)' if n == primary else ''} | {g(ct, 'hit')} | {g(ct, 'energy')} | "
                     f"{g(ct, 'peak_in_brain') if extra else ''} | {g(ct, 'inbrain_hit') if extra else ''} | "
                     f"{g(ph, 'hit')} | {g(ph, 'energy')} | {g(ph, 'peak_in_brain') if extra else ''} | "
                     f"{g(ph, 'inbrain_hit') if extra else ''} |")
    lines += ["", "Where the maxima lie (share of slices): brain (dilated 5 px) / skull or scalp (the head mask, "
              "dilated 5 px, outside that) / outside the head (air, table, or no peak).", "",
              "| method | ctich brain / skull-scalp / outside | phe-sich brain / skull-scalp / outside |", "|---|---|---|"]
    for n in names:
        if n in BASELINES:
            continue
        cells = []
        for block in (ct, ph):
            m = block.get("metrics", {})
            b, o = m.get(f"{n}_peak_in_brain", {}).get("value"), m.get(f"{n}_peak_outside_head", {}).get("value")
            cells.append("n/a" if b is None or o is None else f"{b:.2f} / {max(0.0, 1 - b - o):.2f} / {o:.2f}")
        lines.append(f"| {n} | {cells[0]} | {cells[1]} |")
    lines += ["", f"n: ctich-masks {ct.get('n_slices')} slices / {ct.get('n_patients')} patients; phe-sich "
              f"{ph.get('n_slices')} slices / {ph.get('n_patients')} patients.", "",
              "## Primary method minus baseline (paired patient bootstrap)", "",
              "| set | vs | hit difference | energy difference |", "|---|---|---|---|"]
    for name, block in (("ctich-masks", ct), ("phe-sich", ph)):
        for b in BASELINES:
            lines.append(f"| {name} | {b} | {_ci(block.get('primary_minus_baseline_hit', {}).get(b, {}).get('difference'))}"
                         f" | {_ci(block.get('primary_minus_baseline_energy', {}).get(b, {}).get('difference'))} |")
    for name, block in (("ctich-masks", ct), ("phe-sich", ph)):
        for b in BASELINES:
            d = block.get("primary_within_brain_minus_baseline_hit", {}).get(b, {}).get("difference")
            lines.append(f"| {name} | {b} (primary within brain) | {_ci(d)} | |")
    lines += ["", "## Validation-fold selection", "", f"Rule: {s['selection']['rule']}. n: {s['selection']['n_val_slices']}.",
              "", "| candidate | ctich val hit | phe-sich val hit | passes both sanity checks |", "|---|---|---|---|"]
    for c, v in s["selection"]["candidates"].items():
        lines.append(f"| {c} | {v['ctich_val_hit']:.2f} | {v['phe_val_hit']:.2f} | "
                     f"{'yes' if v['passes_sanity_checks'] else 'no'} |")
    lines += ["", f"## By subtype ({primary})", "", "| subtype | n slices | patients | hit | energy | brain-mask hit | "
              "blood-channel hit |", "|---|---|---|---|---|---|---|"]
    for r in s["by_subtype"]:
        lines.append(f"| {r['subtype']} | {r['n_slices']} | {r['n_patients']} | {_ci(r[f'{primary}_hit'])} | "
                     f"{_ci(r[f'{primary}_energy'])} | {_ci(r['brain_mask_hit'])} | {_ci(r['blood_channel_hit'])} |")
    lines += ["", f"## By lesion size ({primary})", "", "| set | size | n slices | hit | energy | brain-mask hit |",
              "|---|---|---|---|---|---|"]
    for src, rows in s["by_size"].items():
        for r in rows:
            lines.append(f"| {src} | {r['size']} | {r['n_slices']} | {_ci(r[f'{primary}_hit'])} | "
                         f"{_ci(r[f'{primary}_energy'])} | {_ci(r['brain_mask_hit'])} |")
    lines += ["", "## Slices the detector flagged (balanced slice threshold, probability with context)", ""]
    for name, block in (("ctich-masks", ct), ("phe-sich", ph)):
        d = block.get("detected_only", {})
        lines.append(f"- {name}: {d.get('n_slices')} flagged; {primary} hit {_ci(d.get('metrics', {}).get(f'{primary}_hit'))}"
                     f", brain-mask {_ci(d.get('metrics', {}).get('brain_mask_hit'))}")
    if ph.get("primary_hit_vs_derived_clot"):
        lines.append(f"- phe-sich, against the derived clot instead of the box: hit "
                     f"{_ci(ph['primary_hit_vs_derived_clot'][f'{primary}_clot_hit'])}")
    o = s["occlusion"]
    lines += ["", "## Occlusion sensitivity (seeded sample of test slices)", "",
              f"n = {o['n_slices']} slices / {o['n_patients']} patients ({o['sources']}); median "
              f"{o['seconds_per_slice_1_thread'] or float('nan'):.1f} s per slice on 1 thread.",
              f"- occlusion hit minus {primary} hit: {_ci((o['occlusion_minus_primary_hit'] or {}).get('difference'))}"
              f" (occlusion {_ci((o['occlusion_minus_primary_hit'] or {}).get('a'))}, {primary} "
              f"{_ci((o['occlusion_minus_primary_hit'] or {}).get('b'))})",
              f"- occlusion hit minus brain-mask hit: {_ci((o['occlusion_minus_brain_mask_hit'] or {}).get('difference'))}",
              "", "## Sanity checks (Adebayo et al. 2018)", "", s["randomisation"]["pass_rule"] + ".", ""]
    r = s["randomisation"]
    if r.get("methods"):
        lines.append(f"Fold-{r['fold']} model (and its label-shuffled twin), n = {r['n_slices']} slices "
                     f"({r['n_patients']} patients) of its {r['slices_from']}; mean Spearman / mean SSIM against "
                     "the trained model's maps of the same slices. Run before the method was chosen: the choice "
                     "is made among the methods that pass both.")
        lines.append("")
        steps = [c["step"] for c in next(iter(r["methods"].values()))["cascade"]]
        lines.append("| method | " + " | ".join(steps) + " | labels shuffled | pass (cascade, labels) |")
        lines.append("|---" * (len(steps) + 3) + "|")
        for c, v in r["methods"].items():
            cells = [f"{x['spearman_mean']:.2f} / {x['ssim_mean']:.2f}" for x in v["cascade"]]
            lab = v["label_randomisation"]
            lines.append(f"| {c} | " + " | ".join(cells) + f" | {lab['spearman_mean']:.2f} / {lab['ssim_mean']:.2f} | "
                         f"{'yes' if v['cascade_pass'] else 'NO'}, {'yes' if v['label_pass'] else 'NO'} |")
        for name, block in (("ctich-masks", ct), ("phe-sich", ph)):
            if block.get("label_shuffled_hit"):
                d = block["label_shuffled_hit"]
                lines.append(f"\nPointing game of the label-shuffled model ({name}, fold {r['fold']}): "
                             f"{_ci(d['b'])} vs trained {_ci(d['a'])}; difference {_ci(d['difference'])}.")
    t = s["timing"]
    lines += ["", "## Timing (seconds per slice, shared machine: median / fastest run)", "",
              f"Input: {t['input']}. First call in the process: {t['first_call_seconds']:.2f} s "
              f"({'MONAI already imported' if t['monai_already_imported'] else 'includes importing MONAI'}). "
              f"Load average {t['load_average_1min_before']:.1f} before, {t['load_average_1min_after']:.1f} after, on "
              f"{t['cpu_count']} cores.", "", "| step | 2 threads | 1 thread |", "|---|---|---|"]
    for name in t["2_threads"]:
        a, b = t["2_threads"][name], t["1_threads"][name]
        lines.append(f"| {name} | {a['median']:.3f} / {a['fastest']:.3f} | {b['median']:.3f} / {b['fastest']:.3f} |")
    lines += ["",
              "## Segmenter uncertainty (test-time augmentation spread)", ""]
    u = s["segmenter_uncertainty"]
    if u.get("error_pixel_auc_mean") is None:
        lines += [f"No held-out slices for the check (n = {u.get('n_slices')}); example: `{u['example']}`."]
    else:
        q = u["error_pixel_auc_q10_q90"]
        lines += [f"On {u['n_slices']} positive ctich-masks slices ({u['n_patients']} patients) held out from "
                  f"{u['held_out_from']}: the spread ranks the segmenter's error pixels (predicted clot xor reference "
                  f"clot, inside the head) with a mean per-slice ROC-AUC of {u['error_pixel_auc_mean']:.2f} (10th-90th "
                  f"percentile {q[0]:.2f}-{q[1]:.2f}); the segmenter's clot Dice on the same slices is "
                  f"{u['clot_dice_mean_same_slices']:.2f}. Example: `{u['example']}` ({u['example_input']})."]
    lines += ["", "## Example pictures", ""]
    for e in s["examples"]:
        lines.append(f"- `{e['file']}`: {e['kind']} ({e['source']}, {e['subtypes']}, {e['size']}, p(any) "
                     f"{e['p_any']:.2f}, energy share {e['energy']:.2f})")
    lines += ["- `randomisation_cascade.png`: one slice's map, trained, after each cascade step, label-shuffled",
              "- `uncertainty_example.png`: the segmenter's mask and its TTA spread on a sample slice", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
