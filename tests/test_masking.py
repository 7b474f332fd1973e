"""``head_masks`` / ``suppress_skull`` (OpenCV) give bit-for-bit the masks of the scipy/skimage formulation.

The reference below is the implementation the OpenCV version replaced, kept verbatim; every test compares the
two on the same input: real slices (the bundled samples always, the shared data when present), as the
callers pass them (HU, 8-bit display values, small downsampled copies), and edge cases.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.morphology import convex_hull_image, disk

from strokescan.config import BONE_THRESHOLD_8BIT, BONE_THRESHOLD_HU, data_root
from strokescan.io import load_scan
from strokescan.preprocessing import masking
from strokescan.preprocessing.masking import HeadMasks, head_masks, suppress_skull

SAMPLES = Path(masking.__file__).resolve().parents[1] / "samples"
GE_SERIES = SAMPLES / "ge-hispeed-head-series.zip"
DATA = data_root()
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared data not available")


# --- reference: the scipy.ndimage / skimage implementation ---------------------------------------------------

def _ref_largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndi.label(mask)
    if n == 0:
        return mask
    sizes = ndi.sum(mask, labels, index=np.arange(1, n + 1))
    return labels == (int(np.argmax(sizes)) + 1)


def _ref_head_masks(pixels: np.ndarray, is_hu: bool) -> HeadMasks:
    if is_hu:
        head = pixels > -300
        skull = pixels >= BONE_THRESHOLD_HU
    else:
        head = pixels > 10
        skull = pixels >= BONE_THRESHOLD_8BIT
    head = ndi.binary_fill_holes(_ref_largest_component(ndi.binary_opening(head, disk(2))))
    skull &= head
    closed = ndi.binary_closing(skull, disk(3))
    cavity = ndi.binary_fill_holes(closed) & ~closed & head
    cavity = ndi.binary_opening(cavity, disk(3))
    brain = _ref_largest_component(cavity) if cavity.any() else cavity
    if brain.sum() < 0.02 * head.sum() and skull.any():
        brain = convex_hull_image(skull) & ~skull & head
        brain = _ref_largest_component(ndi.binary_opening(brain, disk(3))) if brain.any() else brain
    return HeadMasks(head=head, skull=skull, brain=brain)


def _ref_suppress_skull(image: np.ndarray, brain: np.ndarray, margin_px: int = 2) -> np.ndarray:
    keep = ndi.binary_dilation(brain, disk(margin_px)) if margin_px > 0 else brain
    return np.where(keep, image, 0).astype(image.dtype)


def _uses_hull_fallback(pixels: np.ndarray, is_hu: bool) -> bool:
    """Whether the reference takes the open-skull (convex hull) branch on this slice."""
    m = _ref_head_masks(pixels, is_hu)
    closed = ndi.binary_closing(m.skull, disk(3))
    cavity = ndi.binary_opening(ndi.binary_fill_holes(closed) & ~closed & m.head, disk(3))
    brain = _ref_largest_component(cavity) if cavity.any() else cavity
    return bool(brain.sum() < 0.02 * m.head.sum() and m.skull.any())


# --- helpers -------------------------------------------------------------------------------------------------

def assert_same_masks(pixels: np.ndarray, is_hu: bool, what: str = "") -> HeadMasks:
    ref = _ref_head_masks(np.array(pixels, copy=True), is_hu)
    new = head_masks(np.array(pixels, copy=True), is_hu)
    assert isinstance(new, HeadMasks)
    for name in ("head", "skull", "brain"):
        a, b = getattr(ref, name), getattr(new, name)
        assert b.dtype == bool and b.shape == np.shape(pixels), (what, name)
        assert np.array_equal(a, b), f"{what}: {name} differs in {int((a != b).sum())} px"
    image = np.asarray(pixels, np.float32)
    for margin in (0, 2):
        kept = suppress_skull(image, new.brain, margin)
        assert kept.dtype == image.dtype
        assert np.array_equal(_ref_suppress_skull(image, ref.brain, margin), kept), (what, margin)
    return new


def as_8bit(hu: np.ndarray) -> np.ndarray:
    """A brain-window display of a HU slice in 0..255 (floats, as the pipeline passes ``unit * 255``)."""
    return np.clip((np.asarray(hu, np.float32) + 20.0) / 120.0, 0.0, 1.0) * 255.0


def small_copies(pixels: np.ndarray) -> list[np.ndarray]:
    """The downsampled copies the orientation code masks: zoomed + padded, and area-resized."""
    out = []
    for work in (128, 192):
        zoom = work / max(pixels.shape)
        z = ndi.zoom(np.asarray(pixels, np.float32), zoom, order=1)
        out.append(np.pad(z, ((0, work - z.shape[0]), (0, work - z.shape[1])), constant_values=float(z.min())))
        h, w = pixels.shape
        out.append(cv2.resize(np.asarray(pixels, np.float32), (max(1, round(w * zoom)), max(1, round(h * zoom))),
                              interpolation=cv2.INTER_AREA))
    return out


def assert_all_variants(pixels: np.ndarray, is_hu: bool, what: str) -> None:
    assert_same_masks(pixels, is_hu, what)
    if is_hu:
        assert_same_masks(as_8bit(pixels), False, what + " 8-bit")
    for i, small in enumerate(small_copies(pixels)):
        assert_same_masks(small, is_hu, f"{what} small {i}")


# --- real slices ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ge_series() -> np.ndarray:
    scan = load_scan(GE_SERIES)
    assert scan.is_hu and scan.pixels.shape[1:] == (512, 512)
    return scan.pixels


def test_ge_series_every_slice_hu_and_8bit(ge_series: np.ndarray) -> None:
    for i, sl in enumerate(ge_series):
        assert_same_masks(sl, True, f"GE slice {i}")
        assert_same_masks(as_8bit(sl), False, f"GE slice {i} 8-bit")


def test_ge_series_small_copies(ge_series: np.ndarray) -> None:
    for i in (0, 5, 14, 27):
        for j, small in enumerate(small_copies(ge_series[i])):
            assert_same_masks(small, True, f"GE slice {i} small {j}")
            assert_same_masks(as_8bit(small), False, f"GE slice {i} small {j} 8-bit")


def test_ge_series_covers_the_convex_hull_fallback(ge_series: np.ndarray) -> None:
    # Skull-base slices are open: the brain comes from the hull of the bone there.
    assert _uses_hull_fallback(ge_series[0], True) and not _uses_hull_fallback(ge_series[14], True)
    assert head_masks(ge_series[0], True).brain.any()


@pytest.mark.parametrize("name", ["phe-sich_0021_13.png", "phe-sich_0002_17.png", "phe-sich_0011_18.png",
                                  "phe-sich_0004_18.png"])
def test_bundled_samples(name: str) -> None:
    scan = load_scan(SAMPLES / name)
    assert_all_variants(scan.pixels[0], scan.is_hu, name)


@needs_data
def test_shared_ctich_and_phe_sich_slices() -> None:
    paths = [DATA / "ctich-kaggle/Brain_Data_Organised/Stroke/71 (18).jpg",
             DATA / "ctich-kaggle/Brain_Data_Organised/Normal/100 (20).jpg",
             *sorted((DATA / "ctich-kaggle/Brain_Data_Organised/Stroke").glob("*.jpg"))[:2],
             *sorted((DATA / "phe-sich/images").glob("*/*_1[05].png"))[:4]]
    paths = [p for p in paths if p.is_file()]
    if not paths:
        pytest.skip("no CT-ICH / PHE-SICH slices in the shared data")
    for p in paths:
        scan = load_scan(p)
        assert_all_variants(scan.pixels[0], scan.is_hu, p.name)


# --- edge cases ----------------------------------------------------------------------------------------------

def _ring(size: int = 160, centre: tuple[int, int] = (80, 80), r_in: int = 50, r_out: int = 58,
          gap_deg: float = 0.0) -> np.ndarray:
    """A synthetic HU head: soft tissue disc, a bony ring (optionally open), air around."""
    yy, xx = np.mgrid[:size, :size]
    d = np.hypot(yy - centre[0], xx - centre[1])
    angle = np.degrees(np.arctan2(yy - centre[0], xx - centre[1])) % 360
    img = np.full((size, size), -1000.0)
    img[d <= r_out + 4] = 30.0
    bone = (d >= r_in) & (d <= r_out) & (angle >= gap_deg)
    img[bone] = 900.0
    img[(d < r_in) & ((yy + xx) % 17 == 0)] = 70.0  # some texture inside
    return img


@pytest.mark.parametrize("shape", [(0, 0), (1, 1), (3, 7), (64, 64)])
def test_empty_slices(shape: tuple[int, int]) -> None:
    for is_hu, air in ((True, -1000.0), (False, 0.0)):
        m = assert_same_masks(np.full(shape, air), is_hu, f"empty {shape}")
        assert not m.head.any() and not m.brain.any()


def test_all_head_and_all_bone() -> None:
    assert_same_masks(np.full((96, 80), 40.0), True, "all soft tissue")
    assert_same_masks(np.full((96, 80), 1000.0), True, "all bone")
    assert_same_masks(np.full((96, 80), 255.0), False, "all white 8-bit")


def test_closed_and_open_skull() -> None:
    closed = _ring()
    assert not _uses_hull_fallback(closed, True)
    assert assert_same_masks(closed, True, "closed ring").brain.sum() > 5000
    opened = _ring(gap_deg=70.0)
    assert _uses_hull_fallback(opened, True)
    assert assert_same_masks(opened, True, "open ring").brain.sum() > 3000
    assert_same_masks(as_8bit(opened), False, "open ring 8-bit")


@pytest.mark.parametrize("centre", [(40, 80), (80, 30), (150, 150), (0, 0)])
def test_head_touching_or_cut_by_the_border(centre: tuple[int, int]) -> None:
    for gap in (0.0, 100.0):
        assert_same_masks(_ring(centre=centre, gap_deg=gap), True, f"ring at {centre}, gap {gap}")


def test_equal_sized_heads_tie_like_scipy() -> None:
    img = np.full((60, 120), -1000.0)
    img[10:40, 70:100] = 40.0  # starts first in raster order ...
    img[15:45, 10:40] = 40.0  # ... same size, further left
    assert_same_masks(img, True, "tie")
    img2 = np.full((60, 120), -1000.0)
    img2[15:45, 70:100] = 40.0
    img2[10:40, 10:40] = 40.0
    assert_same_masks(img2, True, "tie mirrored")


def test_random_blobs_match_reference() -> None:
    rng = np.random.default_rng(0)
    for i in range(40):
        h, w = rng.integers(5, 90, 2)
        field = ndi.gaussian_filter(rng.random((h, w)), rng.uniform(0.7, 3.0))
        img = np.where(field > np.quantile(field, 0.4), 40.0, -1000.0)
        img[field > np.quantile(field, rng.uniform(0.6, 0.95))] = 800.0
        assert_same_masks(img, True, f"blobs {i}")


def test_suppress_skull_keeps_dtype_and_dilates_like_scipy() -> None:
    rng = np.random.default_rng(1)
    brain = ndi.binary_opening(rng.random((50, 70)) < 0.3)
    brain[0, :] = True  # touches the border
    for dtype in (np.float32, np.float64, np.uint8):
        image = (rng.random((50, 70)) * 200).astype(dtype)
        for margin in (-1, 0, 1, 2, 3, 5):
            out = suppress_skull(image, brain, margin)
            assert out.dtype == dtype
            assert np.array_equal(out, _ref_suppress_skull(image, brain, margin)), (dtype, margin)


def test_non_2d_input_is_refused() -> None:
    with pytest.raises(ValueError):
        head_masks(np.zeros((2, 8, 8)), True)
