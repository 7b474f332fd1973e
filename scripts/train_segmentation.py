"""Train the lesion U-Net (hemorrhage / edema / infarct) and write the model and a held-out report.

    .venv/bin/python scripts/train_segmentation.py --out runs/segmentation

Writes ``<out>/model`` (segmenter.pt + segmenter.json; copy it to src/strokescan/resources/models/segmenter
to bundle it), ``<out>/report/report.md`` (per dataset, per class, U-Net next to the threshold baseline),
``<out>/train.log`` and per-fold checkpoints (rerun the same command to resume). See docs/segmentation.md.

With the full public sets unpacked somewhere, add them (each replaces the mini set cut from it):

    .venv/bin/python scripts/train_segmentation.py --out runs/seg_full --public bhsd=/data/BHSD/label_192 \
        --public aisd=/data/AISD --public ctich-nifti=/data/ct-ich-1.3.1 --public teknofest=/data/TEKNOFEST
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

from strokescan.datasets.segmentation import PUBLIC_LABELLED
from strokescan.errors import StrokescanError
from strokescan.models.unet import UNetConfig, build_unet
from strokescan.training.segmentation import (
    SegTrainConfig,
    benchmark_step,
    run_training,
)


def _public_set(text: str) -> tuple[str, Path]:
    name, sep, folder = text.partition("=")
    if not sep or name not in PUBLIC_LABELLED or not folder:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=FOLDER with NAME one of {', '.join(PUBLIC_LABELLED)}")
    return name, Path(folder)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/segmentation", help="run folder (resumes if it holds checkpoints)")
    ap.add_argument("--test-folds", default="0", help="comma-separated held-out folds, e.g. 0 or 0,1,2,3,4 (CV)")
    ap.add_argument("--n-folds", type=int, default=5)
    ap.add_argument("--arch", choices=["effnet", "basic"], default="effnet")
    ap.add_argument("--freeze-blocks", type=int, default=3, help="effnet: stem + first N encoder blocks frozen")
    ap.add_argument("--no-pretrained", action="store_true", help="effnet encoder from random weights")
    ap.add_argument("--classifier-dir", type=Path, default=None, help="init the encoder from a trained classifier")
    ap.add_argument("--init-model", type=Path, default=None,
                    help="fine-tune a saved segmenter (from a run with the same folds); with --max-epochs 0 only "
                         "evaluate it on the held-out fold")
    ap.add_argument("--no-augment", action="store_true", help="train without augmentation (ablation)")
    ap.add_argument("--max-epochs", type=int, default=30)
    ap.add_argument("--patience", type=int, default=6)
    ap.add_argument("--steps-per-epoch", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--train-seed", type=int, default=None,
                    help="seed of batch draws and augmentation only (default: the data seed); data and folds stay")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; 2 only when nothing else runs (2 threads on busy cores: 17 s/step)")
    ap.add_argument("--ctich-negatives", type=int, default=4,
                    help="lesion-free slices per patient of ctich-kaggle and of each full public set")
    ap.add_argument("--public", type=_public_set, action="append", default=[], metavar="NAME=FOLDER",
                    help=f"add a full public set ({', '.join(PUBLIC_LABELLED)}) unpacked in FOLDER; repeatable")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--final", action="store_true",
                    help="after the held-out evaluation, train the deployable model on all folds but the early-"
                         "stopping one (about doubles the time)")
    ap.add_argument("--smoke", action="store_true", help="tiny run (few patients, 2 epochs x 2 steps) to check wiring")
    ap.add_argument("--benchmark", action="store_true", help="only time one training step and exit")
    a = ap.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    torch.set_num_threads(a.threads)
    unet = UNetConfig(arch=a.arch, freeze_encoder_blocks=a.freeze_blocks if a.arch == "effnet" else 0)
    if a.benchmark:
        sec = benchmark_step(build_unet(unet, pretrained=not a.no_pretrained), batch=a.batch_size, threads=a.threads)
        print(f"{a.arch}: {sec:.2f} s per training step (batch {a.batch_size}, 256 px, {a.threads} thread(s)); "
              f"{a.max_epochs} epochs x {a.steps_per_epoch} steps <= {sec * a.max_epochs * a.steps_per_epoch / 60:.0f} min")
        return 0
    cfg = SegTrainConfig(max_epochs=a.max_epochs, patience=a.patience, steps_per_epoch=a.steps_per_epoch,
                         batch_size=a.batch_size, lr=a.lr, augment=not a.no_augment, threads=a.threads,
                         train_seed=a.train_seed)
    limit = None
    if a.smoke:
        cfg = SegTrainConfig(max_epochs=2, patience=1, steps_per_epoch=2, batch_size=2, threads=a.threads,
                             train_seed=a.train_seed)
        limit = 6
    t0 = time.time()
    try:
        res = run_training(a.out, cfg, unet=unet, test_folds=tuple(int(k) for k in a.test_folds.split(",")),
                           n_folds=a.n_folds, ctich_negatives_per_patient=a.ctich_negatives,
                           pretrained=not a.no_pretrained, classifier_dir=a.classifier_dir,
                           init_model=a.init_model, limit_per_source=limit,
                           n_boot=50 if a.smoke else a.bootstrap, final=a.final, public=dict(a.public))
    except StrokescanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    s = res["summary"]
    cols = ["method", "source", "class", "n_slices", "n_slices_with_class", "dice_pos", "dice_all", "fp_slice_rate"]
    print(s[cols].to_string(index=False) if len(s) else "no evaluation rows")
    print(f"model: {res['model_dir']}  report: {Path(a.out) / 'report' / 'report.md'}  ({(time.time() - t0) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
