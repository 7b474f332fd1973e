"""Segmentation metrics, the classical threshold baseline, and the per-dataset report.

Everything is measured in the input's own pixel grid (predictions mapped back through rotation, crop and
resize), per slice and per lesion class, only on slices whose source labels that class everywhere
(``labelled``; e.g. no hemorrhage figures on phe-sich slices with a box, where the clot is not marked).

Per slice and class:

* ``dice``, ``iou``: NaN when prediction and truth are both empty (nothing to measure); 0 when one is empty.
* ``hd95_px``: 95th-percentile symmetric Hausdorff distance (MONAI ``compute_hausdorff_distance``) in input
  pixels (no mask set here has a pixel spacing); NaN unless both are non-empty.
* lesion detection: 8-connected components of the truth are *found* when any predicted pixel of the class
  touches them, else *missed*; predicted components touching no true pixel are *false*.
* ``area_err_px``: |predicted area - true area| in pixels; per patient/volume the summed absolute volume
  error ``abs_volume_err_px`` (voxels on a slice grid, since no set gives spacing).

Aggregation (per dataset and class): ``dice_pos`` = mean Dice over slices that contain the class (the issue's
target, e.g. hemorrhage Dice >= 0.65 on slices containing it); ``dice_all`` = mean over labelled slices where
it is defined (NaN-excluded); ``dice_pooled`` = Dice of all pixels pooled; ``fp_slice_rate`` = share of
labelled slices without the class where something is predicted. 95 % intervals resample patients
(:func:`strokescan.evaluation.metrics.patient_bootstrap`).

Baseline for hemorrhage (:func:`threshold_baseline`): pixels inside the (eroded) brain mask (``head_masks``)
after a 3x3 median; images with HU: 50-90 HU; 8-bit images: value >= brain median + k * brain IQR (window-
invariant; ``k`` chosen on the training folds by :func:`fit_threshold_baseline`) and below the bone
threshold; components under ``min_px`` dropped.

Baseline for perihematomal edema (:func:`edema_baseline`), the semi-automatic rule of Volbers et al. (Neurology
2018; 5-33 HU around the hematoma): the largest blood component of :func:`threshold_baseline` is the clot;
edema = hypodense pixels within ``ring_px`` of it inside the brain: 5-33 HU with HU, else between
``median - 2 IQR`` and ``median - lo * IQR`` of the slice's brain. ``k``, ``lo`` and ``ring_px`` are chosen on
the training folds by :func:`fit_edema_baseline`.
"""

from __future__ import annotations

import itertools
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from strokescan.core.labels import EDEMA, HEMORRHAGE, LESION_CLASSES
from strokescan.evaluation.metrics import patient_bootstrap
from strokescan.preprocessing.density import hyperdense
from strokescan.preprocessing.masking import head_masks

_EIGHT = np.ones((3, 3), bool)


def hd95(pred: np.ndarray, truth: np.ndarray) -> float:
    """95 % Hausdorff distance in pixels between two non-empty 2-D masks (MONAI), NaN if either is empty."""
    if not pred.any() or not truth.any():
        return float("nan")
    import torch
    from monai.metrics import compute_hausdorff_distance

    p = torch.from_numpy(pred[None, None].astype(np.float32))
    t = torch.from_numpy(truth[None, None].astype(np.float32))
    with warnings.catch_warnings():  # MONAI 1.5+ warns about its own internal argument
        warnings.simplefilter("ignore", FutureWarning)
        return float(compute_hausdorff_distance(p, t, include_background=True, percentile=95)[0, 0])


def lesion_counts(pred: np.ndarray, truth: np.ndarray) -> dict[str, int]:
    """Connected-component detection counts (8-connected)."""
    tl, nt = ndi.label(truth, structure=_EIGHT)
    pl, npred = ndi.label(pred, structure=_EIGHT)
    found = len(np.unique(tl[pred & (tl > 0)])) if nt else 0
    hit_pred = len(np.unique(pl[truth & (pl > 0)])) if npred else 0
    return {"lesions": int(nt), "found": int(found), "missed": int(nt - found), "false": int(npred - hit_pred)}


