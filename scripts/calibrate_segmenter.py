"""Set the segmenter's clot decision (``hemorrhage_weight``, ``min_hemorrhage_confidence``) on a validation fold,
or with ``--growth`` the clot growth into hyperdense pixels (``clot_growth_k``, ``clot_growth_px``) on top of it.

    .venv/bin/python scripts/calibrate_segmenter.py --fold 1 --out reports/segmentation/calibration_v0.4.1.md
    .venv/bin/python scripts/calibrate_segmenter.py --fold 1 --growth --out reports/segmentation/growth_v0.4.2.md

One network pass over the fold, then every setting of the grid in the input grid (head mask and minimum size as
at inference). Per setting: D = mean clot Dice on slices with blood (all sources), F = share of ctich-masks
lesion-free slices with any clot pixel, E = phe-sich edema Dice on slices with edema. The choice and the ship
test follow ``reports/segmentation/ship_rule_v0.4.1.md`` (written before this ran). Use the model's early-stopping
fold (its plan's ``val_fold``), never its held-out fold. ``--held-out-run DIR`` instead writes the chosen
setting's held-out table as ``DIR/fold<k>/per_slice.csv`` (with the threshold baseline), for
``scripts/segmentation_clinical_figures.py DIR``: only after the decision.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from strokescan.datasets.lesion_masks import build_segmentation_manifest
from strokescan.datasets.splits import fold_of, read_folds
from strokescan.errors import StrokescanError
from strokescan.evaluation.metrics import patient_bootstrap
from strokescan.inference.segmenter import DEFAULT_SEGMENTER_DIR
from strokescan.models.unet import SegmenterPlan, load_segmenter
from strokescan.training.segmenter import build_cache, evaluate_probs, folds_sha256, predict_probs

WEIGHTS = (1.0, 1.25, 1.5, 2.0, 3.0)
CONFIDENCES = (0.0, 0.6, 0.7, 0.8, 0.9, 0.95)
FP_TARGET = 0.05  # rule: highest D among settings with F <= this
D_MARGIN = 0.02  # rule: otherwise the lowest F with D >= D(plain) - this; ship test (b)
E_MARGIN = 0.02  # ship test (c)
F_GAIN = 0.05  # ship test (a): F lower by at least this
DEFAULT_FOLDS = Path("reports/segmentation/folds_v0.4.0.json")
GROWTH_K = (1.5, 2.0, 2.5, 3.0)  # --growth grid (ship_rule_v0.4.2.md): hyperdense factor x largest distance
GROWTH_PX = (5, 10, 20)
GROWTH_D_GAIN = 0.02  # --growth ship test: D higher by at least this, paired CI above 0


def measures(table: pd.DataFrame) -> dict[str, float]:
    """D, F and E (see the module docstring) of the U-Net in one setting's per-slice table."""
    table = table[table["method"] == "unet"]
    clot = table[table["class"] == "hemorrhage"]
    pos = clot[clot["true_px"] > 0]
    neg = clot[(clot["true_px"] == 0) & (clot["source"] == "ctich-masks")]
    edema = table[(table["class"] == "edema") & (table["source"] == "phe-sich") & (table["true_px"] > 0)]
    return {"D": float(pos["dice"].mean()), "F": float((neg["pred_px"] > 0).mean()), "E": float(edema["dice"].mean()),
            "n_D": len(pos), "n_F": len(neg), "n_E": len(edema)}


def choose(grid: pd.DataFrame) -> pd.Series:
    """The rule's choice: highest D with F <= FP_TARGET; else the lowest F with D >= D(plain) - D_MARGIN."""
    plain = grid[(grid["weight"] == 1.0) & (grid["confidence"] == 0.0)].iloc[0]
    ok = grid[grid["F"] <= FP_TARGET]
    if len(ok):
        return ok.sort_values(["D", "F"], ascending=[False, True]).iloc[0]
    near = grid[grid["D"] >= plain["D"] - D_MARGIN]
    return near.sort_values(["F", "D"], ascending=[True, False]).iloc[0]


def paired(a: pd.DataFrame, b: pd.DataFrame, cls: str, source: str | None, value: str) -> str:
    """Mean of a - b per slice with a patient-bootstrap 95 % CI (``value``: "dice" on slices holding the class,
    "fp" on lesion-free slices)."""
    def part(t: pd.DataFrame) -> pd.DataFrame:
        t = t[(t["class"] == cls) & ((t["source"] == source) if source else True)]
        t = t[t["true_px"] > 0] if value == "dice" else t[t["true_px"] == 0].assign(dice=(t["pred_px"] > 0) * 1.0)
        return t.set_index(["patient", "image_path", "frame"])["dice"]
    d = (part(a) - part(b)).dropna().reset_index(name="v")
    est = patient_bootstrap(d, lambda f: {"m": float(f["v"].mean())})["m"]
    return f"{est['value']:+.3f} [{est['ci95'][0]:+.3f}, {est['ci95'][1]:+.3f}]"


