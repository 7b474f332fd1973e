"""All configuration in one place: paths, limits, window presets, model input size.

Values that a run decides from data (folds, thresholds, calibration) are not here: they are written to
plan files beside each model and read back (see ``strokescan.models``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent.parent
RESOURCES_DIR = PACKAGE_DIR / "resources"
BUNDLED_MODELS_DIR = RESOURCES_DIR / "models"
SAMPLES_DIR = PACKAGE_DIR / "samples"  # the demo's sample slices, with ATTRIBUTION.md


def data_root() -> Path:
    """Folder holding the shared datasets: ``$STROKESCAN_DATA`` or ``../shared/data`` beside the repo."""
    env = os.environ.get("STROKESCAN_DATA")
    return Path(env).expanduser().resolve() if env else (REPO_ROOT.parent / "shared" / "data").resolve()


def cache_root() -> Path:
    """Git-ignored folder for preprocessed tensors and features: ``$STROKESCAN_CACHE`` or ``.cache/``."""
    env = os.environ.get("STROKESCAN_CACHE")
    return Path(env).expanduser().resolve() if env else REPO_ROOT / ".cache"


@dataclass(frozen=True)
class InputLimits:
    """Inputs beyond these are refused with :class:`~strokescan.errors.InputTooLargeError`."""

    max_file_bytes: int = 1 << 30  # one file (a DICOM, image or NIfTI)
    max_archive_bytes: int = 4 << 30  # the uncompressed content of one .zip
    max_archive_members: int = 10_000
    max_pixels_per_slice: int = 4096 * 4096
    max_voxels: int = 1_000 * 1024 * 1024


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value and value.isdigit() else default


# Operators raise or lower the limits with STROKESCAN_MAX_FILE_MB and STROKESCAN_MAX_VOXELS.
LIMITS = InputLimits(
    max_file_bytes=_env_int("STROKESCAN_MAX_FILE_MB", 1024) << 20,
    max_voxels=_env_int("STROKESCAN_MAX_VOXELS", InputLimits.max_voxels),
)


@dataclass(frozen=True)
class Window:
    """A CT display window in Hounsfield units."""

    center: float
    width: float

    @property
    def low(self) -> float:
        return self.center - self.width / 2

    @property
    def high(self) -> float:
        return self.center + self.width / 2


# Common neuroradiology presets (center/width, HU).
WINDOW_PRESETS: dict[str, Window] = {
    "brain": Window(40, 80),
    "subdural": Window(75, 215),
    "stroke": Window(40, 40),
    "bone": Window(600, 2800),
}

# The window that the 8-bit CT-ICH JPEGs were exported with (data README): level 40, width 120.
CTICH_EXPORT_WINDOW = Window(40, 120)

# Pixel value (8-bit windowed images) or HU above which a pixel counts as skull/bone.
BONE_THRESHOLD_8BIT = 250
BONE_THRESHOLD_HU = 300.0

# Side length of the square model input.
MODEL_INPUT_SIZE = 224

SEED = 20261128
