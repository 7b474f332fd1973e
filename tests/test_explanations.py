"""Heat maps (issue 17): shapes and peaks on the scan's own grid, the mapping back through a rotation, the
localisation metrics on hand-made maps, and the randomisation checks. Untrained models: the plumbing is real,
the maps mean nothing. Timing is measured by studies/explanation_figures.py, never asserted here."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import save_hemorrhage_everywhere_segmenter, save_untrained_classifier
from strokescan.config import SAMPLES_DIR
from strokescan.core.geometry import to_model_frame
from strokescan.evaluation import explanations as ev
from strokescan.inference.explanations import (
    HeatMap,
    explain_slices,
    heat_to_input_grid,
    map_peak,
    model_frame_maps,
    segmentation_uncertainty,
)
from strokescan.inference.predictor import PreparedScan, Predictor
from strokescan.io import load_scan
from strokescan.io.scan import Scan
from strokescan.models.classifier import SliceClassifier
from strokescan.preprocessing.pipeline import SlicePlan, prepare_slices

BLEED = SAMPLES_DIR / "phe-sich_0021_13.png"

pytestmark = pytest.mark.filterwarnings("ignore:Using a non-tuple sequence")


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Predictor:
    return Predictor(save_untrained_classifier(tmp_path_factory.mktemp("explain"), size=64), threads=2)


def _prepared(scan: Scan, plan: SlicePlan, angle: float) -> PreparedScan:
    slices = [prepare_slices(scan.pixels[i], scan.is_hu, [plan], angle)[0] for i in range(scan.n_slices)]
    return PreparedScan(scan=scan, rotation_deg=[angle] * scan.n_slices, for_classifier=slices, for_segmenter=None)


@pytest.mark.parametrize("method", ["gradcam", "gradcampp", "vanillagrad", "smoothgrad", "occlusion"])
def test_maps_lie_on_the_scan_grid_with_a_peak_inside_it(predictor: Predictor, method: str) -> None:
    scan = load_scan(BLEED)
    prepared = predictor.prepare(scan)
    (hm,) = explain_slices(predictor, prepared, method)
    assert isinstance(hm, HeatMap) and hm.method == method and hm.target == "any"
    assert hm.heat.shape == scan.pixels.shape[1:] and hm.heat.dtype == np.float32
    assert 0.0 <= hm.heat.min() and hm.heat.max() <= 1.0
    if hm.peak is not None:
        r, c = hm.peak
        assert 0 <= r < scan.pixels.shape[1] and 0 <= c < scan.pixels.shape[2]
        assert hm.heat[r, c] == hm.heat.max() == pytest.approx(1.0)
        r0, c0, r1, c1 = prepared.for_classifier[0].box
        assert r0 <= r < r1 and c0 <= c < c1  # no rotation here: the evidence lies inside the crop
    d = hm.to_dict()
    assert set(d) == {"method", "target", "layer", "peak", "score"} and np.isfinite(d["score"])


def test_explaining_leaves_the_shared_model_without_hooks(predictor: Predictor) -> None:
    prepared = predictor.prepare(load_scan(BLEED))
    before = predictor.classify(prepared)
    explain_slices(predictor, prepared, "gradcam", layer="block10")
    assert all(not m._forward_hooks and not m._backward_hooks for m in predictor.model.modules())
    np.testing.assert_allclose(predictor.classify(prepared), before, atol=1e-6)
    assert all(p.requires_grad for p in predictor.model.parameters())


def test_an_unknown_method_layer_or_output_is_a_typed_error(predictor: Predictor) -> None:
    from strokescan.errors import ModelError

    prepared = predictor.prepare(load_scan(BLEED))
    for kwargs in ({"method": "lime"}, {"layer": "block99"}, {"output": "ischemic"}):
        with pytest.raises(ModelError):
            explain_slices(predictor, prepared, **kwargs)


def test_a_turned_scan_gives_the_turned_map(predictor: Predictor) -> None:
    """The evidence is known: the same head turned 90 degrees counter-clockwise, with that angle removed,
    gives the model the same input, so its map must be the upright map turned the same way."""
    up = load_scan(BLEED)
    pixels = up.pixels[0]
    assert pixels.shape[0] == pixels.shape[1]  # a square slice turns onto its own grid
    turned = Scan(pixels=np.ascontiguousarray(np.rot90(pixels, k=1))[None], is_hu=up.is_hu, modality="CT",
                  source_format="image", source_path=Path("turned.png"), slice_sources=["turned"])
    plan = predictor.plan.slice_plan
    p_up, p_turned = _prepared(up, plan, 0.0), _prepared(turned, plan, 90.0)
    np.testing.assert_allclose(p_turned.for_classifier[0].channels, p_up.for_classifier[0].channels, atol=0.02)
    (h_up,) = explain_slices(predictor, p_up, "gradcam")
    (h_turned,) = explain_slices(predictor, p_turned, "gradcam")
    expected = np.rot90(h_up.heat, k=1)
    assert np.corrcoef(expected.ravel(), h_turned.heat.ravel())[0, 1] > 0.98
    r, c = h_up.peak
    assert h_turned.heat[pixels.shape[1] - 1 - c, r] > 0.95  # where the upright peak went, the turned map peaks
    r, c = h_turned.peak
    assert h_up.heat[c, pixels.shape[1] - 1 - r] > 0.95


@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0])
def test_heat_maps_go_back_where_the_segmenter_training_maps_come_from(angle: float) -> None:
    """A disk put into the model frame by core.geometry.to_model_frame comes back onto itself."""
    shape = (300, 260)
    rr, cc = np.ogrid[:shape[0], :shape[1]]
    disk = (rr - 120) ** 2 + (cc - 170) ** 2 <= 20 ** 2
    box = (20, 40, 280, 250)  # not square: the crop is stretched to the square frame and back
    frame = to_model_frame(disk.astype(np.uint8), box, angle, 96).astype(np.float32)
    back = heat_to_input_grid(frame, box, angle, shape)
    assert back.shape == shape and back.dtype == np.float32
    inside = back > 0.5
    assert (inside & disk).sum() / (inside | disk).sum() > 0.8
    assert disk[map_peak(back)]


def test_pointing_game_and_energy_on_hand_made_maps() -> None:
    lesion = np.zeros((50, 50), bool)
    lesion[10:20, 10:20] = True
    assert ev.pointing_hit((15, 15), lesion) == 1.0
    assert ev.pointing_hit((24, 15), lesion) == 1.0  # 5 px below the lesion: inside the tolerance
    assert ev.pointing_hit((26, 15), lesion) == 0.0
    assert ev.pointing_hit((24, 24), lesion) == 0.0  # 5 px off in both directions is 7 px away
    assert ev.pointing_hit(None, lesion) == 0.0
    heat = np.zeros((50, 50), np.float32)
    heat[10:20, 10:20] = 1.0
    heat[40:50, 40:50] = 1.0
    assert ev.energy_share(heat, lesion) == pytest.approx(0.5)
    assert np.isnan(ev.energy_share(np.zeros((50, 50)), lesion))
    assert ev.tied_pointing_hit(heat, lesion) == pytest.approx(0.5)  # two tied plateaus, one inside
    brain = np.zeros((50, 50), bool)
    brain[:, :25] = True
    scores = ev.baseline_scores(brain, heat, lesion)
    region = ev.dilate(lesion)
    assert scores["brain_mask"]["hit"] == pytest.approx(region[brain].mean())
    assert scores["brain_mask"]["energy"] == pytest.approx(100 / brain.sum())
    assert ev.boxes_mask([[10, 10, 19, 19]], (50, 50)).sum() == 100  # inclusive VOC corners
    assert ev.size_bin(0.001).startswith("small") and ev.size_bin(0.2).startswith("large")


def test_paired_difference_resamples_patients_together() -> None:
    import pandas as pd

    frame = pd.DataFrame({"patient": ["a", "a", "b", "c", "d"], "x": [1, 1, 1, 1, 0], "y": [0, 0, 1, 0, 0]})
    out = ev.paired_difference(frame, "x", "y", n_boot=200)
    assert out["difference"]["value"] == pytest.approx(0.6)
    lo, hi = out["difference"]["ci95"]
    assert lo <= 0.6 <= hi


def test_randomising_weights_changes_the_maps_and_leaves_the_model_alone() -> None:
    torch.manual_seed(0)
    model = SliceClassifier(pretrained=False).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(2, 3, 64, 64)
    ref, _ = model_frame_maps(model, x, "gradcam", 0, "block10")
    assert ev.rank_correlation(ref[0], ref[0]) == pytest.approx(1.0)
    assert ev.ssim(ref[0], ref[0]) == pytest.approx(1.0)
    steps = list(ev.cascading_randomisation(model, seed=1, cascade=ev.CASCADE[:3]))
    assert [s for s, _ in steps] == ["fc + context", "head", "block 15"]
    for _, randomised in steps:
        maps, _ = model_frame_maps(randomised, x, "gradcam", 0, "block10")
        sim = ev.map_similarity(ref, maps)
        assert (sim["spearman"] < 0.999).all()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    # each step keeps the earlier steps' re-initialisation
    (_, a), (_, b) = steps[0], steps[1]
    assert torch.equal(a.fc.weight, b.fc.weight) and not torch.equal(a.head[0].weight, b.head[0].weight)


@pytest.fixture(scope="module")
def constant_segmenter_dir(tmp_path_factory) -> Path:
    """A tiny U-Net that says "hemorrhage" everywhere, whatever the input: nothing for TTA to disagree on."""
    return save_hemorrhage_everywhere_segmenter(tmp_path_factory.mktemp("segmenter"))


def test_segmentation_uncertainty_is_on_the_grid_and_zero_where_the_augmentations_agree(
        tmp_path: Path, constant_segmenter_dir: Path) -> None:
    pred = Predictor(save_untrained_classifier(tmp_path / "c", size=64), segmenter_dir=constant_segmenter_dir)
    scan = load_scan(BLEED)
    prepared = pred.prepare(scan)
    (hm,) = segmentation_uncertainty(pred, prepared)
    assert hm.method == "tta_std" and hm.heat.shape == scan.pixels.shape[1:]
    assert hm.heat.max() < 1e-3  # also at the borders the shifts leave uncovered
    assert hm.score > 0.9
    with pytest.raises(Exception, match="no segmenter"):
        segmentation_uncertainty(Predictor(save_untrained_classifier(tmp_path / "d", size=64)), prepared)


def test_an_all_zero_map_has_no_peak_and_misses() -> None:
    assert map_peak(np.zeros((8, 8))) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ev.localisation(np.zeros((8, 8)), None, np.ones((8, 8), bool))["hit"] == 0.0
