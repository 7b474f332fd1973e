"""Set the segmenter's clot decision (``hemorrhage_weight``, ``min_hemorrhage_confidence``) on a validation fold,
or one of the later candidates on top of the model's own decision (``--candidate``): ``growth`` (v0.4.2) and
``growth2`` (v0.4.3) the clot growth into hyperdense pixels (``clot_growth_k``, ``clot_growth_px``), ``brain``
clot only inside the skull (``clot_within_brain_px``), ``gate`` the detector gate (``min_slice_probability``,
with the detector's out-of-fold slice probabilities from ``--detector-oof``).

    .venv/bin/python studies/calibrate_segmenter.py --fold 1 --out reports/segmentation/calibration_v0.4.1.md
    .venv/bin/python studies/calibrate_segmenter.py --fold 1 --growth --out reports/segmentation/growth_v0.4.2.md
    .venv/bin/python studies/calibrate_segmenter.py --fold 1 --candidate brain --out reports/segmentation/brain_v0.4.3.md

One network pass over the fold, then every setting of the grid in the input grid (head mask and minimum size as
at inference). Per setting: D = mean clot Dice on slices with blood (all sources), F = share of ctich-masks
lesion-free slices with any clot pixel, E = phe-sich edema Dice on slices with edema. The choice and the ship
test follow each candidate's rule (``CANDIDATES``: written before its figures). Use the model's early-stopping
fold (its plan's ``val_fold``), never its held-out fold. ``--set FIELD=VALUE`` stacks a decision already taken
on the plan first (v0.4.3's rule judges B, then H, then G2). ``--held-out-run DIR`` instead writes the chosen
setting's held-out table as ``DIR/fold<k>/per_slice.csv`` (with the threshold baseline), for
``studies/segmentation_clinical_figures.py DIR``: only after the decision.

``--cv RUN [RUN ...]`` judges the grid on the pooled validation folds of a cross-validation instead: every fold
model ``RUN/fold<k>/model`` predicts its own early-stopping fold, and together they hold every patient once
(``reports/segmentation/cv_plan_v0.6.md``); with ``--held-out-run`` each fold model's held-out table is written.

    .venv/bin/python studies/calibrate_segmenter.py --cv reports/segmentation/cv_r_v0.6 --jobs 2 \
        --out reports/segmentation/cv_decision_v0.6.md
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from strokescan.datasets.lesion_masks import build_segmentation_manifest
from strokescan.datasets.splits import fold_of, read_folds
from strokescan.errors import StrokescanError
from strokescan.evaluation.metrics import patient_bootstrap
from strokescan.inference.segmenter import DEFAULT_SEGMENTER_DIR, clot_decision_text
from strokescan.models.unet import SegmenterPlan, load_segmenter
from strokescan.training.segmenter import build_cache, evaluate_probs, folds_sha256, predict_probs, read_truths

FP_TARGET = 0.05  # rule: highest D among settings with F <= this
D_MARGIN = 0.02  # rule: otherwise the lowest F with D >= D(plain) - this; ship test (b)
E_MARGIN = 0.02  # ship test (c)
DEFAULT_FOLDS = Path("reports/segmentation/folds_v0.4.0.json")
D_GAIN = 0.02  # growth ship tests: D higher by at least this, paired CI above 0


class Candidate(NamedTuple):
    """A decision after the network, judged on a validation fold by a rule written before its figures."""

    rule: str  # the ship rule's file in reports/segmentation
    version: str  # the version it ships as
    fields: tuple[str, ...]  # the plan fields its grid sets (the first setting is "off")
    settings: tuple[tuple, ...]
    by_dice: bool  # choice: highest D (E kept) if true, else the false-positive choice of v0.4.1's rule
    f_gain: float = 0.0  # ship test: F lower than off by at least this (false-positive choice only)


CANDIDATES = {
    "decision": Candidate("ship_rule_v0.4.1.md", "v0.4.1", ("hemorrhage_weight", "min_hemorrhage_confidence"),
                          tuple(itertools.product((1.0, 1.25, 1.5, 2.0, 3.0), (0.0, 0.6, 0.7, 0.8, 0.9, 0.95))),
                          by_dice=False, f_gain=0.05),
    "growth": Candidate("ship_rule_v0.4.2.md", "v0.4.2", ("clot_growth_k", "clot_growth_px"),
                        ((0.0, 0), *itertools.product((1.5, 2.0, 2.5, 3.0), (5, 10, 20))), by_dice=True),
    "brain": Candidate("ship_rule_v0.4.3.md", "v0.4.3", ("clot_within_brain_px",), ((-1,), (0,), (2,), (5,)),
                       by_dice=False, f_gain=0.02),
    "gate": Candidate("ship_rule_v0.4.3.md", "v0.4.3", ("min_slice_probability",),
                      ((0.0,), (0.02,), (0.041,), (0.1,), (0.2,), (0.281,)), by_dice=False, f_gain=0.03),
    "growth2": Candidate("ship_rule_v0.4.3.md", "v0.4.3", ("clot_growth_k", "clot_growth_px"),
                         ((0.0, 0), *itertools.product((0.75, 1.0, 1.25, 1.5), (20, 30, 45))), by_dice=True),
}


def measures(table: pd.DataFrame) -> dict[str, float]:
    """D, F and E (see the module docstring) of the U-Net in one setting's per-slice table."""
    table = table[table["method"] == "unet"]
    clot = table[table["class"] == "hemorrhage"]
    pos = clot[clot["true_px"] > 0]
    neg = clot[(clot["true_px"] == 0) & (clot["source"] == "ctich-masks")]
    edema = table[(table["class"] == "edema") & (table["source"] == "phe-sich") & (table["true_px"] > 0)]
    return {"D": float(pos["dice"].mean()), "F": float((neg["pred_px"] > 0).mean()), "E": float(edema["dice"].mean()),
            "n_D": len(pos), "n_F": len(neg), "n_E": len(edema)}


