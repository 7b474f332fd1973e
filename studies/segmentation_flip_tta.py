"""Does left-right flip test-time augmentation help the segmenter? Measured on a validation fold only.

    .venv/bin/python studies/segmentation_flip_tta.py --fold 1

Prints the pooled Dice per lesion class (model frame, slices labelling the class; the early-stopping score of
training) with plain probabilities and with the mean of the slice's and its mirror's. Use the model's early-
stopping fold (its plan's ``val_fold``), never its held-out fold: this decides a setting.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from strokescan.datasets.lesion_masks import build_segmentation_manifest, make_source_folds
from strokescan.datasets.splits import fold_of, read_folds
from strokescan.errors import StrokescanError
from strokescan.models.unet import load_segmenter
from strokescan.inference.segmenter import DEFAULT_SEGMENTER_DIR
from strokescan.training.segmenter import build_cache, predict_probs, validation_score


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_SEGMENTER_DIR, help="segmenter folder (default: bundled)")
    ap.add_argument("--folds", type=Path, default=None,
                    help="folds.json of the run that trained the model (default: the folds training makes afresh)")
    ap.add_argument("--fold", type=int, required=True, help="the model's early-stopping (validation) fold")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    try:
        model, plan = load_segmenter(a.model)
        if plan.training.get("test_fold") == a.fold:
            raise StrokescanError(f"fold {a.fold} is {a.model}'s held-out fold: choose settings on its validation fold")
        manifest = build_segmentation_manifest()
        folds = read_folds(a.folds) if a.folds else make_source_folds(manifest)
        data = build_cache(manifest, plan.slice_plan)
    except StrokescanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    fold = data.rows["patient"].map(fold_of(folds)).to_numpy()
    val = data.subset(np.nonzero(fold == a.fold)[0])
    plain = predict_probs(model, val.images).astype(np.float32)
    mirror = predict_probs(model, np.ascontiguousarray(val.images[..., ::-1])).astype(np.float32)[..., ::-1]
    print(json.dumps({"fold": a.fold, "n_slices": len(val), "plain": validation_score(val, plain),
                      "flip_mean": validation_score(val, (plain + mirror) / 2)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
