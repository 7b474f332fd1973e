"""The one entry point every interface calls: :class:`Predictor` owns the models and turns a
:class:`~strokescan.io.Scan` into a :class:`~strokescan.inference.results.ScanResult`.

Its steps are public, so that an explainer can reach the prepared tensors and a server can batch::

    predictor = Predictor(segment=True)
    prepared = predictor.prepare(scan)            # rotation estimated once, slices windowed, cropped, resized
    probabilities = predictor.classify(prepared)  # calibrated, (slices, outputs): any, then the subtypes
    masks = predictor.segment(prepared)           # class ids on the scan's own pixel grid
    volumes = predictor.quantify(scan, masks)     # areas, mL, ABC/2
    maps = predictor.explain(prepared, slices=[3])  # where the detector looked (Grad-CAM), on the scan's grid
    result = predictor.analyse(scan)              # all of the above, plus the scope check

Sharing between threads: a Predictor holds no per-call state (models are in eval mode and run under
``torch.inference_mode``), so one instance can serve the threads of a server; torch's intra-op thread count
is process-wide and is set when a Predictor is built, from ``threads`` or ``$STROKESCAN_TORCH_THREADS`` (build
one per process); the per-slice numpy and OpenCV steps run in a private thread pool of the same size (its
``map`` is thread-safe; do not submit ``analyse`` itself to it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from strokescan import __version__
from strokescan.config import BUNDLED_MODELS_DIR, infarct_enabled, rotation_enabled, torch_threads
from strokescan.core.calibration import PlattCalibrator
from strokescan.core.labels import EDEMA, HEMORRHAGE, INFARCT
from strokescan.errors import ModelError, OutOfScopeError
from strokescan.inference.explanations import CHOSEN_LAYER, HeatMap, explain_slices
from strokescan.inference.quantification import (SeriesQuantification, quantify_series, slice_areas,
                                                  slice_depths_mm)
from strokescan.inference.results import ScanResult, SliceResult
from strokescan.inference.segmenter import Segmenter
from strokescan.io import Scan, load_scan
from strokescan.io.scope import scope_problem
from strokescan.models.classifier import OPERATING_POINTS, ClassifierPlan, load_classifier, scan_score
from strokescan.models.rotation import RotationEstimator
from strokescan.preprocessing.pipeline import PreparedSlice, prepare_slices

log = logging.getLogger(__name__)

DEFAULT_CLASSIFIER_DIR = BUNDLED_MODELS_DIR / "classifier"
#: the scan threshold was chosen on whole scans (about 30 slices); an input with fewer slices showing brain (a
#: single image, a few slices) is flagged when one of its slices is
MIN_SLICES_FOR_SCAN_THRESHOLD = 3


@dataclass
class PreparedScan:
    """A scan brought to the models' inputs: one :class:`PreparedSlice` per slice and model."""

    scan: Scan
    rotation_deg: list[float]  # angle removed from each slice
    for_classifier: list[PreparedSlice]
    for_segmenter: list[PreparedSlice] | None  # None when the Predictor has no segmenter

    def classifier_input(self) -> torch.Tensor:
        """(n, 3, S, S) float32 in [0, 1], the classifier's input."""
        return torch.from_numpy(np.stack([p.channels for p in self.for_classifier]))


