"""Windowing, masking and the model-input pipeline on real slices."""

from pathlib import Path

import numpy as np
import pytest

from strokescan.config import SAMPLES_DIR, data_root
from strokescan.core.windows import WINDOW_PRESETS, apply_window, display_unit, get_window
from strokescan.errors import InputError
from strokescan.io import load_scan
from strokescan.preprocessing.masking import head_masks, suppress_skull
from strokescan.preprocessing.pipeline import SlicePlan, prepare_slice, prepare_slices

DATA = data_root()
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared data not available")
CTICH_BLEED = DATA / "ctich-kaggle/Brain_Data_Organised/Stroke/71 (18).jpg"  # epidural hemorrhage slice
CTICH_NORMAL = DATA / "ctich-kaggle/Brain_Data_Organised/Normal/100 (20).jpg"
CQ500_BLEED = DATA / "head-ct-dicom/cq500-ct-1_single-slice/CT000000.dcm"  # large IPH, HU


def test_window_presets_map_hu_to_unit_range():
    hu = np.array([-1000.0, 0.0, 40.0, 80.0, 1000.0])
    brain = apply_window(hu, "brain")  # 40/80 -> 0..80 HU
    assert brain.tolist() == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0])
    bone = apply_window(hu, WINDOW_PRESETS["bone"])
    assert 0.0 < bone[2] < bone[4] <= 1.0
    assert set(WINDOW_PRESETS) == {"brain", "subdural", "stroke", "bone"}


def test_unknown_window_is_a_typed_error():
    with pytest.raises(InputError, match="unknown window preset 'lung'"):
        get_window("lung")


def test_8bit_inputs_are_rescaled_not_windowed():
    px = np.array([0.0, 127.5, 255.0])
    assert display_unit(px, is_hu=False).tolist() == pytest.approx([0.0, 0.5, 1.0])
    assert display_unit(np.array([-20.0, 40.0, 100.0]), is_hu=True).tolist() == pytest.approx([0.0, 0.5, 1.0])


@needs_data
@pytest.mark.parametrize("path", [CTICH_BLEED, CQ500_BLEED], ids=["jpeg", "dicom-hu"])
def test_brain_mask_excludes_skull_and_lies_inside_head(path: Path):
    scan = load_scan(path)
    masks = head_masks(scan.pixels[0], scan.is_hu)
    assert 0.05 < masks.brain.mean() < 0.6
    assert not (masks.brain & masks.skull).any()
    assert masks.brain[masks.brain].size <= masks.head.sum()
    assert (masks.brain & ~masks.head).sum() == 0
    # blanking outside the brain removes the bright skull ring
    unit = display_unit(scan.pixels[0], scan.is_hu)
    kept = suppress_skull(unit, masks.brain, margin_px=0)
    assert kept[masks.skull].max() == 0 and unit[masks.skull].mean() > 0.9


@needs_data
def test_hu_and_8bit_inputs_give_comparable_model_inputs():
    plan = SlicePlan()
    blood_area = {}
    for path in (CTICH_BLEED, CQ500_BLEED, CTICH_NORMAL):
        scan = load_scan(path)
        prep = prepare_slice(scan.pixels[0], scan.is_hu, plan, rotation_deg=0.0)
        assert prep.channels.shape == (3, plan.size, plan.size)
        assert prep.channels.dtype == np.float32
        assert 0.0 <= prep.channels.min() and prep.channels.max() <= 1.0
        assert prep.brain_fraction > 0.05
        blood_area[path] = (prep.channels[2] > 0.25).mean()
    # the blood channel lights up on the hemorrhage slices (HU and 8-bit alike) more than on a normal one
    assert min(blood_area[CTICH_BLEED], blood_area[CQ500_BLEED]) > 1.5 * blood_area[CTICH_NORMAL]


def test_preparing_for_two_models_at_once_equals_preparing_for_each():
    """The Predictor prepares each slice once for the classifier (224 px) and the U-Net (256 px)."""
    scan = load_scan(SAMPLES_DIR / "phe-sich_0021_13.png")
    plans = [SlicePlan(), SlicePlan(size=256)]
    together = prepare_slices(scan.pixels[0], scan.is_hu, plans, rotation_deg=12.0)
    for plan, got in zip(plans, together, strict=True):
        alone = prepare_slice(scan.pixels[0], scan.is_hu, plan, rotation_deg=12.0)
        assert got.channels.shape == (3, plan.size, plan.size)
        assert np.array_equal(got.channels, alone.channels) and got.box == alone.box
    wider = prepare_slices(scan.pixels[0], scan.is_hu, [SlicePlan(), SlicePlan(crop_margin=0.2)], 12.0)
    assert wider[0].box != wider[1].box  # plans that differ beyond size are prepared separately