def slice_metrics(pred_ids: np.ndarray, truth_ids: np.ndarray, cls: int) -> dict:
    """Metrics of one class on one slice (see module doc)."""
    p, t = pred_ids == cls, truth_ids == cls
    ps, ts, inter = int(p.sum()), int(t.sum()), int((p & t).sum())
    union = ps + ts - inter
    both_empty = ps == 0 and ts == 0
    return {
        "pred_px": ps, "true_px": ts, "inter_px": inter,
        "dice": float("nan") if both_empty else 2 * inter / (ps + ts),
        "iou": float("nan") if both_empty else inter / union,
        "hd95_px": hd95(p, t),
        "area_err_px": abs(ps - ts),
        **lesion_counts(p, t),
    }


def evaluate_slices(rows: pd.DataFrame, preds: list[np.ndarray], truths: list[np.ndarray], labelled: np.ndarray,
                    method: str) -> pd.DataFrame:
    """Long table: one line per (slice, labelled lesion class)."""
    out = []
    for i, (_, row) in enumerate(rows.iterrows()):
        for c in LESION_CLASSES:
            if not labelled[i, c]:
                continue
            m = slice_metrics(preds[i], truths[i], c)
            frame = row.get("frame")
            out.append({"method": method, "source": row["source"], "patient": row["patient"],
                        "image_path": row["image_path"], "frame": -1 if frame is None or pd.isna(frame) else int(frame),
                        "class": c.label, **m})
    return pd.DataFrame(out)


def _stat(frame: pd.DataFrame) -> dict[str, float]:
    pos = frame[frame["true_px"] > 0]
    neg = frame[frame["true_px"] == 0]
    pooled_den = frame["pred_px"].sum() + frame["true_px"].sum()
    return {
        "dice_pos": float(pos["dice"].mean()) if len(pos) else float("nan"),
        "iou_pos": float(pos["iou"].mean()) if len(pos) else float("nan"),
        "dice_all": float(frame["dice"].mean()) if frame["dice"].notna().any() else float("nan"),
        "dice_pooled": float(2 * frame["inter_px"].sum() / pooled_den) if pooled_den else float("nan"),
        "fp_slice_rate": float((neg["pred_px"] > 0).mean()) if len(neg) else float("nan"),
    }


def summarize(table: pd.DataFrame, n_boot: int = 1000) -> pd.DataFrame:
    """Per (method, source, class) and per (method, 'all', class): counts, metrics with 95 % patient-bootstrap CIs."""
    if table.empty:
        return pd.DataFrame()
    parts = [table, table.assign(source="all")]
    rows = []
    for (method, source, cls), g in pd.concat(parts, ignore_index=True).groupby(["method", "source", "class"], sort=True):
        g = g.reset_index(drop=True)
        boot = patient_bootstrap(g, _stat, n_boot=n_boot)
        vol = g.groupby("patient").apply(lambda x: abs(x["pred_px"].sum() - x["true_px"].sum()), include_groups=False)
        rec = {
            "method": method, "source": source, "class": cls,
            "n_slices": len(g), "n_slices_with_class": int((g["true_px"] > 0).sum()), "n_patients": g["patient"].nunique(),
            "hd95_px_median": float(g["hd95_px"].median()) if g["hd95_px"].notna().any() else float("nan"),
            "lesions": int(g["lesions"].sum()), "found": int(g["found"].sum()), "missed": int(g["missed"].sum()),
            "false": int(g["false"].sum()),
            "area_err_px_mean": float(g["area_err_px"].mean()),
            "abs_volume_err_px_mean": float(vol.mean()),
        }
        for k, v in boot.items():
            rec[k] = v["value"]
            rec[f"{k}_ci95"] = v["ci95"]
        rows.append(rec)
    return pd.DataFrame(rows)