def choose(grid: pd.DataFrame, plain: pd.Series) -> pd.Series:
    """The rule's choice: highest D with F <= FP_TARGET; else the lowest F with D >= D(plain) - D_MARGIN."""
    ok = grid[grid["F"] <= FP_TARGET]
    if len(ok):
        return ok.sort_values(["D", "F"], ascending=[False, True]).iloc[0]
    near = grid[grid["D"] >= plain["D"] - D_MARGIN]
    return near.sort_values(["F", "D"], ascending=[True, False]).iloc[0]


def paired_estimate(a: pd.DataFrame, b: pd.DataFrame, cls: str, source: str | None,
                    value: str) -> tuple[float, float, float]:
    """Mean of a - b per slice and its patient-bootstrap 95 % CI (``value``: "dice" on slices holding the class,
    "fp" on lesion-free slices)."""
    def part(t: pd.DataFrame) -> pd.DataFrame:
        t = t[(t["class"] == cls) & ((t["source"] == source) if source else True)]
        t = t[t["true_px"] > 0] if value == "dice" else t[t["true_px"] == 0].assign(dice=(t["pred_px"] > 0) * 1.0)
        return t.set_index(["patient", "image_path", "frame"])["dice"]
    d = (part(a) - part(b)).dropna().reset_index(name="v")
    est = patient_bootstrap(d, lambda f: {"m": float(f["v"].mean())})["m"]
    return est["value"], est["ci95"][0], est["ci95"][1]


def paired(a: pd.DataFrame, b: pd.DataFrame, cls: str, source: str | None, value: str) -> str:
    """:func:`paired_estimate` as text: ``+m [+lo, +hi]``."""
    m, lo, hi = paired_estimate(a, b, cls, source, value)
    return f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]"


_SHARED: dict = {}  # the arrays every setting is evaluated on, inherited by forked --jobs workers


def _evaluate_setting(plan: SegmenterPlan) -> pd.DataFrame:
    """One setting's per-slice table on the shared inputs (a module-level function: --jobs workers call it)."""
    probs, part, slice_probability, truths = _SHARED["inputs"]
    return evaluate_probs(probs, part, None, plan=plan, slice_probability=slice_probability, truths=truths)


