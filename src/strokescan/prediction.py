"""The one entry point every interface calls: :class:`Predictor` loads the models once and analyses a
:class:`~strokescan.io.Scan`, returning one :class:`ScanResult`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from strokescan import __version__
from strokescan.config import BUNDLED_MODELS_DIR
from strokescan.evaluation.calibration import PlattCalibrator
from strokescan.io import Scan, load_scan
from strokescan.models.classifier import ClassifierPlan, load_classifier
from strokescan.preprocessing.pipeline import prepare_slices
from strokescan.quantification import SeriesQuantification, slice_areas

log = logging.getLogger(__name__)

DEFAULT_CLASSIFIER_DIR = BUNDLED_MODELS_DIR / "classifier"
MIN_BRAIN_FRACTION = 0.02  # below this a slice shows (almost) no brain: scored, but flagged


@dataclass
class SliceResult:
    """The classifier's answer for one slice."""

    slice_index: int | None  # None for a single 2-D image
    source: str  # file (or file#frame) the slice came from
    probability: float  # calibrated probability of hemorrhage/stroke on this slice
    positive: bool  # probability >= the model's stored slice threshold
    rotation_deg: float  # in-plane rotation removed before analysis
    brain_visible: bool  # False for slices with (almost) no brain: skull base, vertex, outside the head
    lesions: dict[str, dict] | None = None  # per class {"pixels", "area", "unit"} when segmentation ran
    mask_path: str | None = None  # where the class-id mask was written, if it was

    def to_json(self, path: str) -> dict[str, Any]:
        line: dict[str, Any] = {
            "path": path,
            "slice_index": self.slice_index,
            "source": self.source,
            "probability": round(self.probability, 4),
            "positive": self.positive,
            "rotation_deg": round(self.rotation_deg, 1),
            "brain_visible": self.brain_visible,
        }
        if self.lesions is not None:
            line["mask"] = self.mask_path
            line["lesions"] = {k: {**v, "area": round(v["area"], 2)} for k, v in self.lesions.items()}
        return line


@dataclass
class ScanResult:
    """Everything strokescan says about one scan."""

    path: str
    n_slices: int
    slices: list[SliceResult]
    probability: float  # scan score: the highest slice probability
    positive: bool  # probability >= the stored scan threshold
    slice_threshold: float
    scan_threshold: float
    model: dict[str, str] = field(default_factory=dict)
    masks: list[np.ndarray] | None = None  # class-id masks in the input's grid, when segmentation ran
    quantification: SeriesQuantification | None = None

    @property
    def is_volume(self) -> bool:
        return self.n_slices > 1

    def json_lines(self) -> list[dict[str, Any]]:
        """One object per slice, then (for a multi-slice scan) one scan-level object with ``"scan": true``."""
        lines = [s.to_json(self.path) for s in self.slices]
        if self.is_volume:
            top = max(self.slices, key=lambda s: s.probability)
            lines.append(
                {
                    "path": self.path,
                    "scan": True,
                    "slice_index": None,
                    "n_slices": self.n_slices,
                    "probability": round(self.probability, 4),
                    "positive": self.positive,
                    "most_suspicious_slice": top.slice_index,
                    "positive_slices": [s.slice_index for s in self.slices if s.positive],
                }
            )
            if self.quantification is not None:
                lines[-1]["volumes"] = volumes_json(self.quantification)
        return lines


def volumes_json(q: SeriesQuantification) -> dict[str, Any]:
    """Per class: total volume (mL, or voxels when spacing is unknown), lesion count, and the largest lesion
    (slice range; for hemorrhage its ABC/2 estimate beside the voxel volume)."""
    out: dict[str, Any] = {"spacing_known": q.spacing_known}
    for name, c in q.classes.items():
        entry: dict[str, Any] = {"volume": round(c.total, 3), "unit": c.unit, "n_lesions": c.n_lesions}
        if c.largest is not None:
            lg = c.largest
            entry["largest"] = {
                "volume": round(lg.size, 3), "unit": lg.unit, "first_slice": lg.first_slice,
                "last_slice": lg.last_slice, "largest_slice": lg.largest_slice,
                "largest_slice_area": round(lg.largest_slice_area, 2), "area_unit": lg.area_unit,
            }
            if lg.abc2_ml is not None:
                entry["largest"]["abc2_ml"] = round(lg.abc2_ml, 3)
                entry["largest"]["abc_mm"] = lg.abc
        out[name] = entry
    return out


class Predictor:
    """Loads the bundled (or given) models once; ``analyse`` turns a Scan into a ScanResult.

    With ``segment=True`` (or a ``segmenter_dir``) the lesion U-Net also runs: the result then carries class-id
    masks in the input's grid, per-slice areas and per-scan volumes.
    """

    def __init__(self, classifier_dir: Path | None = None, segmenter_dir: Path | None = None, segment: bool = False,
                 batch_size: int = 16) -> None:
        self.model, self.plan = load_classifier(Path(classifier_dir or DEFAULT_CLASSIFIER_DIR))
        self.calibrator = PlattCalibrator.from_dict(self.plan.calibration)
        self.batch_size = batch_size
        self.segmenter = None
        if segment or segmenter_dir is not None:
            from strokescan.segmentation import Segmenter

            self.segmenter = Segmenter(segmenter_dir)

    @property
    def model_info(self) -> dict[str, str]:
        info = {"classifier_sha256": self.plan.weights_sha256[:16], "strokescan": __version__}
        if self.segmenter is not None:
            info.update(self.segmenter.model_info)
        return info

    @property
    def classifier_plan(self) -> ClassifierPlan:
        return self.plan

    @torch.no_grad()
    def analyse(self, scan: Scan) -> ScanResult:
        from strokescan.preprocessing.orientation import analysis_rotation

        angle = analysis_rotation(scan, self.plan.slice_plan.correct_rotation)
        plans = [self.plan.slice_plan] + ([self.segmenter.plan.slice_plan] if self.segmenter is not None else [])
        both = [prepare_slices(scan.pixels[i], scan.is_hu, plans, angle) for i in range(scan.n_slices)]
        prepared = [b[0] for b in both]
        x = torch.from_numpy(np.stack([p.channels for p in prepared]))
        logits = torch.cat([self.model(x[i : i + self.batch_size]) for i in range(0, len(x), self.batch_size)])
        probs = self.calibrator(logits.numpy())
        slices = [
            SliceResult(
                slice_index=i if scan.is_volume else None,
                source=scan.slice_sources[i] if i < len(scan.slice_sources) else str(scan.source_path),
                probability=float(probs[i]),
                positive=bool(probs[i] >= self.plan.slice_threshold),
                rotation_deg=p.rotation_deg,
                brain_visible=p.brain_fraction >= MIN_BRAIN_FRACTION,
            )
            for i, p in enumerate(prepared)
        ]
        score = float(probs.max())
        masks = quantification = None
        if self.segmenter is not None:
            masks = self.segmenter.segment(scan, prepared=[b[1] for b in both])
            quantification = self.segmenter.quantify(scan, masks)
            for s, m in zip(slices, masks):
                s.lesions = slice_areas(m, scan.pixel_spacing_mm)
        return ScanResult(
            path=str(scan.source_path),
            n_slices=scan.n_slices,
            slices=slices,
            probability=score,
            positive=bool(score >= self.plan.scan_threshold),
            slice_threshold=self.plan.slice_threshold,
            scan_threshold=self.plan.scan_threshold,
            model=self.model_info,
            masks=masks,
            quantification=quantification,
        )

    def analyse_path(self, path: str | Path, series: str | None = None) -> ScanResult:
        return self.analyse(load_scan(path, series=series))
