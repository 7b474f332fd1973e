"""The bundled models give the outputs recorded in tests/data/demo_reference.* on the demo samples, so a
restructuring or a speed-up cannot change a probability (to 1e-4), a rotation or a mask unnoticed.
Regenerate the reference only when a model is deliberately replaced (and say so in the commit)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from strokescan.config import SAMPLES_DIR
from strokescan.inference import Predictor
from strokescan.io import load_scan

REFERENCE = Path(__file__).parent / "data" / "demo_reference.json"
REFERENCE_MASKS = Path(__file__).parent / "data" / "demo_reference_masks.npz"


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(segment=True)


@pytest.mark.parametrize("name", sorted(json.loads(REFERENCE.read_text())))
def test_demo_outputs_match_the_reference(name: str, predictor: Predictor) -> None:
    expected = json.loads(REFERENCE.read_text())[name]
    result = predictor.analyse(load_scan(SAMPLES_DIR / name))
    assert [s.probability for s in result.slices] == pytest.approx(expected["probabilities"], abs=1e-4)
    assert [s.rotation_deg for s in result.slices] == pytest.approx(expected["rotation_deg"], abs=0.05)
    counts = [[int((m == c).sum()) for c in (1, 2, 3)] for m in result.masks]
    assert counts == expected["class_pixels"]
    saved = np.load(REFERENCE_MASKS)  # every demo sample is PHE-SICH (CC BY 4.0) or BSD-2: all masks are kept
    assert name in saved.files and np.array_equal(np.stack(result.masks), saved[name])


def test_the_reference_covers_every_demo_sample() -> None:
    samples = {p.name for p in SAMPLES_DIR.iterdir() if p.suffix.lower() in {".jpg", ".png", ".zip"}}
    assert set(json.loads(REFERENCE.read_text())) == samples == set(np.load(REFERENCE_MASKS).files)