class Predictor:
    """Loads the bundled (or given) models once; ``analyse`` turns a Scan into a ScanResult.

    With ``segment=True`` (or a ``segmenter_dir``) the lesion U-Net also runs: the result then carries class-id
    masks in the input's grid, per-slice areas and per-scan volumes. ``operating_point`` ("balanced" or
    "sensitive"; default the model plan's) sets the thresholds of the flags.
    """

    def __init__(self, classifier_dir: Path | None = None, segmenter_dir: Path | None = None, segment: bool = False,
                 orientation_dir: Path | None = None, batch_size: int = 4, threads: int | None = None,
                 operating_point: str | None = None, correct_rotation: bool | None = None,
                 experimental_infarct: bool | None = None) -> None:
        threads = threads or torch_threads()
        if threads:
            torch.set_num_threads(threads)
        # numpy/OpenCV steps (preprocessing, mapping masks back) run over slices in this many threads
        self._pool = ThreadPoolExecutor(max_workers=threads or torch.get_num_threads(), thread_name_prefix="strokescan")
        self.model, self.plan = load_classifier(Path(classifier_dir or DEFAULT_CLASSIFIER_DIR))
        self.model.to(memory_format=torch.channels_last)  # about 20 % faster convolutions on CPU
        self.calibrators = [PlattCalibrator.from_dict(self.plan.calibration[name]) for name in self.plan.outputs]
        self.operating_point = operating_point or self.plan.default_operating_point
        if self.operating_point not in OPERATING_POINTS:
            raise ModelError(f"unknown operating point {self.operating_point!r} (choose from {', '.join(OPERATING_POINTS)})")
        self.rotation = RotationEstimator(orientation_dir)
        # the rotation step: the plan's choice unless the operator switches it off (option or STROKESCAN_ROTATION=off)
        self.correct_rotation = (self.plan.slice_plan.correct_rotation and rotation_enabled()
                                 if correct_rotation is None else correct_rotation)
        # infarct masks are not validated (docs/segmentation.md): off unless asked for (STROKESCAN_EXPERIMENTAL_INFARCT=1)
        self.experimental_infarct = infarct_enabled() if experimental_infarct is None else experimental_infarct
        # subtype outputs under MIN_VALIDATED_SUBTYPE_AUC (or unstated) in the plan: every interface marks them
        self.experimental_subtypes = experimental_subtypes(self.plan)
        self.segmenter = Segmenter(segmenter_dir) if segment or segmenter_dir is not None else None
        self._gated = self.segmenter is not None and self.segmenter.gates_with(self.plan.weights_sha256)
        if self.segmenter is not None and self.segmenter.plan.min_slice_probability > 0 and not self._gated:
            log.warning("the segmenter's detector gate was set for another detector: clot is not gated")
        self.batch_size = batch_size

    @property
    def model_info(self) -> dict[str, str]:
        info = {"classifier_sha256": self.plan.weights_sha256[:16], "strokescan": __version__}
        if self.segmenter is not None:
            info.update(self.segmenter.model_info(self._gated))
        return info

    def prepare(self, scan: Scan) -> PreparedScan:
        """Estimate the rotation (once per volume), then window, turn, mask, crop and resize every slice for
        each model's plan."""
        angles = self.rotation.slice_angles(scan, self.correct_rotation)
        plans = [self.plan.slice_plan] + ([self.segmenter.plan.slice_plan] if self.segmenter is not None else [])
        both = list(self._pool.map(lambda i: prepare_slices(scan.pixels[i], scan.is_hu, plans, angles[i]),
                                  range(scan.n_slices)))
        return PreparedScan(scan=scan, rotation_deg=angles, for_classifier=[b[0] for b in both],
                            for_segmenter=[b[1] for b in both] if self.segmenter is not None else None)

    def logits(self, prepared: PreparedScan) -> np.ndarray:
        """The detector's raw logits, (slices, outputs): each slice embedded on its own (in batches), then the
        slice context over the scan's slices in order."""
        x = prepared.classifier_input().contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            emb = torch.cat([self.model.embed(self.model.trunk(x[i:i + self.batch_size]))
                             for i in range(0, len(x), self.batch_size)]).unsqueeze(0)
            out = self.model.context_logits(emb, torch.ones(emb.shape[:2], dtype=torch.bool))[0]
        return out.numpy()

    def classify(self, prepared: PreparedScan) -> np.ndarray:
        """Calibrated probabilities, (slices, outputs): any hemorrhage, then each subtype (``plan.outputs``)."""
        logits = self.logits(prepared)
        return np.stack([c(logits[:, j]) for j, c in enumerate(self.calibrators)], axis=1)

    def segment(self, prepared: PreparedScan, probabilities: np.ndarray | None = None) -> list[np.ndarray]:
        """Class-id masks (:class:`~strokescan.core.labels.LesionClass`), one per slice, in the scan's grid. When
        the segmenter's plan gates clot by the detector, ``probabilities`` (:meth:`classify`'s) are used, or
        computed."""
        if self.segmenter is None or prepared.for_segmenter is None:
            raise ModelError("this Predictor has no segmenter (construct it with segment=True)")
        gate = None
        if self._gated:
            gate = (probabilities if probabilities is not None else self.classify(prepared))[:, 0]
        return self.segmenter.masks(prepared.scan, prepared.for_segmenter, self._pool, gate)

    def explain(self, prepared: PreparedScan, method: str = "gradcam", layer: str = CHOSEN_LAYER,
                slices: Sequence[int] | None = None) -> list[HeatMap]:
        """Where the detector looked for "any" hemorrhage on each of ``slices`` (default all) of ``prepared``, on the
        scan's own grid (:func:`~strokescan.inference.explanations.explain_slices`; docs/explanations.md says what
        a map does and does not show: not a lesion outline)."""
        return explain_slices(self, prepared, method=method, layer=layer, slices=slices)

    @staticmethod
    def quantify(scan: Scan, masks: list[np.ndarray]) -> SeriesQuantification:
        """Sizes for ``masks`` with the scan's spacing (pixels/voxels, labelled, when spacing is unknown): each
        slice counts for its own depth (:func:`~strokescan.inference.quantification.slice_depths_mm`); a single
        2-D slice gives areas, never a volume."""
        uniform = scan.slice_spacing_mm or scan.slice_thickness_mm
        thicknesses = scan.slice_thicknesses_mm or ([scan.slice_thickness_mm] * scan.n_slices
                                                   if scan.slice_thickness_mm and not scan.slice_spacing_mm else None)
        depths = slice_depths_mm(scan.n_slices, scan.slice_positions_mm, thicknesses, uniform)
        return quantify_series(masks, scan.pixel_spacing_mm, uniform if scan.is_volume else None, depths)

    def analyse(self, scan: Scan, force: bool = False, explain: bool = False) -> ScanResult:
        """All steps. A scan the models were not made for (MR, SEG/SR objects, other body parts, localizers,
        non-axial reformats) raises :class:`~strokescan.errors.OutOfScopeError`, unless ``force``: then it is
        analysed and the result says why it is out of scope. With ``explain``, the flagged slices (or, when none is,
        the most suspicious slice showing brain) are explained (:meth:`explain`): their results gain
        ``explanation`` and the result ``heatmaps``."""
        problem = scope_problem(scan)
        if problem and not force:
            raise OutOfScopeError(f"{scan.source_path}: out of scope: {problem}", problem)
        prepared = self.prepare(scan)
        probs = self.classify(prepared)
        slice_threshold = self.plan.threshold("slice", self.operating_point)
        scan_threshold = self.plan.threshold("scan", self.operating_point)
        shows_brain = np.array([p.brain_fraction >= self.plan.min_brain_fraction for p in prepared.for_classifier])
        slices = [
            SliceResult(
                slice_index=i if scan.is_volume else None,
                source=scan.slice_sources[i] if i < len(scan.slice_sources) else str(scan.source_path),
                probability=float(probs[i, 0]),
                positive=bool(shows_brain[i] and probs[i, 0] >= slice_threshold),
                rotation_deg=p.rotation_deg,
                brain_visible=bool(shows_brain[i]),
                subtypes={name: float(probs[i, j]) for j, name in enumerate(self.plan.outputs) if j > 0},
            )
            for i, p in enumerate(prepared.for_classifier)
        ]
        score = scan_score(probs[shows_brain, 0], self.plan.scan_score)
        subtypes = {name: float(probs[shows_brain, j].max()) if shows_brain.any() else 0.0
                    for j, name in enumerate(self.plan.outputs) if j > 0}
        masks = quantification = None
        decided_by = "scan" if shows_brain.sum() >= MIN_SLICES_FOR_SCAN_THRESHOLD else "slice"
        scan_positive = bool(score >= scan_threshold) if decided_by == "scan" else any(s.positive for s in slices)
        if scan.is_volume and not scan_positive:  # one finding: no flagged slice in a scan that is not flagged
            for s in slices:
                s.positive = False
        if self.segmenter is not None:
            masks = one_finding(self.segment(prepared, probs), [s.positive for s in slices], self.experimental_infarct)
            quantification = self.quantify(scan, masks)
            for s, m in zip(slices, masks):
                s.lesions = slice_areas(m, scan.pixel_spacing_mm)
        heatmaps = None
        if explain:
            flagged = [i for i, s in enumerate(slices) if s.positive]
            brain = np.flatnonzero(shows_brain)
            chosen = flagged or ([int(brain[np.argmax(probs[brain, 0])])] if brain.size else [])
            heatmaps = self.explain(prepared, slices=chosen)
            for h in heatmaps:
                slices[h.slice_index].explanation = h.to_dict()
        return ScanResult(
            path=str(scan.source_path),
            n_slices=scan.n_slices,
            slices=slices,
            probability=score,
            positive=scan_positive,
            slice_threshold=slice_threshold,
            scan_threshold=scan_threshold,
            operating_point=self.operating_point,
            subtypes=subtypes,
            model=self.model_info,
            masks=masks,
            quantification=quantification,
            heatmaps=heatmaps,
            out_of_scope=problem,
            experimental_subtypes=list(self.experimental_subtypes),
            decided_by=decided_by,
        )

    def analyse_path(self, path: str | Path, series: str | None = None, force: bool = False,
                     explain: bool = False) -> ScanResult:
        return self.analyse(load_scan(path, series=series), force=force, explain=explain)