def _candidate(a: argparse.Namespace, name: str, plan: SegmenterPlan, probs: np.ndarray, part,
               slice_probability: np.ndarray | None, where: str, models: str) -> int:
    """One candidate's grid on top of ``plan``, its choice and ship test (the rule in ``CANDIDATES[name]``)."""
    cand = CANDIDATES[name]
    plans = [dataclasses.replace(plan, **dict(zip(cand.fields, setting))) for setting in cand.settings]
    _SHARED["inputs"] = (probs, part, slice_probability, read_truths(part))
    with ProcessPoolExecutor(a.jobs, mp_context=multiprocessing.get_context("fork")) if a.jobs > 1 else nullcontext() as pool:
        evaluated = (pool.map if pool else map)(_evaluate_setting, plans)
        tables = dict(zip(cand.settings, tqdm(evaluated, total=len(plans), desc="settings", unit="setting")))
    rows = [{**dict(zip(cand.fields, setting)), **measures(t)} for setting, t in tables.items()]
    grid = pd.DataFrame(rows)
    off = grid.iloc[0]
    if cand.by_dice:
        best = grid[grid["E"] >= off["E"] - E_MARGIN].sort_values(["D", "F"], ascending=[False, True]).iloc[0]
    else:
        best = choose(grid, off)
    chosen = cand.settings[best.name]
    tb, to = tables[chosen], tables[cand.settings[0]]
    d_mean, d_low, d_high = paired_estimate(tb, to, "hemorrhage", None, "dice")
    if cand.by_dice:
        tests = {f"D higher by >= {D_GAIN:.2f}": best["D"] - off["D"] >= D_GAIN,
                 "paired CI of the D difference above 0": d_low > 0}
    else:
        tests = {f"F lower by >= {cand.f_gain:.2f}": off["F"] - best["F"] >= cand.f_gain,
                 f"D not lower by > {D_MARGIN:.2f}": best["D"] >= off["D"] - D_MARGIN}
    tests[f"E not lower by > {E_MARGIN:.2f}"] = best["E"] >= off["E"] - E_MARGIN
    stacked = "".join(f" --set {s}" for s in a.set)
    source = " ".join(["--cv", *map(_shown, a.cv)]) if a.cv else f"--fold {a.fold}"
    lines = [f"# Candidate {name} set on {where} (rule: reports/segmentation/{cand.rule})", "",
             f"Command: `.venv/bin/python studies/calibrate_segmenter.py {source} "
             f"{'--growth' if name == 'growth' else f'--candidate {name}'}{stacked}"
             f"{f' --detector-oof {_shown(a.detector_oof)}' if a.detector_oof else ''}"
             f"{f' --out {a.out}' if a.out else ''}`; {models}; decision before the candidate: "
             f"{clot_decision_text(plan, gated=True)}. "
             f"Slices: D on {int(off['n_D'])} slices with blood, F on {int(off['n_F'])} ctich-masks lesion-free "
             f"slices, E on {int(off['n_E'])} phe-sich slices with edema.", "",
             f"| {' | '.join(cand.fields)} | D clot Dice | F lesion-free slices with clot | E edema Dice |",
             "|" + "---|" * (len(cand.fields) + 3)]
    for r, setting in zip(grid.itertuples(index=False), cand.settings):
        mark = " **chosen**" if setting == chosen else ""
        values = " | ".join("off" if i == 0 and setting == cand.settings[0] else f"{v:g}" for i, v in enumerate(setting))
        lines.append(f"| {values}{mark} | {r.D:.3f} | {r.F:.3f} | {r.E:.3f} |")
    lines += ["", f"Chosen: {', '.join(f'{f} {v:g}' for f, v in zip(cand.fields, chosen))}. Against off, paired per "
              "slice, mean [95 % patient-bootstrap CI]:", "",
              f"- D clot Dice: {best['D']:.3f} vs {off['D']:.3f}, {d_mean:+.3f} [{d_low:+.3f}, {d_high:+.3f}]",
              f"- F lesion-free ctich-masks slices with clot: {best['F']:.3f} vs {off['F']:.3f}, "
              f"{paired(tb, to, 'hemorrhage', 'ctich-masks', 'fp')}",
              f"- E phe-sich edema Dice: {best['E']:.3f} vs {off['E']:.3f}, {paired(tb, to, 'edema', 'phe-sich', 'dice')}",
              ]
    ship_text = (f"keep the chosen setting (a CV's ship rule is judged apart, on its plan's fold)" if a.cv
                 else f"ship candidate {name} as {cand.version}")
    return _decide(lines, tests, ship_text, "keep the model as it is",
                   {f: float(v) for f, v in zip(cand.fields, chosen)}, a.out)


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


def _setting(text: str) -> tuple[str, float]:
    """``FIELD=VALUE`` of ``--set`` (a numeric field of the segmenter's plan)."""
    field, _, value = text.partition("=")
    numeric = {f.name for f in dataclasses.fields(SegmenterPlan) if f.type in ("int", "float")}
    if field not in numeric or not value:
        raise argparse.ArgumentTypeError(f"--set needs FIELD=VALUE with FIELD one of {', '.join(sorted(numeric))}")
    try:
        return field, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--set {field}: {value!r} is not a number") from None


