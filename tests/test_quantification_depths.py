"""Volumes count each slice for its own depth (a series mixing 4 mm and 7 mm slices), a single 2-D slice gives
an area and never a volume, and the ICH score then says it has no volume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from strokescan.config import SAMPLES_DIR
from strokescan.inference import Predictor
from strokescan.inference.ich_score import ich_score_for
from strokescan.inference.quantification import quantify_series, slice_depths_mm
from strokescan.inference.results import ScanResult, volumes_json
from strokescan.io import load_scan

GE = SAMPLES_DIR / "ge-hispeed-head-series.zip"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "head-ct-dicom"


def test_depths_follow_each_slices_thickness_unless_slices_overlap_or_leave_gaps():
    # edge to edge, mixed: each slice's own thickness (the GE layout: 4 mm, a 1.08 mm step, then 7 mm)
    positions = [0, 4, 8, 9.08, 16.08, 23.08]
    assert slice_depths_mm(6, positions, [4, 4, 4, 7, 7, 7]) == [4, 4, 4, 7, 7, 7]
    # 5 mm slices every 2.5 mm (overlapping reconstruction): tissue is not counted twice
    assert slice_depths_mm(4, [0, 2.5, 5, 7.5], [5] * 4) == [2.5] * 4
    # 0.625 mm slices every 3 mm (a subsampled series): the distance each slice stands for
    assert slice_depths_mm(3, [0, 3, 6], [0.625] * 3) == [3, 3, 3]
    assert slice_depths_mm(3, [0, 3, 7], None) == [3, 3.5, 4]  # no thickness: half the steps to the neighbours
    assert slice_depths_mm(3, None, None, 5.0) == [5.0] * 3
    assert slice_depths_mm(1, [0.0], [5.0]) is None  # one slice: no volume


def test_ge_series_volume_is_the_sum_of_area_times_each_slices_thickness():
    scan = load_scan(GE)
    assert sorted(set(scan.slice_thicknesses_mm)) == [4.0, 7.0] and scan.n_slices == 28
    assert any("thickness varies" in n for n in scan.notes)
    rng = np.random.default_rng(0)
    masks = [np.zeros(scan.pixels.shape[1:], np.uint8) for _ in range(scan.n_slices)]
    for i in (3, 10, 18, 24):  # clot on 4 mm and 7 mm slices
        masks[i][200:200 + 20 + i, 180:230] = 1
        masks[i][rng.integers(0, 512, 40), rng.integers(0, 512, 40)] = 2
    q = Predictor.quantify(scan, masks)
    px_area = scan.pixel_spacing_mm[0] * scan.pixel_spacing_mm[1]
    for label, cls in (("hemorrhage", 1), ("edema", 2)):
        expected = sum(int((m == cls).sum()) * t for m, t in zip(masks, scan.slice_thicknesses_mm, strict=True))
        assert q.classes[label].unit == "mL"
        assert q.classes[label].total == pytest.approx(expected * px_area / 1000, rel=1e-9)
    median = sum(int((m == 1).sum()) for m in masks) * px_area * scan.slice_spacing_mm / 1000
    assert q.classes["hemorrhage"].total > 1.3 * median  # what the median spacing used to report
    assert q.slice_depths_mm == list(scan.slice_thicknesses_mm)
    largest = q.classes["hemorrhage"].largest
    assert largest.abc is None or largest.abc["C_mm"] == pytest.approx(scan.slice_thicknesses_mm[largest.largest_slice])


@pytest.mark.skipif(not (DATA / "cq500-ct-0_thin_jpeg-lossless").is_dir(), reason="shared head-ct-dicom data absent")
def test_subsampled_thin_series_counts_the_spacing_not_the_thin_thickness():
    scan = load_scan(DATA / "cq500-ct-0_thin_jpeg-lossless")
    assert set(scan.slice_thicknesses_mm) == {0.625}
    masks = [np.ones((4, 4), np.uint8) for _ in range(scan.n_slices)]
    depths = Predictor.quantify(scan, [np.zeros(scan.pixels.shape[1:], np.uint8)] * scan.n_slices).slice_depths_mm
    assert depths == pytest.approx([scan.slice_spacing_mm] * scan.n_slices, rel=0.01)
    assert len(masks) == 48


def test_a_single_slice_gives_an_area_never_a_volume():
    mask = np.zeros((100, 100), np.uint8)
    mask[10:30, 10:30] = 1
    q = quantify_series([mask], (0.5, 0.5), 5.0)
    hem = q.classes["hemorrhage"]
    assert (hem.total, hem.unit, q.is_volume, q.has_volume_ml) == (100.0, "mm2", False, False)
    assert hem.largest.unit == "mm2" and hem.largest.abc2_ml is None
    doc = volumes_json(q)["hemorrhage"]
    assert doc["area"] == 100.0 and doc["unit"] == "mm2" and "volume" not in doc
    raw = quantify_series([mask]).classes["hemorrhage"]
    assert (raw.total, raw.unit) == (400.0, "px")
    result = ScanResult(path="x", n_slices=1, slices=[], probability=0.9, positive=True, slice_threshold=0.5,
                        scan_threshold=0.5, quantification=q)
    score = ich_score_for(result, gcs=9, age=70)
    assert score.components[1].points is None and score.total is None
    assert "single 2-D slice" in score.notes[0] and "area" in score.notes[0]