def one_finding(masks: list[np.ndarray], flagged: Sequence[bool], infarct: bool = False) -> list[np.ndarray]:
    """The masks that go with the detector's finding: clot and its perihematomal edema only on the slices the
    detector flags (none on a slice without brain, none in a scan that is not flagged); infarct only when the
    experimental infarct output is on. Masks are edited in place and returned."""
    for m, positive in zip(masks, flagged):
        if not positive:
            m[(m == HEMORRHAGE) | (m == EDEMA)] = 0
        if not infarct:
            m[m == INFARCT] = 0
    return masks


#: a subtype output below this cross-validated slice ROC-AUC is experimental (near chance today: IPH, IVH)
MIN_VALIDATED_SUBTYPE_AUC = 0.80


def experimental_subtypes(plan: ClassifierPlan) -> list[str]:
    """Subtypes whose cross-validated slice ROC-AUC on ctich-kaggle (the one source with subtype labels on every
    slice; ``plan.metrics``) is under the bar, or not stated."""
    stated = (plan.metrics or {}).get("datasets", {}).get("ctich-kaggle", {}).get("subtypes", {})

    def auc(name: str) -> float:
        value = stated.get(name, {}).get("roc_auc", {}).get("value")
        return float(value) if isinstance(value, (int, float)) else float("nan")

    return [name for name in plan.outputs[1:] if not auc(name) >= MIN_VALIDATED_SUBTYPE_AUC]
