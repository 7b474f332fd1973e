"""Issue 29's report per source: detection per source and protocol (patient CV, leave-one-source-out), the rotation
step with and without on every set, the named real cases before and after, and a figure of sensitivity by source.

    .venv/bin/python studies/generalisation_report.py --new RUNS/detector_all --loso RUNS/detector_ctich \\
        --model src/strokescan/resources/models/classifier --out reports/generalisation

RUNS/detector_* are `strokescan train classifier --protocol all|ctich` run folders after `strokescan evaluate`
(their report/metrics.json); v0.5.0's figures are read from reports/detection/. The rotation comparison runs the
given detector through the one Predictor on every slice of each set, with the rotation step on and off (paired,
95 % patient-bootstrap CI of the difference); sets the detector trained on are marked so.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from tqdm import tqdm  # noqa: E402

from strokescan.datasets import local  # noqa: E402
from strokescan.evaluation.metrics import format_ci, patient_bootstrap, roc_auc  # noqa: E402
from strokescan.inference import Predictor  # noqa: E402
from strokescan.io import load_scan  # noqa: E402
from strokescan.models.classifier import load_classifier  # noqa: E402

OLD = Path("reports/detection")
REAL = {"CQ500-CT-1 (large IPH, 3 of 3 readers)": "head-ct-dicom/cq500-ct-1_single-slice",
        "GE HiSpeed (normal)": "head-ct-dicom/ge-hispeed-dual_gantry-tilt",
        "CQ500-CT-0 (no bleed, 2 of 3 readers)": "head-ct-dicom/cq500-ct-0_thin_jpeg-lossless"}
#: measured at e30b57e (before issue 29) with `strokescan predict PATH --json --masks-dir M` on the bundled models
BEFORE = {"CQ500-CT-1 (large IPH, 3 of 3 readers)": "p 0.358, IPH 0.26, turned 286.7 deg, flagged",
          "GE HiSpeed (normal)": "p 0.384, not flagged, 5 of 28 slices red, 6.38 mL hemorrhage (13 lesions)",
          "CQ500-CT-0 (no bleed, 2 of 3 readers)": "p 0.480, flagged, 9 of 48 slices (19 %), 8.87 mL hemorrhage"}


def _metrics(run: Path) -> dict:
    return json.loads((run / "report" / "metrics.json").read_text())


def detection_rows(name: str, metrics: dict) -> list[str]:
    rows = []
    for source, d in metrics["datasets"].items():
        s, c = d["slice"], d.get("scan", {})
        kind = "never seen (leave-one-source-out)" if d["external"] else "patient 5-fold CV"
        scan = (f"{format_ci(c['roc_auc'])} (n {c['n_scans']})" if c.get("roc_auc") and
                not np.isnan(c["roc_auc"]["value"]) else "—")
        ops = " / ".join(f"{format_ci(s[f'{p}_sensitivity'])} / {format_ci(s[f'{p}_specificity'])}"
                         if not np.isnan(s[f"{p}_specificity"]["value"]) else
                         f"{format_ci(s[f'{p}_sensitivity'])} / —" for p in ("balanced", "sensitive"))
        auc = format_ci(s["roc_auc"]) if not np.isnan(s["roc_auc"]["value"]) else "— (positives only)"
        rows.append(f"| {name} | {source} | {kind} | {s['n_slices']} ({s['n_positive']}) / {s['n_patients']} pt | "
                    f"{auc} | {scan} | {ops} |")
    return rows


def _sets() -> dict[str, pd.DataFrame]:
    """Every set with slice labels for hemorrhage: label 1 blood, 0 none (aisd/cpaisd: infarcts, no blood)."""
    out = {}
    kaggle = local.load_ctich_kaggle()
    labelled = kaggle[kaggle["label"].notna()]
    # 150 slices with blood and as many without, at random (seed 0): the paired comparison, not the CV figure
    out["ctich-kaggle"] = pd.concat([labelled[labelled["label"] == 1].sample(150, random_state=0),
                                     labelled[labelled["label"] == 0].sample(150, random_state=0)]
                                    )[["image_path", "patient", "label"]]
    out["phe-sich"] = local.load_phe_sich()[["image_path", "patient", "label"]]
    bhsd = local.load_bhsd_mini()
    out["bhsd-mini"] = bhsd.assign(label=1.0)[["image_path", "patient", "label"]]
    for name, loader in (("aisd-mini", local.load_aisd_mini), ("cpaisd-mini", local.load_cpaisd_mini)):
        d = loader()
        out[name] = d.assign(label=0.0, patient=d.get("patient", d["image_path"]))[["image_path", "patient", "label"]]
    return out


def rotation_frame(model: Path, sets: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per slice of every set: the detector's probability with the rotation step on and off, and the turn applied."""
    on, off = Predictor(model), Predictor(model, correct_rotation=False)
    rec = []
    for name, d in sets.items():
        for path, patient, label in tqdm(d.itertuples(index=False), total=len(d), desc=f"rotation on/off {name}",
                                         mininterval=10):
            scan = load_scan(path)
            a, b = on.analyse(scan, force=True), off.analyse(scan, force=True)
            rec.append({"set": name, "patient": str(patient), "label": float(label), "p_on": a.slices[0].probability,
                        "p_off": b.slices[0].probability, "turn": a.slices[0].rotation_deg})
    return pd.DataFrame(rec)


