"""All configuration in one place: paths (environment or XDG defaults, never the source tree), input limits,
inference threads, thresholds of the head masks, model input size.

Values that a run decides from data (folds, thresholds, calibration) are not here: they are written to
plan files beside each model and read back (see ``strokescan.models``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
RESOURCES_DIR = PACKAGE_DIR / "resources"  # read-only package data: bundled models, committed folds
BUNDLED_MODELS_DIR = RESOURCES_DIR / "models"
SAMPLES_DIR = PACKAGE_DIR / "samples"  # the demo's sample slices, with ATTRIBUTION.md


def _xdg(variable: str, default: str) -> Path:
    return Path(os.environ.get(variable) or Path.home() / default).expanduser() / "strokescan"


def data_root() -> Path:
    """Folder holding the datasets (read-only): ``$STROKESCAN_DATA``; else ``$XDG_DATA_HOME/strokescan/data``
    when it exists; else ``../shared/data`` from the current directory (the developers' layout)."""
    env = os.environ.get("STROKESCAN_DATA")
    if env:
        return Path(env).expanduser().resolve()
    xdg = _xdg("XDG_DATA_HOME", ".local/share") / "data"
    if xdg.is_dir():
        return xdg
    beside = (Path.cwd().parent / "shared" / "data").resolve()
    return beside if beside.is_dir() else xdg


def cache_root() -> Path:
    """Folder for preprocessed tensors and features: ``$STROKESCAN_CACHE``, else ``$XDG_CACHE_HOME/strokescan``
    (``~/.cache/strokescan``)."""
    env = os.environ.get("STROKESCAN_CACHE")
    return Path(env).expanduser().resolve() if env else _xdg("XDG_CACHE_HOME", ".cache")


def rotation_enabled() -> bool:
    """The rotation step (docs/rotation.md) runs unless the operator sets ``STROKESCAN_ROTATION=off``."""
    return os.environ.get("STROKESCAN_ROTATION", "on").strip().lower() not in ("off", "0", "no", "false")


def infarct_enabled() -> bool:
    """The experimental, unvalidated infarct masks are shown only with ``STROKESCAN_EXPERIMENTAL_INFARCT=1``."""
    return os.environ.get("STROKESCAN_EXPERIMENTAL_INFARCT") == "1"


def torch_threads() -> int | None:
    """Intra-op threads for inference: ``$STROKESCAN_TORCH_THREADS`` (unset: torch's default, one per core)."""
    value = os.environ.get("STROKESCAN_TORCH_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


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


# Pixel value (8-bit windowed images) or HU above which a pixel counts as skull/bone.
BONE_THRESHOLD_8BIT = 250
BONE_THRESHOLD_HU = 300.0
# With skull-by-shape masks (SlicePlan.skull_by_shape) a bright component is bone only when it comes this close to
# the head's edge, as a fraction of the head's equivalent radius (scalp is 3-8 mm of a ~75 mm radius; a clot is deeper).
SKULL_RING_FRACTION = 0.15

# Side length of the square model input.
MODEL_INPUT_SIZE = 224

SEED = 20261128


# The web app (strokescan serve). Everything it stores (database, uploads, results, PNG cache, secret key) lives
# under web_root(); the database may live elsewhere (any SQLAlchemy URL, e.g. PostgreSQL).
WEB_DEFAULT_HOST = "127.0.0.1"  # loopback unless the operator says otherwise
WEB_DEFAULT_PORT = 8765


def web_root() -> Path:
    """The web app's instance folder: ``$STROKESCAN_WEB_DIR``, else ``$XDG_DATA_HOME/strokescan/web``."""
    env = os.environ.get("STROKESCAN_WEB_DIR")
    return Path(env).expanduser().resolve() if env else _xdg("XDG_DATA_HOME", ".local/share") / "web"


def database_url() -> str:
    """``$STROKESCAN_DATABASE_URL`` (any SQLAlchemy URL), else SQLite in :func:`web_root`."""
    return os.environ.get("STROKESCAN_DATABASE_URL") or f"sqlite:///{web_root() / 'strokescan.db'}"


def show_identifiers() -> bool:
    """Patient identifiers on pages, in logs and in the database only when the operator sets
    ``STROKESCAN_SHOW_IDENTIFIERS=1``."""
    return os.environ.get("STROKESCAN_SHOW_IDENTIFIERS") == "1"


# Web app access (strokescan serve): sessions, API tokens, login throttling, worklist, retention. Each value may be
# set by the operator in the environment; the defaults follow common hospital policies.
def web_access() -> dict[str, int]:
    """``session_idle_minutes`` ($STROKESCAN_SESSION_IDLE_MINUTES, 30), ``session_max_hours``
    ($STROKESCAN_SESSION_MAX_HOURS, 12), ``token_days`` ($STROKESCAN_TOKEN_DAYS, 90), ``login_max_failures``
    ($STROKESCAN_LOGIN_MAX_FAILURES, 5), ``login_lockout_minutes`` ($STROKESCAN_LOGIN_LOCKOUT_MINUTES, 15),
    ``worklist_page_size`` ($STROKESCAN_WORKLIST_PAGE_SIZE, 50), ``retention_days`` ($STROKESCAN_RETENTION_DAYS,
    0: studies are kept until an admin deletes them)."""
    return {
        "session_idle_minutes": _env_int("STROKESCAN_SESSION_IDLE_MINUTES", 30),
        "session_max_hours": _env_int("STROKESCAN_SESSION_MAX_HOURS", 12),
        "token_days": _env_int("STROKESCAN_TOKEN_DAYS", 90),
        "login_max_failures": _env_int("STROKESCAN_LOGIN_MAX_FAILURES", 5),
        "login_lockout_minutes": _env_int("STROKESCAN_LOGIN_LOCKOUT_MINUTES", 15),
        "worklist_page_size": _env_int("STROKESCAN_WORKLIST_PAGE_SIZE", 50),
        "retention_days": _env_int("STROKESCAN_RETENTION_DAYS", 0),
    }