def _with(plan: SegmenterPlan, settings: list[tuple[str, float]]) -> SegmenterPlan:
    """``plan`` with the ``--set`` values (int fields stay int)."""
    kinds = {f.name: f.type for f in dataclasses.fields(SegmenterPlan)}
    return dataclasses.replace(plan, **{f: int(v) if kinds[f] == "int" else v for f, v in settings})


def detector_probability(oof_csv: Path, rows: pd.DataFrame) -> np.ndarray:
    """Each row's out-of-fold detector probability of any hemorrhage (``oof_predictions.csv`` of a detector CV,
    matched on the image file), NaN (no gate) on sources the detector does not cover (the infarct sets);
    :class:`StrokescanError` when a row of a covered source has none."""
    oof = pd.read_csv(oof_csv)
    p = rows[["image_path"]].merge(oof[["image_path", "p_any"]].drop_duplicates("image_path"), on="image_path",
                                   how="left")["p_any"].to_numpy(float)
    missing = np.isnan(p) & rows["source"].isin(set(oof["source"]) | {"ctich-masks"}).to_numpy()
    if missing.any():
        raise StrokescanError(f"{oof_csv} has no detector probability for {int(missing.sum())} of the fold's "
                              f"{len(p)} slices")
    return p


class FoldPredictions(NamedTuple):
    """One model's class probabilities on the slices of one fold."""

    fold: int
    plan: SegmenterPlan
    rows: np.ndarray  # indices into the cached data
    probs: np.ndarray


def _models(a: argparse.Namespace, folds: dict) -> list[tuple[torch.nn.Module, SegmenterPlan]]:
    """``--model``, or the fold models of the ``--cv`` run folders (``RUN/fold<k>/model``, one per held-out
    fold), checked against ``folds``; :class:`StrokescanError` when they do not fit it."""
    if not a.cv:
        model, plan = load_segmenter(a.model)
        if folds_sha256(folds) != plan.training.get("folds_sha256"):
            raise StrokescanError(f"{a.folds} is not the split {a.model} was trained on")
        if a.fold == plan.training.get("test_fold") and not a.held_out_run:
            raise StrokescanError(f"fold {a.fold} is the model's held-out fold: set the decision on its validation "
                                  f"fold {plan.training.get('val_fold')}")
        return [(model, plan)]
    found = sorted(d for run in a.cv for d in Path(run).glob("fold*/model") if (d / "segmenter.json").is_file())
    if not found:
        raise StrokescanError(f"no finished fold model (fold<k>/model) in {', '.join(map(str, a.cv))}")
    models, held_out = [], set()
    for d in found:
        model, plan = load_segmenter(d)
        if plan.training.get("folds_sha256") != folds_sha256(folds):
            raise StrokescanError(f"{d} was not trained on the split of --folds")
        if plan.training.get("test_fold") in held_out:
            raise StrokescanError(f"two fold models hold out fold {plan.training.get('test_fold')} ({d})")
        held_out.add(plan.training.get("test_fold"))
        models.append((model, plan))
    return models


def _predictions(a: argparse.Namespace, models: list, data, fold: np.ndarray) -> tuple[list[FoldPredictions], str, str]:
    """Each model's probabilities on ``--fold``, or with ``--cv`` on its validation fold (its held-out fold with
    ``--held-out-run``); where they come from, and which models made them."""
    if not a.cv:
        (model, plan), = models
        rows = np.nonzero(fold == a.fold)[0]
        return ([FoldPredictions(a.fold, plan, rows, predict_probs(model, data.images[rows]))],
                f"validation fold {a.fold}", f"model {_shown(a.model)} (weights sha256 {plan.weights_sha256[:16]})")
    key = "test_fold" if a.held_out_run else "val_fold"
    out = []
    for model, plan in tqdm(models, desc="fold models", unit="model"):
        rows = np.nonzero(fold == plan.training[key])[0]
        out.append(FoldPredictions(plan.training[key], plan, rows, predict_probs(model, data.images[rows])))
    held = sorted(p.training["test_fold"] for _, p in models)
    return (out, f"the pooled validation folds of {len(models)} CV fold models",
            f"{len(models)} fold models (held-out folds {', '.join(map(str, held))}; weights sha256 "
            + ", ".join(p.weights_sha256[:8] for _, p in models) + ")")


