"""``strokescan train classifier|segmenter|orientation`` and ``strokescan evaluate``: argument parsing for the
training and evaluation entry points of the library (runs write under ``runs/`` by default, never into the
installed package).

Each handler imports its training or evaluation module when it runs: those bring pandas, scikit-learn and
matplotlib (about 2 s), which ``strokescan predict`` must not pay for.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from strokescan.config import SEED

PUBLIC_SETS_HELP = "bhsd, ctich-nifti, aisd or teknofest"  # checked against lesion_masks.PUBLIC_LABELLED


def _train_classifier(args: argparse.Namespace) -> int:
    import torch

    from strokescan.training.detection import DetectorConfig
    from strokescan.training.workflow import train_detection

    torch.set_num_threads(args.threads)
    cfg = DetectorConfig(max_epochs=args.max_epochs, patience=args.patience, seed=args.seed)
    run_dir = Path(args.run_dir or f"runs/detector_{args.protocol}")
    out = Path(args.out) if args.out else run_dir / "model"
    train_detection(args.protocol, run_dir, out, cfg)
    print(f"model written to {out}; out-of-fold predictions in {run_dir}; report: strokescan evaluate --run-dir {run_dir}")
    return 0


def _public_set(text: str) -> tuple[str, Path]:
    from strokescan.datasets.lesion_masks import PUBLIC_LABELLED

    name, sep, folder = text.partition("=")
    if not sep or name not in PUBLIC_LABELLED or not folder:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=FOLDER with NAME one of {', '.join(PUBLIC_LABELLED)}")
    return name, Path(folder)


def _group_weights(text: str) -> dict[str, float]:
    """``hemorrhage=0.45,edema=0.2,...`` -> {group: share}; every sampling group named once, shares non-negative and not all 0."""
    from strokescan.core.labels import LESION_CLASSES

    groups = {c.label for c in LESION_CLASSES} | {"negative"}
    try:
        shares = {k.strip(): float(v) for k, v in (item.split("=") for item in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected GROUP=SHARE,... (e.g. hemorrhage=0.45,negative=0.25)")
    if set(shares) != groups or min(shares.values()) < 0 or sum(shares.values()) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a non-negative share for each of {', '.join(sorted(groups))}")
    return shares


def _train_segmenter(a: argparse.Namespace) -> int:
    import torch

    from strokescan.models.unet import UNetConfig, build_unet
    from strokescan.training.segmenter import SegTrainConfig, benchmark_step, run_training

    logging.getLogger("strokescan").setLevel(logging.INFO)
    torch.set_num_threads(a.threads)
    unet = UNetConfig(arch=a.arch, freeze_encoder_blocks=a.freeze_blocks if a.arch == "effnet" else 0)
    if a.benchmark:
        sec = benchmark_step(build_unet(unet, pretrained=not a.no_pretrained), batch=a.batch_size, threads=a.threads)
        print(f"{a.arch}: {sec:.2f} s per training step (batch {a.batch_size}, 256 px, {a.threads} thread(s)); "
              f"{a.max_epochs} epochs x {a.steps_per_epoch} steps <= {sec * a.max_epochs * a.steps_per_epoch / 60:.0f} min")
        return 0
    cfg = SegTrainConfig(max_epochs=a.max_epochs, patience=a.patience, steps_per_epoch=a.steps_per_epoch,
                         batch_size=a.batch_size, lr=a.lr, augment=not a.no_augment, threads=a.threads,
                         train_seed=a.train_seed, **({"group_weights": a.group_weights} if a.group_weights else {}))
    limit = None
    if a.smoke:
        cfg = SegTrainConfig(max_epochs=2, patience=1, steps_per_epoch=2, batch_size=2, threads=a.threads,
                             train_seed=a.train_seed)
        limit = 6
    t0 = time.time()
    res = run_training(a.out, cfg, unet=unet, test_folds=tuple(int(k) for k in a.test_folds.split(",")),
                       n_folds=a.n_folds, ctich_negatives_per_patient=a.ctich_negatives,
                       pretrained=not a.no_pretrained, classifier_dir=a.classifier_dir,
                       init_model=a.init_model, limit_per_source=limit,
                       n_boot=50 if a.smoke else a.bootstrap, final=a.final, public=dict(a.public))
    s = res["summary"]
    cols = ["method", "source", "class", "n_slices", "n_slices_with_class", "dice_pos", "dice_all", "fp_slice_rate"]
    print(s[cols].to_string(index=False) if len(s) else "no evaluation rows")
    print(f"model: {res['model_dir']}  report: {Path(a.out) / 'report' / 'report.md'}  ({(time.time() - t0) / 60:.1f} min)")
    return 0


def _train_orientation(a: argparse.Namespace) -> int:
    from strokescan.training.orientation import OrientationTrainConfig, train_orientation

    cfg = OrientationTrainConfig(epochs=a.epochs, batch=a.batch, lr=a.lr, seed=a.seed, threads=a.threads,
                                 all_folds=a.all_folds)
    train_orientation(Path(a.out), cfg)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from strokescan.datasets.local import real_series
    from strokescan.evaluation.detection_report import evaluate_detector, markdown_report

    series = {} if args.no_series else real_series()
    report = Path(args.report or Path(args.run_dir) / "report")
    figures = evaluate_detector(Path(args.run_dir), report, args.model, series=series)
    print(markdown_report(figures))
    print(f"report written to {report}")
    return 0


def add_training_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``train`` (with its three models) and ``evaluate`` to the CLI's subcommands."""
    train = sub.add_parser("train", help="train a model: classifier, segmenter or orientation",
                           description="Train one of strokescan's models on the shared data ($STROKESCAN_DATA, "
                           "else ../shared/data from the current folder). Runs are resumable and write under "
                           "runs/ unless told otherwise; to bundle a model, copy its folder into the package's "
                           "resources/models/.")
    which = train.add_subparsers(dest="model_kind", metavar="MODEL", required=True)

    p = which.add_parser(
        "classifier", help="the hemorrhage detector (any + 5 subtypes, slice context), 5-fold patient-grouped CV + "
        "final model",
        description="Train the hemorrhage detector: caches preprocessed slices and frozen-trunk features under the "
        "cache folder ($STROKESCAN_CACHE, else ~/.cache/strokescan), runs the committed patient-grouped folds "
        "(resumes finished folds from RUN_DIR), then trains the final model on every labelled slice of the "
        "protocol's sources and writes it with its plan (calibration per output, scan score rule, the 'balanced' "
        "and 'sensitive' operating points, all from out-of-fold predictions). Protocol 'ctich' trains on "
        "ctich-kaggle only (phe-sich stays external); 'all' adds phe-sich and the bhsd-mini positives.")
    p.add_argument("--protocol", choices=("all", "ctich", "no-phe-sich", "no-ctich"), default="all",
                   help="which sources train (default: all); the others are tested as hospitals never seen "
                        "(leave-one-source-out: ctich and no-phe-sich leave phe-sich out, no-ctich leaves ctich-kaggle out)")
    p.add_argument("--run-dir", default=None, help="folder for per-fold results (resumable; default "
                   "runs/detector_PROTOCOL)")
    p.add_argument("--out", default=None, help="folder to write the final model to (default RUN_DIR/model)")
    p.add_argument("--max-epochs", type=int, default=30)
    p.add_argument("--patience", type=int, default=3, help="epochs without a better validation ROC-AUC before a "
                   "fold stops (default 3)")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--threads", type=int, default=2, help="torch threads (1 when another job shares the cores)")
    p.set_defaults(func=_train_classifier)

    p = which.add_parser(
        "segmenter", help="the lesion U-Net (hemorrhage, edema, infarct) with a held-out report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train the lesion U-Net on every mask set and write <out>/model (segmenter.pt + "
        "segmenter.json), <out>/report/report.md (per dataset and class, U-Net next to the threshold baseline), "
        "<out>/train.log and per-fold checkpoints (rerun the same command to resume). See docs/segmentation.md."
        "\n\nWith the full public sets unpacked somewhere, add them (each replaces the mini set cut from it):\n"
        "  strokescan train segmenter --out runs/seg_full --public bhsd=/data/BHSD/label_192 \\\n"
        "      --public aisd=/data/AISD --public ctich-nifti=/data/ct-ich-1.3.1 --public teknofest=/data/TEKNOFEST")
    p.add_argument("--out", default="runs/segmentation", help="run folder (resumes if it holds checkpoints)")
    p.add_argument("--test-folds", default="0", help="comma-separated held-out folds, e.g. 0 or 0,1,2,3,4 (CV)")
    p.add_argument("--n-folds", type=int, default=5)
    p.add_argument("--arch", choices=["effnet", "basic"], default="effnet")
    p.add_argument("--freeze-blocks", type=int, default=3, help="effnet: stem + first N encoder blocks frozen")
    p.add_argument("--no-pretrained", action="store_true", help="effnet encoder from random weights")
    p.add_argument("--classifier-dir", type=Path, default=None, help="init the encoder from a trained classifier")
    p.add_argument("--init-model", type=Path, default=None,
                   help="fine-tune a saved segmenter (from a run with the same folds); with --max-epochs 0 only "
                        "evaluate it on the held-out fold")
    p.add_argument("--no-augment", action="store_true", help="train without augmentation (ablation)")
    p.add_argument("--max-epochs", type=int, default=30)
    p.add_argument("--patience", type=int, default=6)
    p.add_argument("--steps-per-epoch", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--group-weights", type=_group_weights, default=None, metavar="GROUP=SHARE,...",
                   help="share of each batch per sampling group, e.g. hemorrhage=0.45,edema=0.2,infarct=0.1,"
                        "negative=0.25 (default 0.3/0.25/0.2/0.25)")
    p.add_argument("--train-seed", type=int, default=None,
                   help="seed of batch draws and augmentation only (default: the data seed); data and folds stay")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads; 2 only when nothing else runs (2 threads on busy cores: 17 s/step)")
    p.add_argument("--ctich-negatives", type=int, default=4,
                   help="lesion-free slices per patient of ctich-kaggle and of each full public set")
    p.add_argument("--public", type=_public_set, action="append", default=[], metavar="NAME=FOLDER",
                   help=f"add a full public set ({PUBLIC_SETS_HELP}) unpacked in FOLDER; repeatable")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--final", action="store_true",
                   help="after the held-out evaluation, train the deployable model on all folds but the early-"
                        "stopping one (about doubles the time)")
    p.add_argument("--smoke", action="store_true", help="tiny run (few patients, 2 epochs x 2 steps) to check wiring")
    p.add_argument("--benchmark", action="store_true", help="only time one training step and exit")
    p.set_defaults(func=_train_segmenter)

    p = which.add_parser(
        "orientation", help="the rotation network, self-supervised on upright slices",
        description="Train the orientation network on ctich-kaggle folds 1-4 (fold 0 held out for "
        "benchmarks/rotation_accuracy.py) and the upright mini sets; every epoch turns each slice by a fresh "
        "random angle and the net regresses (cos, sin) of it. phe-sich is never used.")
    p.add_argument("--out", default="runs/orientation", help="model folder to write")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--all-folds", action="store_true", help="also train on fold 0 (no held-out check then)")
    p.set_defaults(func=_train_orientation)

    p = sub.add_parser(
        "evaluate",
        help="write the detector's evaluation report (per-dataset CV, subtypes, calibration, real series)",
        description="Figures from RUN_DIR's out-of-fold predictions, per dataset: slice and scan ROC-AUC, "
        "sensitivity and specificity at both operating points with each fold's thresholds from its own validation "
        "fold, ECE and reliability plots, ROC-AUC per subtype; sources the protocol did not train on are reported "
        "as external. Then the final model on the real scanner series (CQ500-CT-0, CQ500-CT-1, GE): scan score "
        "and slices flagged per operating point. 95 % CIs from 1000 bootstrap resamples of patients.",
    )
    p.add_argument("--run-dir", default="runs/detector_all")
    p.add_argument("--model", type=Path, default=None, help="model folder (default RUN_DIR/model)")
    p.add_argument("--report", default=None, help="report folder (default RUN_DIR/report)")
    p.add_argument("--no-series", action="store_true", help="skip the real scanner series")
    p.set_defaults(func=_evaluate)
