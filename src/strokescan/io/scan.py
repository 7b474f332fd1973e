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


@dataclass(frozen=True)
class SliceIdentity:
    """Where one slice of a DICOM scan came from: the UIDs and geometry a DICOM SEG or SR needs to point at it.

    One per slice, in the Scan's slice order (``Scan.references``). UIDs identify a study, hence a patient:
    like :class:`ScanIdentifiers` they are never printed, logged or written unless the operator opts in, and
    ``repr`` hides them.
    """

    sop_instance_uid: str | None = None
    sop_class_uid: str | None = None
    series_instance_uid: str | None = None
    study_instance_uid: str | None = None
    frame_of_reference_uid: str | None = None
    frame_number: int | None = None  # 1-based frame of a multi-frame object; None for a single-frame one
    image_position_patient: tuple[float, float, float] | None = None  # mm, of the first transmitted pixel
    image_orientation_patient: tuple[float, float, float, float, float, float] | None = None  # row, column cosines

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k in self.__dataclass_fields__:
            v = getattr(self, k)
            out[k] = list(v) if isinstance(v, tuple) else v
        return out

    def __repr__(self) -> str:
        frame = f", frame {self.frame_number}" if self.frame_number is not None else ""
        return f"SliceIdentity(<hidden{frame}>)"


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
    slice_thickness_mm: float | None = None  # nominal thickness from the header (the first slice's)
    # each slice's own SliceThickness, in slice order (None when any slice lacks one); a series may mix them
    slice_thicknesses_mm: tuple[float, ...] | None = None
    slice_positions_mm: np.ndarray | None = None  # position of each slice along the slice normal
    slice_sources: list[str] = field(default_factory=list)  # file (or file#frame) that gave each slice
    orientation: str | None = None  # "axial" | "coronal" | "sagittal" | "oblique" | None when unknown
    gantry_tilt_deg: float | None = None
    was_rgb: bool = False
    identifiers: ScanIdentifiers = field(default_factory=ScanIdentifiers)
    notes: list[str] = field(default_factory=list)  # facts a reader wants a person to know
    # Header facts that say what the scan is (see strokescan.io.scope); none of them identifies a patient.
    sop_class_uid: str | None = None  # a standard class (e.g. CT Image Storage), not an instance UID
    body_part: str | None = None  # BodyPartExamined as written (upper case), None when absent
    image_type: tuple[str, ...] = ()  # ImageType values, e.g. ("ORIGINAL", "PRIMARY", "AXIAL")
    slice_normal: tuple[float, float, float] | None = None  # unit normal of the slices in patient axes (x, y, z)
    # DICOM input only: one SliceIdentity per slice, in slice order (identifying: see SliceIdentity).
    references: list[SliceIdentity] | None = field(default=None, repr=False)

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
            "sop_class": sop_class_name(self.sop_class_uid),
            "body_part": self.body_part,
            "image_type": "\\".join(self.image_type) or None,  # DICOM's own notation: ORIGINAL\\PRIMARY\\AXIAL
            "notes": list(self.notes),
        }
        if include_identifiers:
            out["identifiers"] = self.identifiers.as_dict()
            if self.references is not None:
                out["references"] = [r.as_dict() for r in self.references]
        return out


def sop_class_name(uid: str | None) -> str | None:
    """'CT Image Storage' for a standard SOP class UID, the UID itself for a private one, None for none.

    A plain dictionary look-up: building a pydicom ``UID`` would validate the value and warn with it.
    """
    if not uid:
        return None
    from pydicom.uid import UID_dictionary

    entry = UID_dictionary.get(str(uid).strip())
    return entry[0] if entry and entry[1] == "SOP Class" else str(uid).strip()
