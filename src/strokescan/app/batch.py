"""Batch analysis: inputs -> results -> files, with one error per bad input and none lost.

What ``strokescan predict`` does, as a library call the web app and the listener can share::

    runner = BatchRunner(Predictor(segment=True), masks_dir="masks", overlays_dir="overlays")
    for item in runner.run(["scan1.zip", "folder_of_scans/"]):
        print(item.error or item.result.probability)

This is the embedded engine: one process, one scan after another. ``strokescan.app.distributed`` runs the same
items on a Dask cluster (docs/batch.md).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from strokescan.errors import OutputError, StrokescanError
from strokescan.inference import Predictor, ScanResult
from strokescan.io import discover_inputs, load_scan
from strokescan.io.scan import Scan
from strokescan.io.writers import write_heatmaps, write_masks, write_overlays


@dataclass
class BatchItem:
    """One input's outcome: a result (and the files written for it) or the error that stopped it."""

    path: str  # the file or folder analysed, as given or as found inside a given folder
    result: ScanResult | None = None
    error: StrokescanError | None = None
    mask_paths: list[str] = field(default_factory=list)
    overlay_paths: list[str] = field(default_factory=list)
    heatmap_paths: list[str] = field(default_factory=list)

    def json_lines(self) -> list[dict[str, Any]]:
        """The CLI's JSON lines for this input (an error line when it failed)."""
        if self.error is not None:
            return [{"path": self.path, "error": str(self.error), "error_type": type(self.error).__name__}]
        assert self.result is not None
        return self.result.json_lines(self.mask_paths or None)

    def without_arrays(self) -> BatchItem:
        """This item with its result's masks and heat maps dropped (they are in the files written): what a
        worker process sends back."""
        if self.result is None:
            return self
        return replace(self, result=replace(self.result, masks=None, heatmaps=None))

    def __getstate__(self) -> dict[str, Any]:
        """Pickled with the error's class, arguments and attributes, so that errors whose constructor takes more
        than the message (:class:`~strokescan.errors.MultipleSeriesError`) cross process boundaries too."""
        state = dict(self.__dict__)
        if self.error is not None:
            state["error"] = (type(self.error), self.error.args, dict(self.error.__dict__))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state["error"] is not None:
            error_class, args, attributes = state["error"]
            error = error_class.__new__(error_class)
            error.args = args
            error.__dict__.update(attributes)
            state = {**state, "error": error}
        self.__dict__.update(state)


@dataclass(frozen=True)
class PredictorOptions:
    """How to build a :class:`Predictor`: what another process needs to build the same one."""

    classifier_dir: Path | None = None
    segmenter_dir: Path | None = None
    segment: bool = False
    operating_point: str | None = None
    correct_rotation: bool | None = None  # None: the model plan's (and STROKESCAN_ROTATION)
    experimental_infarct: bool | None = None  # None: STROKESCAN_EXPERIMENTAL_INFARCT

    def build(self) -> Predictor:
        return Predictor(self.classifier_dir, segmenter_dir=self.segmenter_dir, segment=self.segment,
                         operating_point=self.operating_point, correct_rotation=self.correct_rotation,
                         experimental_infarct=self.experimental_infarct)


def find_targets(inputs: Sequence[str]) -> list[tuple[str, Path | StrokescanError]]:
    """Every scan found in ``inputs`` (a folder of scans expands), or the error that the input gave."""
    out: list[tuple[str, Path | StrokescanError]] = []
    for given in inputs:
        try:
            out += [(str(p), p) for p in discover_inputs(given)]
        except StrokescanError as exc:
            out.append((given, exc))
    return out


def output_stem(path: Path, taken: set[str]) -> str:
    """File-name stem for an input's masks/overlays (``scan.nii.gz`` -> ``scan``; a DICOM folder -> its name),
    made unique within one run so that two inputs never overwrite each other's output."""
    name = path.name
    for suffix in (".nii.gz", ".nii", ".dcm", ".zip"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    else:
        name = path.stem if path.is_file() else name
    stem, k = name or "scan", 2
    while stem in taken:
        stem, k = f"{name}-{k}", k + 1
    taken.add(stem)
    return stem


class BatchRunner:
    """Analyses inputs one by one with one :class:`Predictor`; writes masks/overlays when folders are given
    (the Predictor must then have a segmenter), and with ``heatmaps_dir`` explains the flagged slices (or the
    most suspicious one) and writes their heat maps."""

    def __init__(self, predictor: Predictor, masks_dir: Path | str | None = None,
                 overlays_dir: Path | str | None = None, series: str | None = None, force: bool = False,
                 progress: bool = False, heatmaps_dir: Path | str | None = None) -> None:
        if (masks_dir or overlays_dir) and predictor.segmenter is None:
            raise ValueError("masks or overlays need a Predictor with a segmenter")
        self.predictor = predictor
        self.masks_dir = Path(masks_dir) if masks_dir else None
        self.overlays_dir = Path(overlays_dir) if overlays_dir else None
        self.heatmaps_dir = Path(heatmaps_dir) if heatmaps_dir else None
        self.series = series
        self.force = force
        self.progress = progress
        self._stems: set[str] = set()

    @property
    def writes_files(self) -> bool:
        return bool(self.masks_dir or self.overlays_dir or self.heatmaps_dir)

    def run(self, inputs: Sequence[str]) -> Iterator[BatchItem]:
        """One :class:`BatchItem` per scan found, in order; an error stops only its own input. Output names are
        unique within one run."""
        self._stems = set()
        targets = find_targets(inputs)
        for shown, target in tqdm(targets, desc="analysing", unit="scan", disable=not self.progress or len(targets) < 2):
            if isinstance(target, StrokescanError):
                yield BatchItem(shown, error=target)
                continue
            try:
                yield self.analyse(shown, target)
            except StrokescanError as exc:
                yield BatchItem(shown, error=exc)

    def analyse(self, shown: str, path: Path, stem: str | None = None) -> BatchItem:
        """Load, analyse and write the outputs of one scan (raises StrokescanError). ``stem`` names its output
        files (default: the next unique one of this run, as :func:`output_stem` gives it)."""
        scan = load_scan(path, series=self.series)
        item = BatchItem(shown, result=self.predictor.analyse(scan, force=self.force,
                                                              explain=self.heatmaps_dir is not None))
        if self.writes_files:
            self._write(item, scan, stem or output_stem(scan.source_path, self._stems))
        return item

    def _write(self, item: BatchItem, scan: Scan, stem: str) -> None:
        result = item.result
        assert result is not None
        try:
            if self.masks_dir:
                assert result.masks is not None
                item.mask_paths = [str(p) for p in write_masks(result.masks, self.masks_dir, stem)]
            if self.overlays_dir:
                assert result.masks is not None
                item.overlay_paths = [str(p) for p in write_overlays(scan, result.masks, self.overlays_dir, stem)]
            if self.heatmaps_dir:
                assert result.heatmaps is not None
                item.heatmap_paths = [str(p) for p in write_heatmaps(scan, result.heatmaps, self.heatmaps_dir, stem)]
        except OSError as exc:
            raise OutputError(f"cannot write masks/overlays/heat maps for {scan.source_path}: "
                              f"{exc.strerror or exc}") from None