def compare_methods(table: pd.DataFrame, method: str = "unet", baseline: str = "threshold",
                    n_boot: int = 1000) -> pd.DataFrame:
    """Paired ``method`` minus ``baseline`` Dice on the same slices that contain the class, per (source, class)
    and over all sources, with a 95 % patient-bootstrap interval (an interval above 0 = clearly better)."""
    keys = ["source", "patient", "image_path", "frame", "class"]  # frame: the slice of a volume file (-1: none)
    pos = table[table["true_px"] > 0]
    # tables written before volume rows existed have no frame (or NA after a concat with newer ones)
    pos = pos.assign(frame=pos["frame"].fillna(-1).astype(int) if "frame" in pos else -1)
    pair = pos[pos["method"] == method].merge(pos[pos["method"] == baseline], on=keys, suffixes=("", "_base"))
    if pair.empty:
        return pd.DataFrame()
    rows = []
    for (source, cls), g in pd.concat([pair, pair.assign(source="all")]).groupby(["source", "class"], sort=True):
        g = g.reset_index(drop=True)
        boot = patient_bootstrap(g, lambda f: {"method": float(f["dice"].mean()), "baseline": float(f["dice_base"].mean()),
                                               "difference": float((f["dice"] - f["dice_base"]).mean())}, n_boot=n_boot)
        rows.append({"source": source, "class": cls, "n_slices": len(g), "n_patients": g["patient"].nunique(),
                     **{f"dice_{k}": v["value"] for k, v in boot.items()},
                     "difference_ci95": boot["difference"]["ci95"]})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------------------
# Classical baseline


def threshold_baseline(pixels: np.ndarray, is_hu: bool, k: float = 2.0, min_px: int = 20,
                       brain: np.ndarray | None = None) -> np.ndarray:
    """Hemorrhage class-id mask (1 = blood): :func:`~strokescan.preprocessing.density.hyperdense` inside the
    brain mask, components of at least ``min_px`` pixels (see module doc)."""
    if brain is None:
        brain = head_masks(pixels, is_hu).brain
    blood = hyperdense(pixels, is_hu, brain, k)
    labels, n = ndi.label(blood, structure=_EIGHT)
    if n:
        sizes = np.bincount(labels.ravel())
        keep = sizes >= min_px
        keep[0] = False
        blood = keep[labels]
    return blood.astype(np.uint8) * HEMORRHAGE


def edema_baseline(pixels: np.ndarray, is_hu: bool, k: float = 2.0, lo: float = 0.5, ring_px: float = 20.0,
                   min_px: int = 20, brain: np.ndarray | None = None) -> np.ndarray:
    """Edema class-id mask (2 = edema) by a hypodense ring around the baseline's clot (see module doc)."""
    if brain is None:
        brain = head_masks(pixels, is_hu).brain
    inner = ndi.binary_erosion(brain, iterations=2)
    out = np.zeros(np.shape(pixels), np.uint8)
    labels, n = ndi.label(threshold_baseline(pixels, is_hu, k=k, min_px=min_px, brain=brain) > 0, structure=_EIGHT)
    if not n or not inner.any():
        return out
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    clot = labels == sizes.argmax()
    dist = ndi.distance_transform_edt(~clot)
    img = ndi.median_filter(np.asarray(pixels, np.float32), size=3)
    if is_hu:
        hypodense = (img >= 5.0) & (img <= 33.0)
    else:
        q25, q50, q75 = np.percentile(img[inner], [25, 50, 75])
        iqr = max(q75 - q25, 1.0)
        hypodense = (img >= q50 - 2.0 * iqr) & (img <= q50 - lo * iqr)
    edema = hypodense & inner & (dist > 0) & (dist <= ring_px)
    labels, n = ndi.label(edema, structure=_EIGHT)
    if n:
        keep = np.bincount(labels.ravel()) >= min_px
        keep[0] = False
        edema = keep[labels]
    out[edema] = EDEMA
    return out


def fit_edema_baseline(images: list[np.ndarray], truths: list[np.ndarray], ks=(1.0, 2.0, 3.0),
                       los=(0.0, 0.5, 1.0), rings=(10.0, 20.0, 30.0)) -> tuple[dict, dict]:
    """The (``k``, ``lo``, ``ring_px``) of the 8-bit edema rule with the best pooled edema Dice on the given
    (training) slices, and every setting's score."""
    brains = [head_masks(img, False).brain for img in images]
    scores = {}
    for k, lo, ring in itertools.product(ks, los, rings):
        inter = tot = 0
        for img, t, brain in zip(images, truths, brains):
            p = edema_baseline(img, False, k=k, lo=lo, ring_px=ring, brain=brain) == EDEMA
            tt = t == EDEMA
            inter += int((p & tt).sum())
            tot += int(p.sum() + tt.sum())
        scores[f"k={k} lo={lo} ring_px={ring}"] = (2 * inter / tot if tot else 0.0, {"k": k, "lo": lo, "ring_px": ring})
    best = max(scores, key=lambda name: scores[name][0])
    return scores[best][1], {name: score for name, (score, _) in scores.items()}


