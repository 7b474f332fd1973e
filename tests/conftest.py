"""Shared fixtures: the real data folder (skipped when missing) and pydicom's bundled test files."""

from __future__ import annotations

from pathlib import Path

import pytest

from strokescan.config import data_root as _data_root


def pydicom_test_file(name: str) -> Path:
    """A file bundled with pydicom (never downloaded: ``get_testdata_file`` would try the network)."""
    import pydicom.data

    path = Path(pydicom.data.__file__).parent / "test_files" / name
    if not path.is_file():
        pytest.skip(f"pydicom test file {name} is not bundled with this pydicom")
    return path


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = _data_root()
    if not root.is_dir():
        pytest.skip(f"shared data folder {root} is missing (set STROKESCAN_DATA)")
    return root


@pytest.fixture(scope="session")
def head_ct(data_root: Path) -> Path:
    path = data_root / "head-ct-dicom"
    if not path.is_dir():
        pytest.skip("head-ct-dicom is missing")
    return path


@pytest.fixture(scope="session")
def mr_dir(head_ct: Path) -> Path:
    return head_ct / "mr-transfer-syntaxes"


@pytest.fixture(scope="session")
def pydicom_file():
    """``pydicom_file("CT_small.dcm")`` -> path of a bundled pydicom test file (skips when absent)."""
    return pydicom_test_file


def save_untrained_classifier(folder: Path, size: int = 96, seed: int = 0) -> Path:
    """An untrained detector saved the real way (identity calibration, 0.5 thresholds at both operating points):
    predictions meaningless, format and plumbing real."""
    import torch

    from strokescan.models.classifier import ClassifierPlan, SliceClassifier, save_classifier
    from strokescan.preprocessing.pipeline import SlicePlan

    torch.manual_seed(seed)
    save_classifier(SliceClassifier(pretrained=False),
                    ClassifierPlan.for_wiring_checks(SlicePlan(size=size, correct_rotation=False)), folder)
    return folder


@pytest.fixture(scope="session")
def untrained_classifier(tmp_path_factory) -> Path:
    return save_untrained_classifier(tmp_path_factory.mktemp("untrained_classifier"))


def wait_for(condition, timeout: float, what: str) -> None:
    """Poll ``condition`` every 0.1 s until it holds; AssertionError naming ``what`` after ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def save_hemorrhage_everywhere_segmenter(folder: Path) -> Path:
    """A tiny U-Net saved the real way whose last layer says "hemorrhage" everywhere, whatever the input."""
    import torch

    from strokescan.models.unet import SegmenterPlan, UNetConfig, build_unet, save_segmenter
    from strokescan.preprocessing.pipeline import SlicePlan

    torch.manual_seed(0)
    config = UNetConfig(arch="basic", features=(4, 4, 8, 8, 16, 4), dropout=0.0)
    model = build_unet(config)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, 5.0, 0.0, 0.0]))
    plan = SegmenterPlan(unet=config, slice_plan=SlicePlan(size=64, correct_rotation=False), min_lesion_px=1)
    return save_segmenter(model.eval(), plan, folder)