def _growth(a: argparse.Namespace, plan: SegmenterPlan, probs: np.ndarray, part) -> int:
    """The --growth grid on top of the model's clot decision, its choice and ship test (ship_rule_v0.4.2.md)."""
    settings = [(0.0, 0)] + list(itertools.product(GROWTH_K, GROWTH_PX))
    tables, rows = {}, []
    for k, r in tqdm(settings, desc="settings", unit="setting"):
        t = evaluate_probs(probs, part, None, plan=dataclasses.replace(plan, clot_growth_k=k, clot_growth_px=r))
        tables[(k, r)] = t
        rows.append({"k": k, "px": r, **measures(t)})
    grid = pd.DataFrame(rows)
    off = grid.iloc[0]
    best = grid[grid["E"] >= off["E"] - E_MARGIN].sort_values(["D", "F"], ascending=[False, True]).iloc[0]
    tb, to = tables[(best["k"], best["px"])], tables[(0.0, 0)]
    d_diff = paired(tb, to, "hemorrhage", None, "dice")
    lower = float(d_diff.split("[")[1].split(",")[0])
    tests = {f"D higher by >= {GROWTH_D_GAIN:.2f}": best["D"] - off["D"] >= GROWTH_D_GAIN,
             "paired CI of the D difference above 0": lower > 0,
             f"E not lower by > {E_MARGIN:.2f}": best["E"] >= off["E"] - E_MARGIN}
    lines = [f"# Clot growth set on validation fold {a.fold} (rule: reports/segmentation/ship_rule_v0.4.2.md)", "",
             f"Command: `.venv/bin/python scripts/calibrate_segmenter.py --fold {a.fold} --growth"
             f"{f' --out {a.out}' if a.out else ''}`; model {_shown(a.model)} (weights sha256 "
             f"{plan.weights_sha256[:16]}, clot weight {plan.hemorrhage_weight:g}, minimum confidence "
             f"{plan.min_hemorrhage_confidence:g}). Slices: D on {int(off['n_D'])} slices with blood, F on "
             f"{int(off['n_F'])} ctich-masks lesion-free slices, E on {int(off['n_E'])} phe-sich slices with edema.", "",
             "| growth k | within px | D clot Dice | F lesion-free slices with clot | E edema Dice |", "|---|---|---|---|---|"]
    for r in grid.itertuples():
        mark = " **chosen**" if (r.k, r.px) == (best["k"], best["px"]) else ""
        lines.append(f"| {'off' if r.k == 0 else f'{r.k:g}'} | {r.px}{mark} | {r.D:.3f} | {r.F:.3f} | {r.E:.3f} |")
    lines += ["", f"Chosen: k {best['k']:g} within {int(best['px'])} px. Against no growth, paired per slice, mean "
              "[95 % patient-bootstrap CI]:", "",
              f"- D clot Dice: {best['D']:.3f} vs {off['D']:.3f}, {d_diff}",
              f"- E phe-sich edema Dice: {best['E']:.3f} vs {off['E']:.3f}, {paired(tb, to, 'edema', 'phe-sich', 'dice')}",
              ]
    return _decide(lines, tests, "ship the growth as v0.4.2", "keep the model as it is",
                   {"growth_k": float(best["k"]), "growth_px": int(best["px"])}, a.out)


def _decide(lines: list[str], tests: dict[str, bool], ship_text: str, keep_text: str, choice: dict,
            out: Path | None) -> int:
    """Print (and write to ``out``) the report ``lines`` with the ship tests and the decision they give."""
    ship = all(tests.values())
    lines = [*lines, "", *[f"- {k}: {'yes' if v else 'no'}" for k, v in tests.items()], "",
             f"Decision: **{ship_text if ship else keep_text}**."]
    text = "\n".join(lines) + "\n"
    print(text)
    print("JSON " + json.dumps({**choice, "ship": ship}))
    if out:
        out.write_text(text)
    return 0