def rotation_rows(frame: pd.DataFrame, threshold: float, trained_on: list[str]) -> list[str]:
    """Per set: slice ROC-AUC (or flag rates) with the rotation step on and off, and how many slices it turned."""
    rows = []
    for name, f in frame.groupby("set", sort=False):
        f = f.reset_index(drop=True)
        turned = int((f["turn"] != 0).sum())
        seen = " (trained on)" if name in trained_on else ""
        y = f["label"].to_numpy(int)
        if 0 < y.sum() < len(y):
            def diff(g: pd.DataFrame) -> dict[str, float]:
                y_g = g["label"].to_numpy(int)
                return {"d": roc_auc(y_g, g["p_on"].to_numpy()) - roc_auc(y_g, g["p_off"].to_numpy())}
            ci = patient_bootstrap(f, diff)["d"]
            rows.append(f"| {name}{seen} | {len(f)} ({int(y.sum())}) | {turned} | "
                        f"{roc_auc(y, f['p_on'].to_numpy()):.3f} | {roc_auc(y, f['p_off'].to_numpy()):.3f} | "
                        f"{format_ci(ci)} |")
        else:
            what = "sensitivity" if y.all() else "flagged"
            rows.append(f"| {name}{seen} | {len(f)} ({int(y.sum())}) | {turned} | {what} "
                        f"{np.mean(f['p_on'] >= threshold):.3f} | {np.mean(f['p_off'] >= threshold):.3f} | "
                        "(balanced slice threshold) |")
    return rows


def real_rows(model: Path, segmenter: bool = True) -> list[str]:
    from strokescan.config import data_root

    predictor = Predictor(model, segment=segmenter)
    rows = []
    for name, rel in REAL.items():
        scan = load_scan(data_root() / rel)
        r = predictor.analyse(scan)
        ml = r.quantification.classes["hemorrhage"].total if r.quantification else float("nan")
        unit = r.quantification.classes["hemorrhage"].unit if r.quantification else ""
        flagged = sum(s.positive for s in r.slices)
        mask_without_brain = sum(int((m > 0).any()) for m, s in zip(r.masks or [], r.slices) if not s.brain_visible)
        rows.append(f"| {name} | {BEFORE[name]} | p {r.probability:.3f} (scan threshold {r.scan_threshold:.3f}), "
                    f"{'flagged' if r.positive else 'not flagged'}, IPH {r.subtypes['intraparenchymal']:.2f}, "
                    f"turned {r.slices[0].rotation_deg:g} deg, {flagged} of {r.n_slices} slices flagged, "
                    f"hemorrhage {ml:.2f} {unit}, masks on slices without brain: {mask_without_brain} |")
    return rows


