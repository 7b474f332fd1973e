"""The one type every reader returns: :class:`Scan`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ScanIdentifiers:
    """Patient, study and series identifiers, kept apart from the pixels.

    Never printed, logged or written unless the operator opts in (``Scan.summary(include_identifiers=True)``).
    ``repr`` hides the values so that an accidental log line or traceback shows none of them.
    """

    patient_id: str | None = None
    patient_name: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    accession_number: str | None = None
    study_date: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def __repr__(self) -> str:
        present = [k for k, v in self.as_dict().items() if v]
        return f"ScanIdentifiers(<hidden: {', '.join(present) or 'none'}>)"


@dataclass
class Scan:
    """A CT (or other) image as strokescan sees it, whatever file it came from.

    ``pixels`` is always ``(n_slices, rows, cols)`` float32, slices ordered inferior to superior where the
    position is known. Values are Hounsfield units when ``is_hu`` is true, else the file's own display
    values (0..255 for 8-bit images, which are already windowed).
    """

    pixels: np.ndarray
    is_hu: bool
    modality: str
    source_format: str  # "image" | "dicom" | "nifti"
    source_path: Path
    pixel_spacing_mm: tuple[float, float] | None = None  # (row spacing, column spacing)
    slice_spacing_mm: float | None = None  # distance between slice centres (median when uneven)
    slice_thickness_mm: float | None = None  # nominal thickness from the header
    slice_positions_mm: np.ndarray | None = None  # position of each slice along the slice normal
    slice_sources: list[str] = field(default_factory=list)  # file (or file#frame) that gave each slice
    orientation: str | None = None  # "axial" | "coronal" | "sagittal" | "oblique" | None when unknown
    gantry_tilt_deg: float | None = None
    was_rgb: bool = False
    identifiers: ScanIdentifiers = field(default_factory=ScanIdentifiers)
    notes: list[str] = field(default_factory=list)  # facts a reader wants a person to know

    @property
    def n_slices(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def is_volume(self) -> bool:
        return self.n_slices > 1

    @property
    def voxel_volume_ml(self) -> float | None:
        """Volume of one voxel in mL, when in-plane and slice spacing are known."""
        spacing = self.slice_spacing_mm or self.slice_thickness_mm
        if self.pixel_spacing_mm is None or spacing is None:
            return None
        return self.pixel_spacing_mm[0] * self.pixel_spacing_mm[1] * spacing / 1000.0

    def summary(self, include_identifiers: bool = False) -> dict[str, Any]:
        """A JSON-ready description without patient-identifying values (unless asked for)."""
        out: dict[str, Any] = {
            "path": str(self.source_path),
            "format": self.source_format,
            "modality": self.modality,
            "shape": list(self.pixels.shape),
            "n_slices": self.n_slices,
            "hounsfield_units": self.is_hu,
            "value_range": [float(self.pixels.min()), float(self.pixels.max())],
            "pixel_spacing_mm": list(self.pixel_spacing_mm) if self.pixel_spacing_mm else None,
            "slice_spacing_mm": self.slice_spacing_mm,
            "slice_thickness_mm": self.slice_thickness_mm,
            "orientation": self.orientation,
            "gantry_tilt_deg": self.gantry_tilt_deg,
            "was_rgb": self.was_rgb,
            "notes": list(self.notes),
        }
        if include_identifiers:
            out["identifiers"] = self.identifiers.as_dict()
        return out
