"""Copy a trained model into the package (src/strokescan/resources/models/<kind>/) with its measured figures.

    .venv/bin/python scripts/bundle_model.py classifier runs/classifier/model --metrics reports/classifier/metrics.json
    .venv/bin/python scripts/bundle_model.py segmenter runs/segmentation/model

The weights are copied byte for byte (their sha256 stays the plan's); ``--metrics`` stores a JSON report's
figures in the plan's ``metrics`` field so that the bundled model carries the numbers it was judged by.
The model card (MODEL_CARD.md) in the target folder is written by hand and left as it is.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from strokescan.config import BUNDLED_MODELS_DIR
from strokescan.models import classifier, unet

KINDS = {
    "classifier": (classifier.WEIGHTS_FILE, classifier.PLAN_FILE, classifier.load_classifier),
    "segmenter": (unet.WEIGHTS_FILE, unet.PLAN_FILE, unet.load_segmenter),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=sorted(KINDS))
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--metrics", type=Path, help="JSON report whose figures go into the plan's metrics field")
    args = ap.parse_args()
    weights, plan_file, load = KINDS[args.kind]
    load(args.model_dir)  # refuses a model whose checksum does not match its plan
    target = BUNDLED_MODELS_DIR / args.kind
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.model_dir / weights, target / weights)
    plan = json.loads((args.model_dir / plan_file).read_text())
    if args.metrics:
        plan["metrics"] = json.loads(args.metrics.read_text())
    (target / plan_file).write_text(json.dumps(plan, indent=2))
    load(target)
    size = (target / weights).stat().st_size / 2**20
    print(f"bundled {args.kind} in {target} ({size:.1f} MiB, sha256 {plan['weights_sha256'][:16]}...)")


if __name__ == "__main__":
    main()
