"""The one result schema: what strokescan says about a scan, as dataclasses and as JSON.

:meth:`ScanResult.to_dict` is the document every interface hands out (CLI ``--json``, later the REST API, the
web app and the DICOM listener); :meth:`ScanResult.json_lines` is the CLI's line protocol derived from it.
Both carry :data:`SCHEMA_VERSION`. Patient identifiers and DICOM UIDs are never part of a result.
docs/results.md describes every field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from strokescan.inference.quantification import LesionArea, SeriesQuantification

if TYPE_CHECKING:
    from strokescan.inference.explanations import HeatMap

#: bump the minor number for added fields, the major one for renamed or removed fields
#: 1.1: subtypes, operating point, flags only on slices showing brain; 1.2: slices[].explanation (when asked for);
#: 1.3: model.segmenter_clot_decision; 1.4: scan.experimental_subtypes (subtypes not validated, CV ROC-AUC < 0.80),
#: scan.decided_by (which threshold made the flag)
SCHEMA_VERSION = "1.4"


@dataclass
class SliceResult:
    """The models' answer for one slice."""

    slice_index: int | None  # None for a single 2-D image
    source: str  # file (or file#frame) the slice came from
    probability: float  # calibrated probability of any hemorrhage on this slice
    positive: bool  # brain visible and probability >= the operating point's slice threshold
    rotation_deg: float  # in-plane rotation removed before analysis
    brain_visible: bool  # False for slices with (almost) no brain: skull base, vertex, outside the head; never flagged
    subtypes: dict[str, float] = field(default_factory=dict)  # calibrated probability per hemorrhage subtype
    lesions: dict[str, LesionArea] | None = None  # per lesion class, when segmentation ran
    explanation: dict[str, Any] | None = None  # HeatMap.to_dict() of the detector's map, when this slice was explained

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "slice_index": self.slice_index,
            "source": self.source,
            "probability": round(self.probability, 4),
            "positive": self.positive,
            "rotation_deg": round(self.rotation_deg, 1),
            "brain_visible": self.brain_visible,
            "subtypes": {k: round(v, 4) for k, v in self.subtypes.items()},
        }
        if self.lesions is not None:
            out["lesions"] = {k: v.to_dict() for k, v in self.lesions.items()}
        if self.explanation is not None:
            out["explanation"] = dict(self.explanation)
        return out


@dataclass
class ScanResult:
    """Everything strokescan says about one scan."""

    path: str
    n_slices: int
    slices: list[SliceResult]
    probability: float  # scan score over slices showing brain (the model plan's rule: max or top-3 mean)
    positive: bool  # probability >= the operating point's scan threshold
    slice_threshold: float
    scan_threshold: float
    operating_point: str = "balanced"  # which stored operating point the flags use
    subtypes: dict[str, float] = field(default_factory=dict)  # per subtype: highest slice probability (brain slices)
    model: dict[str, str] = field(default_factory=dict)
    masks: list[np.ndarray] | None = None  # class-id masks in the input's grid, when segmentation ran
    quantification: SeriesQuantification | None = None
    heatmaps: list[HeatMap] | None = None  # the explained slices' maps in the input's grid, when explain ran
    out_of_scope: str | None = None  # why the input is outside what the models were made for (forced runs only)
    experimental_subtypes: list[str] = field(default_factory=list)  # subtype outputs not validated: show as such
    decided_by: str = "scan"  # "scan": score vs the scan threshold; "slice": too few slices with brain, any slice flag

    @property
    def is_volume(self) -> bool:
        return self.n_slices > 1

    @property
    def most_suspicious_slice(self) -> int | None:
        candidates = [s for s in self.slices if s.brain_visible] or self.slices
        return max(candidates, key=lambda s: s.probability).slice_index

    def scan_summary(self) -> dict[str, Any]:
        """The scan-level answer: score, flag, where to look."""
        return {
            "probability": round(self.probability, 4),
            "positive": self.positive,
            "subtypes": {k: round(v, 4) for k, v in self.subtypes.items()},
            "most_suspicious_slice": self.most_suspicious_slice,
            "positive_slices": [s.slice_index for s in self.slices if s.positive],
            "experimental_subtypes": list(self.experimental_subtypes),
            "decided_by": self.decided_by,
        }

    def to_dict(self) -> dict[str, Any]:
        """The result document (schema :data:`SCHEMA_VERSION`, documented in docs/results.md)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "path": self.path,
            "n_slices": self.n_slices,
            "out_of_scope": self.out_of_scope,
            "model": dict(self.model),
            "operating_point": self.operating_point,
            "thresholds": {"slice": round(self.slice_threshold, 6), "scan": round(self.scan_threshold, 6)},
            "scan": self.scan_summary(),
            "slices": [s.to_dict() for s in self.slices],
            "volumes": volumes_json(self.quantification) if self.quantification is not None else None,
        }

    def json_lines(self, mask_paths: list[str] | None = None) -> list[dict[str, Any]]:
        """The CLI's line protocol: one object per slice, then (for a multi-slice scan) one scan-level object
        with ``"scan": true``; ``mask_paths`` (one per slice) when masks were written."""
        doc = self.to_dict()
        common = {"schema_version": SCHEMA_VERSION, "path": self.path, "operating_point": self.operating_point}
        if self.out_of_scope:
            common["out_of_scope"] = self.out_of_scope
        lines = []
        for i, s in enumerate(doc["slices"]):
            line = {**common, **s}
            if "lesions" in line:
                line["mask"] = mask_paths[i] if mask_paths else None
            lines.append(line)
        if self.is_volume:
            scan_line = {**common, "scan": True, "slice_index": None, "n_slices": self.n_slices, **doc["scan"],
                         "thresholds": doc["thresholds"]}
            if doc["volumes"] is not None:
                scan_line["volumes"] = doc["volumes"]
            lines.append(scan_line)
        return lines


def volumes_json(q: SeriesQuantification) -> dict[str, Any]:
    """Per class: total volume (mL, or voxels when spacing is unknown; ``area`` in mm2 or px instead for a
    single 2-D slice), lesion count, and the largest lesion (slice range; for hemorrhage its ABC/2 estimate
    beside the voxel volume)."""
    out: dict[str, Any] = {"spacing_known": q.spacing_known}
    size = "volume" if q.is_volume else "area"  # a single 2-D slice has areas (mm2 or px), never a volume
    for name, c in q.classes.items():
        entry: dict[str, Any] = {size: round(c.total, 3), "unit": c.unit, "n_lesions": c.n_lesions}
        if c.largest is not None:
            lg = c.largest
            entry["largest"] = {
                size: round(lg.size, 3), "unit": lg.unit, "first_slice": lg.first_slice,
                "last_slice": lg.last_slice, "largest_slice": lg.largest_slice,
                "largest_slice_area": round(lg.largest_slice_area, 2), "area_unit": lg.area_unit,
            }
            if lg.abc2_ml is not None:
                entry["largest"]["abc2_ml"] = round(lg.abc2_ml, 3)
                entry["largest"]["abc_mm"] = lg.abc
        out[name] = entry
    return out