def fit_threshold_baseline(images: list[np.ndarray], truths: list[np.ndarray],
                           ks=(0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)) -> tuple[float, dict]:
    """The ``k`` (8-bit rule) with the best pooled hemorrhage Dice on the given (training) slices."""
    brains = [head_masks(img, False).brain for img in images]
    scores = {}
    for k in ks:
        inter = tot = 0
        for img, t, brain in zip(images, truths, brains):
            p = threshold_baseline(img, False, k=k, brain=brain) == HEMORRHAGE
            tt = t == HEMORRHAGE
            inter += int((p & tt).sum())
            tot += int(p.sum() + tt.sum())
        scores[float(k)] = 2 * inter / tot if tot else 0.0
    best = max(scores, key=scores.get)
    return best, scores


# ----------------------------------------------------------------------------------------------------------
# Report


def _fmt(v, ci=None) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "n/a"
    s = f"{v:.3f}"
    if ci is not None and not any(np.isnan(ci)):
        s += f" [{ci[0]:.2f}, {ci[1]:.2f}]"
    return s


def report_markdown(summary: pd.DataFrame, title: str = "Segmentation evaluation") -> str:
    """A markdown table of :func:`summarize` output."""
    lines = [f"# {title}", "",
             "Dice/IoU on slices containing the class (`dice_pos`, mean over slices) with 95 % patient-bootstrap CI; "
             "`dice_all` = mean over labelled slices (NaN when both empty, excluded); HD95 in input pixels "
             "(no spacing in these sets); lesions found/missed/false by 8-connected components; volume error "
             "in pixels summed per patient.", "",
             "| method | dataset | class | slices (with class) | patients | Dice pos [95% CI] | IoU pos | Dice all | "
             "Dice pooled | FP-slice rate | HD95 px (median) | lesions found/missed/false | abs vol err px |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for d in summary.to_dict(orient="records"):
        lines.append(
            f"| {d['method']} | {d['source']} | {d['class']} | {d['n_slices']} ({d['n_slices_with_class']}) | "
            f"{d['n_patients']} | {_fmt(d['dice_pos'], d['dice_pos_ci95'])} | {_fmt(d['iou_pos'])} | "
            f"{_fmt(d['dice_all'])} | {_fmt(d['dice_pooled'])} | {_fmt(d['fp_slice_rate'])} | "
            f"{_fmt(d['hd95_px_median'])} | {d['found']}/{d['missed']}/{d['false']} | "
            f"{d['abs_volume_err_px_mean']:.0f} |")
    return "\n".join(lines) + "\n"


def paired_markdown(paired: pd.DataFrame, method: str = "U-Net", baseline: str = "baseline") -> str:
    """A markdown table of :func:`compare_methods` output."""
    lines = [f"## {method} minus {baseline}, paired on the same slices containing the class", "",
             f"| dataset | class | slices | patients | {method} Dice | {baseline} Dice | difference [95% CI] |",
             "|---|---|---|---|---|---|---|"]
    for d in paired.to_dict(orient="records"):
        lines.append(f"| {d['source']} | {d['class']} | {d['n_slices']} | {d['n_patients']} | "
                     f"{_fmt(d['dice_method'])} | {_fmt(d['dice_baseline'])} | "
                     f"{_fmt(d['dice_difference'], d['difference_ci95'])} |")
    return "\n".join(lines) + "\n"


def write_report(summary: pd.DataFrame, table: pd.DataFrame, folder: Path | str, extra: dict | None = None,
                 paired: pd.DataFrame | None = None) -> Path:
    """``report.md``, ``summary.json`` and ``per_slice.csv`` in ``folder`` (with ``paired``: the
    :func:`compare_methods` table too)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "per_slice.csv", index=False)
    has_paired = paired is not None and not paired.empty
    payload = {"summary": json.loads(summary.to_json(orient="records")),
               **({"paired": json.loads(paired.to_json(orient="records"))} if has_paired else {}), **(extra or {})}
    (folder / "summary.json").write_text(json.dumps(payload, indent=1))
    md = report_markdown(summary)
    if has_paired:
        md += "\n" + paired_markdown(paired)
    if extra:
        md += "\n```json\n" + json.dumps(extra, indent=1, default=str) + "\n```\n"
    (folder / "report.md").write_text(md)
    return folder / "report.md"