def _held_out_tables(a: argparse.Namespace, data, predictions: list[FoldPredictions]) -> int:
    """Each fold's table with the setting chosen on validation (``--weight``, ``--confidence``, ``--set``), written
    as ``--held-out-run``/fold<k>/per_slice.csv with the threshold baselines of the model's training folds."""
    tables = []
    for p in predictions:
        chosen = dataclasses.replace(_with(p.plan, a.set), hemorrhage_weight=a.weight,
                                     min_hemorrhage_confidence=a.confidence)
        part = data.subset(p.rows)
        slice_probability = detector_probability(a.detector_oof, part.rows) if a.detector_oof else None
        t = evaluate_probs(p.probs, part, float(p.plan.training.get("baseline_k", 2.0)),
                           edema_params=p.plan.training.get("edema_baseline"), plan=chosen,
                           slice_probability=slice_probability).assign(fold=p.fold)
        out = a.held_out_run / f"fold{p.fold}"
        out.mkdir(parents=True, exist_ok=True)
        t.to_csv(out / "per_slice.csv", index=False)
        tables.append(t)
        print(json.dumps({"fold": p.fold, "setting": clot_decision_text(chosen, gated=slice_probability is not None),
                          **measures(t)}))
    if len(tables) > 1:
        print(json.dumps({"fold": "pooled", **measures(pd.concat(tables, ignore_index=True))}))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_SEGMENTER_DIR, help="segmenter folder (default: bundled)")
    ap.add_argument("--folds", type=Path, default=DEFAULT_FOLDS, help="the model's folds file (its sha256 is checked)")
    ap.add_argument("--fold", type=int, help="validation fold to set the decision on")
    ap.add_argument("--cv", type=Path, nargs="+", metavar="RUN", help="instead of --model and --fold: CV run folders; "
                    "each fold<k>/model predicts its validation fold and the grid is judged on them pooled")
    ap.add_argument("--out", type=Path, help="write the Markdown report here too")
    ap.add_argument("--candidate", choices=list(CANDIDATES), default="decision",
                    help="what to set: the clot decision (v0.4.1's rule, default) or a later candidate on top of "
                    "the model's own decision")
    ap.add_argument("--growth", action="store_const", const="growth", dest="candidate",
                    help="same as --candidate growth (ship_rule_v0.4.2.md)")
    ap.add_argument("--set", type=_setting, action="append", default=[], metavar="FIELD=VALUE",
                    help="a plan value applied first (a decision already taken; repeatable)")
    ap.add_argument("--detector-oof", type=Path, help="the detector CV's oof_predictions.csv: slice probabilities "
                    "for the detector gate (needed by --candidate gate and by a gated held-out table)")
    ap.add_argument("--held-out-run", type=Path, help="write the chosen setting's table of --fold (with --cv: of "
                    "each fold model's held-out fold) here instead (with --weight and --confidence, and --set for "
                    "the rest: the setting chosen on validation)")
    ap.add_argument("--weight", type=float, help="with --held-out-run: hemorrhage_weight")
    ap.add_argument("--confidence", type=float, help="with --held-out-run: min_hemorrhage_confidence")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the network pass")
    ap.add_argument("--jobs", type=int, default=1, help="settings evaluated side by side (processes; one per core)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    try:
        if (a.fold is None) == (not a.cv):
            raise StrokescanError("give either --fold (one model) or --cv (the fold models of a CV)")
        if a.held_out_run and (a.weight is None or a.confidence is None):
            raise StrokescanError("--held-out-run needs the --weight and --confidence chosen on the validation fold")
        if a.candidate == "gate" and not a.detector_oof:
            raise StrokescanError("--candidate gate needs --detector-oof (the detector CV's oof_predictions.csv)")
        folds = read_folds(a.folds)
        models = _models(a, folds)
        if len({plan.slice_plan for _, plan in models}) > 1:
            raise StrokescanError("the fold models prepare their slices differently")
        data = build_cache(build_segmentation_manifest(), models[0][1].slice_plan)
        fold = data.rows["patient"].map(fold_of(folds)).to_numpy()
        predictions, where, made_by = _predictions(a, models, data, fold)
        if a.held_out_run:
            return _held_out_tables(a, data, predictions)
        rows = np.concatenate([p.rows for p in predictions])
        part = data.subset(rows)
        slice_probability = detector_probability(a.detector_oof, part.rows) if a.detector_oof else None
    except StrokescanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    probs = np.concatenate([p.probs for p in predictions])
    plan = _with(predictions[0].plan, a.set)
    return _candidate(a, a.candidate, plan, probs, part, slice_probability, where, made_by)


if __name__ == "__main__":
    raise SystemExit(main())