def sensitivity_figure(runs: dict[str, dict], out: Path) -> None:
    """Slice sensitivity per source at both operating points, per detector and protocol, with 95 % CIs; red: a source
    the detector never saw (leave-one-source-out)."""
    bars = [(f"{name} | {source}", d) for name, m in runs.items() for source, d in m["datasets"].items()]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.38 * len(bars) + 1.2), sharey=True)
    for ax, point in zip(axes, ("balanced", "sensitive")):
        for y, (_, d) in enumerate(bars):
            v = d["slice"][f"{point}_sensitivity"]
            lo, hi = v["ci95"]
            ax.barh(y, v["value"], color="tab:red" if d["external"] else "tab:blue")
            ax.errorbar(v["value"], y, xerr=[[v["value"] - lo], [hi - v["value"]]], color="k", capsize=3)
        ax.set_title(f"slice sensitivity, {point} point")
        ax.set_xlim(0, 1.02)
        ax.set_xlabel("sensitivity (95 % CI)")
    axes[0].set_yticks(range(len(bars)), [label + (" (unseen)" if d["external"] else "") for label, d in bars],
                       fontsize=8)
    axes[0].invert_yaxis()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--new", type=Path, required=True, help="run folder of the all-sources protocol")
    ap.add_argument("--loso", type=Path, required=True, help="run folder of the ctich-only protocol")
    ap.add_argument("--model", type=Path, required=True, action="append",
                    help="a detector the rotation comparison runs (repeat for several; the first gives the real cases)")
    ap.add_argument("--out", type=Path, default=Path("reports/generalisation"))
    ap.add_argument("--reuse-rotation", action="store_true", help="read OUT/rotation_on_off_I.csv instead of rerunning")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    runs = {"v0.5.0 all": json.loads((OLD / "metrics_protocol_all.json").read_text()),
            "v0.5.0 ctich-only": json.loads((OLD / "metrics_protocol_ctich.json").read_text()),
            "v0.6.0 all": _metrics(a.new), "v0.6.0 ctich-only": _metrics(a.loso)}
    lines = ["# Findings at other hospitals: detection per source and protocol (issue 29)", "",
             "Command: `.venv/bin/python studies/generalisation_report.py --new " + str(a.new) + " --loso " + str(a.loso)
             + "".join(f" --model {m}" for m in a.model) + f" --out {a.out}`.", "",
             "## Detection per source", "",
             "Slice n (positive) / patients; 95 % CIs from 1000 patient-bootstrap resamples; each fold's thresholds from "
             "its own validation fold. v0.5.0 rows are the shipped detector's reports (reports/detection/).", "",
             "| detector / protocol | source | how tested | slices (positive) / patients | slice ROC-AUC | scan ROC-AUC "
             "(n scans) | balanced: sens / spec / sensitive: sens / spec |", "|---|---|---|---|---|---|---|"]
    for name, m in runs.items():
        lines += detection_rows(name, m)
    sensitivity_figure(runs, a.out / "sensitivity_by_source.png")
    lines += ["", "![slice sensitivity by source](sensitivity_by_source.png)", "",
              "## The rotation step, with and without, on every set", "",
              "Each detector through the Predictor, slice by slice (2-D images; rule in ship_rule_v0.6.0.md); "
              "ctich-kaggle: 150 slices with blood and 150 without, at random (seed 0). Difference = slice ROC-AUC "
              "with the step minus without, paired, 95 % patient-bootstrap CI. Sets a detector trained on are marked.", ""]
    for i, model in enumerate(a.model):
        csv = a.out / f"rotation_on_off_{i}.csv"
        if a.reuse_rotation and csv.exists():
            frame = pd.read_csv(csv, dtype={"patient": str})
        else:
            frame = rotation_frame(model, _sets())
            frame.to_csv(csv, index=False)
        _, plan = load_classifier(model)
        lines += [f"Detector `{model}` (trained on {', '.join(plan.training.get('sources', []))}):", "",
                  "| set | slices (blood) | slices turned | slice ROC-AUC with | without | difference (95 % CI) |",
                  "|---|---|---|---|---|---|"]
        lines += rotation_rows(frame, plan.threshold("slice", "balanced"), plan.training.get("sources", [])) + [""]
    lines += ["", "## Named real cases, before and after", "",
              "| case | before (e30b57e) | after (this detector, bundled segmenter) |", "|---|---|---|"]
    lines += real_rows(a.model[0])
    (a.out / "report.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out / 'report.md'}")


if __name__ == "__main__":
    main()
