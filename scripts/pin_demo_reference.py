"""Record the bundled models' outputs on the demo samples (tests/data/demo_reference.json and _masks.npz), the
reference tests/test_behaviour_pin.py checks. Run only when a bundled model is deliberately replaced, and say so
in the commit.

    .venv/bin/python scripts/pin_demo_reference.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from strokescan.config import SAMPLES_DIR
from strokescan.inference import Predictor
from strokescan.io import load_scan

TESTS_DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def main() -> None:
    predictor = Predictor(segment=True)
    reference, masks = {}, {}
    for path in sorted(p for p in SAMPLES_DIR.iterdir() if p.suffix.lower() in {".jpg", ".png", ".zip"}):
        result = predictor.analyse(load_scan(path))
        reference[path.name] = {
            "probabilities": [s.probability for s in result.slices],
            "rotation_deg": [s.rotation_deg for s in result.slices],
            "class_pixels": [[int((m == c).sum()) for c in (1, 2, 3)] for m in result.masks],
        }
        masks[path.name] = np.stack(result.masks)
        print(f"{path.name}: scan p={result.probability:.3f}, {sum(s.positive for s in result.slices)} slices flagged")
    (TESTS_DATA / "demo_reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    np.savez_compressed(TESTS_DATA / "demo_reference_masks.npz", **masks)


if __name__ == "__main__":
    main()