def _shown(path: Path) -> str:
    """``path`` relative to the working folder when it lies inside it (reports name no machine's folders)."""
    path = path.resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_SEGMENTER_DIR, help="segmenter folder (default: bundled)")
    ap.add_argument("--folds", type=Path, default=DEFAULT_FOLDS, help="the model's folds file (its sha256 is checked)")
    ap.add_argument("--fold", type=int, required=True, help="validation fold to set the decision on")
    ap.add_argument("--out", type=Path, help="write the Markdown report here too")
    ap.add_argument("--held-out-run", type=Path, help="write the chosen setting's table of --fold here instead "
                    "(with --weight and --confidence: the setting chosen on the validation fold)")
    ap.add_argument("--weight", type=float, help="with --held-out-run: hemorrhage_weight")
    ap.add_argument("--confidence", type=float, help="with --held-out-run: min_hemorrhage_confidence")
    ap.add_argument("--growth", action="store_true", help="set the clot growth (ship_rule_v0.4.2.md) on top of the "
                    "model's own clot decision instead of the decision itself")
    ap.add_argument("--growth-k", type=float, default=0.0, help="with --held-out-run: clot_growth_k")
    ap.add_argument("--growth-px", type=int, default=0, help="with --held-out-run: clot_growth_px")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    try:
        model, plan = load_segmenter(a.model)
        folds = read_folds(a.folds)
        if folds_sha256(folds) != plan.training.get("folds_sha256"):
            raise StrokescanError(f"{a.folds} is not the split {a.model} was trained on")
        if a.fold == plan.training.get("test_fold") and not a.held_out_run:
            raise StrokescanError(f"fold {a.fold} is the model's held-out fold: set the decision on its validation "
                                  f"fold {plan.training.get('val_fold')}")
        if a.held_out_run and (a.weight is None or a.confidence is None):
            raise StrokescanError("--held-out-run needs the --weight and --confidence chosen on the validation fold")
        data = build_cache(build_segmentation_manifest(), plan.slice_plan)
    except StrokescanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    part = data.subset(np.nonzero(data.rows["patient"].map(fold_of(folds)).to_numpy() == a.fold)[0])
    probs = predict_probs(model, part.images)

    if a.held_out_run:
        chosen = dataclasses.replace(plan, hemorrhage_weight=a.weight, min_hemorrhage_confidence=a.confidence,
                                     clot_growth_k=a.growth_k, clot_growth_px=a.growth_px)
        t = evaluate_probs(probs, part, float(plan.training.get("baseline_k", 2.0)),
                           edema_params=plan.training.get("edema_baseline"), plan=chosen)
        out = a.held_out_run / f"fold{a.fold}"
        out.mkdir(parents=True, exist_ok=True)
        t.assign(fold=a.fold).to_csv(out / "per_slice.csv", index=False)
        print(json.dumps({"setting": {"weight": a.weight, "confidence": a.confidence, "growth_k": a.growth_k,
                                      "growth_px": a.growth_px}, **measures(t)}))
        return 0
    if a.growth:
        return _growth(a, plan, probs, part)

    tables, rows = {}, []
    for w, g in tqdm(list(itertools.product(WEIGHTS, CONFIDENCES)), desc="settings", unit="setting"):
        t = evaluate_probs(probs, part, None, plan=dataclasses.replace(plan, hemorrhage_weight=w,
                                                                       min_hemorrhage_confidence=g))
        tables[(w, g)] = t
        rows.append({"weight": w, "confidence": g, **measures(t)})
    grid = pd.DataFrame(rows)
    best = choose(grid)
    plain = grid[(grid["weight"] == 1.0) & (grid["confidence"] == 0.0)].iloc[0]
    tb, tp = tables[(best["weight"], best["confidence"])], tables[(1.0, 0.0)]
    tests = {"(a) F lower by >= %.2f" % F_GAIN: plain["F"] - best["F"] >= F_GAIN,
             "(b) D not lower by > %.2f" % D_MARGIN: best["D"] >= plain["D"] - D_MARGIN,
             "(c) E not lower by > %.2f" % E_MARGIN: best["E"] >= plain["E"] - E_MARGIN}
    lines = [f"# Clot decision set on validation fold {a.fold} (rule: reports/segmentation/ship_rule_v0.4.1.md)", "",
             f"Command: `.venv/bin/python scripts/calibrate_segmenter.py --fold {a.fold}"
             f"{f' --out {a.out}' if a.out else ''}`; model {_shown(a.model)} "
             f"(weights sha256 {plan.weights_sha256[:16]}). Slices: D on {int(plain['n_D'])} slices with blood, "
             f"F on {int(plain['n_F'])} ctich-masks lesion-free slices, E on {int(plain['n_E'])} phe-sich slices "
             f"with edema ({part.rows['patient'].nunique()} patients in the fold).", "",
             "| hemorrhage_weight | min_hemorrhage_confidence | D clot Dice | F lesion-free slices with clot | E edema Dice |",
             "|---|---|---|---|---|"]
    for r in grid.itertuples():
        mark = " **chosen**" if (r.weight, r.confidence) == (best["weight"], best["confidence"]) else ""
        lines.append(f"| {r.weight:g} | {r.confidence:g}{mark} | {r.D:.3f} | {r.F:.3f} | {r.E:.3f} |")
    lines += ["", f"Chosen: weight {best['weight']:g}, confidence {best['confidence']:g}. Against the plain decision "
              "(v0.4.0), paired per slice, mean [95 % patient-bootstrap CI]:", "",
              f"- D clot Dice: {best['D']:.3f} vs {plain['D']:.3f}, {paired(tb, tp, 'hemorrhage', None, 'dice')}",
              f"- F lesion-free ctich-masks slices with clot: {best['F']:.3f} vs {plain['F']:.3f}, "
              f"{paired(tb, tp, 'hemorrhage', 'ctich-masks', 'fp')}",
              f"- E phe-sich edema Dice: {best['E']:.3f} vs {plain['E']:.3f}, {paired(tb, tp, 'edema', 'phe-sich', 'dice')}",
              ]
    return _decide(lines, tests, "ship the calibrated decision as v0.4.1", "keep v0.4.0 as it is",
                   {"weight": float(best["weight"]), "confidence": float(best["confidence"])}, a.out)


if __name__ == "__main__":
    raise SystemExit(main())
