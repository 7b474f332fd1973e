"""A :class:`~strokescan.inference.ScanResult` as DICOM objects any viewer or PACS takes, in the source study:

* a **DICOM SEG** (binary): one segment per lesion class found (SNOMED CT category and type from
  :mod:`strokescan.core.labels`), each frame derived from, and placed exactly on, one source slice
  (its ImagePositionPatient and ImageOrientationPatient: a gantry-tilted stack keeps its tilt). Empty frames
  are omitted (highdicom's default); a scan without any lesion gets a SEG of every lesion class with all frames
  kept (empty), so that "nothing segmented" is an explicit answer rather than a missing object. When the
  source slices differ in thickness, each frame carries its own slice's SliceThickness (per-frame Pixel
  Measures) instead of one shared value. A CT series without FrameOfReferenceUID cannot have a SEG (the IOD
  requires one): the SR and the key image are built without it and ``ResultObjects.seg_problem`` says why.
* a **Comprehensive 3D SR measurement report** (TID 1500, ``highdicom.sr.MeasurementReport``): the volume of
  each lesion class in mL (referencing its SEG segment when there is one), the scan probability, the flag, the
  operating point and the model version (algorithm identification).
* a **secondary-capture key image** (``highdicom.sc.SCImage``) of the most suspicious slice with the lesion
  overlay and the notice "strokescan: research software, not a diagnosis" burnt in.

A series known to miss slices (gaps in position or InstanceNumber, fewer than ImagesInAcquisition) gets an SR
with CompletionFlag PARTIAL and the reason in CompletionFlagDescription. A new version of a series' results
(the series grew after it was analysed) has new UIDs; its SR lists the earlier SR in its Predecessor
Documents Sequence (highdicom's ``previous_versions``). A SEG has no predecessor reference in its IOD: the new
SEG's series description names its version.

The patient and study modules are copied from the source instances (that is what puts the objects in the
same study); nothing here logs them.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import highdicom as hd
import numpy as np
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from strokescan import __version__
from strokescan.core.labels import HEMORRHAGE, LESION_CLASSES, MORPHOLOGICALLY_ABNORMAL_STRUCTURE, Code, LesionClass
from strokescan.errors import StrokescanError
from strokescan.inference import ScanResult
from strokescan.inference.results import volumes_json
from strokescan.io.scan import Scan
from strokescan.io.writers import overlay_image

# highdicom logs the UIDs of the instances it copies from at INFO: UIDs identify a study, hence a patient
logging.getLogger("highdicom").setLevel(logging.WARNING)

NOTICE = "strokescan: research software, not a diagnosis"
MANUFACTURER = "strokescan"
#: series numbers of the derived series (high, so that they sort after the scanner's own)
SEG_SERIES_NUMBER, SR_SERIES_NUMBER, SC_SERIES_NUMBER = 9001, 9002, 9003
#: private coding scheme for the concepts no standard code names
PRIVATE_SCHEME = "99STRKSCN"
ML = CodedConcept("mL", "UCUM", "milliliter")
VOXELS = CodedConcept("{voxels}", "UCUM", "voxels")
NO_UNITS = CodedConcept("1", "UCUM", "no units")
PROBABILITY = CodedConcept("ss-probability", PRIVATE_SCHEME, "Probability of intracranial hemorrhage")
OPERATING_POINT = CodedConcept("ss-operating-point", PRIVATE_SCHEME, "Operating point")
CT_HEAD = CodedConcept("24725-4", "LN", "CT Head")
PRESENT = CodedConcept("52101004", "SCT", "Present")
ABSENT = CodedConcept("2667000", "SCT", "Absent")
FLAGGED = CodedConcept("ss-flagged", PRIVATE_SCHEME, "Hemorrhage flagged at the operating point")


class ResultObjectError(StrokescanError):
    """The result cannot be turned into DICOM objects (no DICOM source, sources missing, a grid mismatch)."""


@dataclass
class ResultObjects:
    """The derived instances for one analysed series (``seg`` None when the geometry allows none: then
    ``seg_problem`` says why)."""

    seg: Dataset | None
    sr: Dataset
    key_image: Dataset
    seg_problem: str | None = None
    missing_slices: str | None = None  # why the SR says PARTIAL; None when no slice is known to be missing

    def all(self) -> list[Dataset]:
        return [ds for ds in (self.seg, self.sr, self.key_image) if ds is not None]

    def named(self) -> list[tuple[str, Dataset]]:
        """(file stem, dataset) of each object built."""
        return [(n, ds) for n, ds in (("seg", self.seg), ("sr", self.sr), ("key-image", self.key_image))
                if ds is not None]


def _coded(code: Code) -> CodedConcept:
    return CodedConcept(code.value, code.scheme, code.meaning)


def _algorithm(result: ScanResult) -> tuple[hd.AlgorithmIdentificationSequence, hd.sr.AlgorithmIdentification]:
    version = str(result.model.get("strokescan") or __version__)
    params = {k: str(v) for k, v in sorted(result.model.items()) if k != "strokescan"}
    seq = hd.AlgorithmIdentificationSequence(name="strokescan", family=codes.cid7162.ArtificialIntelligence,
                                             version=version, parameters=params or None)
    sr_alg = hd.sr.AlgorithmIdentification(name="strokescan", version=version,
                                           parameters=[f"{k}={v}" for k, v in params.items()] or None)
    return seq, sr_alg


#: type 2 attributes of the patient and study modules that highdicom copies (and so needs) from a source
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "AccessionNumber", "StudyID")


def _header(ds: Dataset) -> Dataset:
    """A header-only copy of a source instance with the type 2 patient/study attributes it lacks added empty
    (anonymised files often drop them; the derived objects then carry them empty, as the standard allows)."""
    out = Dataset()
    for elem in ds:
        if elem.tag != 0x7FE00010:
            out.add(elem)
    if hasattr(ds, "file_meta"):
        out.file_meta = ds.file_meta
    for keyword in _TYPE2:
        if keyword not in out:
            setattr(out, keyword, "")
    return out


def ordered_sources(scan: Scan, datasets: Sequence[Dataset]) -> list[Dataset]:
    """Headers of the source datasets in the scan's slice order (one per slice), matched by SOPInstanceUID."""
    if scan.references is None or len(scan.references) != scan.n_slices:
        raise ResultObjectError("the scan was not read from DICOM: no source instances to reference")
    by_uid = {str(ds.SOPInstanceUID): ds for ds in datasets if "SOPInstanceUID" in ds}
    if any(r.frame_number is not None for r in scan.references):
        raise ResultObjectError("multi-frame (enhanced) source objects are not supported yet: send single-frame slices")
    try:
        return [_header(by_uid[str(r.sop_instance_uid)]) for r in scan.references]
    except KeyError:
        raise ResultObjectError("a slice's source instance is not among the datasets given") from None


def _masks(scan: Scan, result: ScanResult) -> np.ndarray:
    if result.masks is None:
        raise ResultObjectError("the result has no masks: run the Predictor with segment=True")
    masks = np.stack([np.asarray(m) for m in result.masks])
    if masks.shape != scan.pixels.shape:
        raise ResultObjectError(f"masks of shape {masks.shape} do not match the scan's grid {scan.pixels.shape}")
    return masks


def seg_geometry_problem(sources: Sequence[Dataset]) -> str | None:
    """Why the sources cannot carry a SEG (a CT without FrameOfReferenceUID, for one), or None."""
    if any(not str(ds.get("FrameOfReferenceUID", "") or "").strip() for ds in sources):
        return "the source slices have no FrameOfReferenceUID, which a SEG of CT images requires"
    if any(ds.get("ImagePositionPatient") is None or ds.get("ImageOrientationPatient") is None for ds in sources):
        return "the source slices lack ImagePositionPatient or ImageOrientationPatient"
    return None


def _thickness(ds: Dataset) -> float | None:
    try:
        value = float(ds.get("SliceThickness"))
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def _per_frame_thickness(seg: Dataset, sources: Sequence[Dataset]) -> None:
    """Give each frame its own source slice's SliceThickness when the sources differ (highdicom copies the first
    source's into the shared Pixel Measures)."""
    thickness = {str(ds.SOPInstanceUID): _thickness(ds) for ds in sources}
    if len(set(thickness.values())) <= 1:
        return
    shared = seg.SharedFunctionalGroupsSequence[0]
    measures = shared.get("PixelMeasuresSequence")
    if not measures:
        return
    template = measures[0]
    for item in seg.PerFrameFunctionalGroupsSequence:
        uid = str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        own = Dataset()
        own.PixelSpacing = template.PixelSpacing
        if thickness.get(uid) is not None:
            own.SliceThickness = thickness[uid]
        item.PixelMeasuresSequence = [own]
    del shared.PixelMeasuresSequence


def build_segmentation(scan: Scan, sources: list[Dataset], result: ScanResult,
                       uids: Callable[[], str] = generate_uid, version: int = 1) -> Dataset:
    """The binary DICOM SEG of ``result.masks`` on the source slices (``sources`` in slice order)."""
    problem = seg_geometry_problem(sources)
    if problem:
        raise ResultObjectError(f"no SEG: {problem}")
    masks = _masks(scan, result)
    present = [c for c in LESION_CLASSES if (masks == c).any()]
    classes, omit_empty = (present, True) if present else (list(LESION_CLASSES), False)
    algorithm, _ = _algorithm(result)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=k, segment_label=c.label,
            segmented_property_category=_coded(MORPHOLOGICALLY_ABNORMAL_STRUCTURE),
            segmented_property_type=_coded(c.snomed), algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm, tracking_uid=uids(), tracking_id=f"strokescan {c.label}",
            display_color=hd.color.CIELabColor.from_rgb(*c.colour) if hasattr(hd.color.CIELabColor, "from_rgb")
            else None,
        )
        for k, c in enumerate(classes, start=1)
    ]
    pixel_array = np.stack([masks == c for c in classes], axis=-1)  # (slices, rows, cols, segments)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=pixel_array, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=uids(), series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=uids(), instance_number=1, manufacturer=MANUFACTURER,
        manufacturer_model_name="strokescan", software_versions=str(__version__), device_serial_number="0",
        series_description="strokescan lesions (research)" + (f" version {version}" if version > 1 else ""),
        content_label="STROKESCAN", content_description="strokescan lesions: research, not a diagnosis",
        omit_empty_frames=omit_empty,
    )
    _per_frame_thickness(seg, sources)
    return seg


def _segment_numbers(seg: Dataset) -> dict[str, int]:
    return {str(item.SegmentLabel): int(item.SegmentNumber) for item in seg.SegmentSequence}


def _referenced_segment(seg: Dataset, number: int, sources: list[Dataset]) -> hd.sr.ReferencedSegment:
    """The SR's reference to one segment of ``seg``. highdicom's ``from_segmentation`` expects the segment
    number in each frame's functional groups; a SEG of one segment has it in the shared ones instead."""
    shared = seg.SharedFunctionalGroupsSequence[0].get("SegmentIdentificationSequence")
    if not shared:
        return hd.sr.ReferencedSegment.from_segmentation(seg, segment_number=number)
    derived = {str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
               for item in seg.PerFrameFunctionalGroupsSequence}
    return hd.sr.ReferencedSegment(
        sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=number,
        frame_numbers=list(range(1, int(seg.NumberOfFrames) + 1)),
        source_images=[hd.sr.SourceImageForSegmentation(ds.SOPClassUID, ds.SOPInstanceUID) for ds in sources
                       if str(ds.SOPInstanceUID) in derived])


#: UCUM units of the sizes in ``volumes_json`` (a single 2-D slice gives areas)
_UNITS = {"mL": ML, "voxels": VOXELS, "mm2": CodedConcept("mm2", "UCUM", "square millimeter"),
          "px": CodedConcept("{pixels}", "UCUM", "pixels")}


def build_measurement_report(sources: list[Dataset], seg: Dataset | None, result: ScanResult,
                             uids: Callable[[], str] = generate_uid, missing_slices: str | None = None,
                             previous_versions: Sequence[Dataset] | None = None) -> Dataset:
    """The TID 1500 measurement report, in the source study (volumes reference the SEG's segments when there
    is a SEG); PARTIAL with ``missing_slices`` (the reason); ``previous_versions``: earlier SRs it supersedes."""
    _, algorithm = _algorithm(result)
    volumes = volumes_json(result.quantification) if result.quantification is not None else {}
    segments = _segment_numbers(seg) if seg is not None else {}
    groups: list = []
    for c in LESION_CLASSES:
        entry = volumes.get(c.label)
        if entry is None:
            continue
        size = float(entry["volume"] if "volume" in entry else entry["area"])
        unit = _UNITS.get(entry["unit"], VOXELS)
        name = codes.SCT.Volume if "volume" in entry else codes.SCT.Area
        measurement = hd.sr.Measurement(name=name, value=size, unit=unit, algorithm_id=algorithm)
        tracking = hd.sr.TrackingIdentifier(uid=uids(), identifier=f"strokescan {c.label}")
        common = dict(tracking_identifier=tracking, finding_type=_coded(c.snomed), measurements=[measurement],
                      finding_category=_coded(MORPHOLOGICALLY_ABNORMAL_STRUCTURE), algorithm_id=algorithm)
        if c.label in segments and size > 0:
            ref = _referenced_segment(seg, segments[c.label], sources)
            groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(referenced_segment=ref, **common))
        else:
            groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(**common))
    scan_group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=uids(), identifier="strokescan scan"),
        finding_type=_coded(HEMORRHAGE.snomed), algorithm_id=algorithm,
        measurements=[hd.sr.Measurement(name=PROBABILITY, value=round(float(result.probability), 4), unit=NO_UNITS,
                                        algorithm_id=algorithm)],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(FLAGGED, PRESENT if result.positive else ABSENT),
            hd.sr.QualitativeEvaluation(OPERATING_POINT, CodedConcept(
                f"ss-op-{result.operating_point}", PRIVATE_SCHEME, result.operating_point)),
        ],
    )
    groups.insert(0, scan_group)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=uids(), name="strokescan", manufacturer_name=MANUFACTURER,
            model_name=f"strokescan {result.model.get('strokescan') or __version__}"),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=CT_HEAD, imaging_measurements=groups,
    )
    version = len(previous_versions or ()) + 1
    sr = hd.sr.Comprehensive3DSR(
        evidence=[*sources, seg] if seg is not None else list(sources), content=report[0],
        series_instance_uid=uids(), series_number=SR_SERIES_NUMBER, sop_instance_uid=uids(), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=missing_slices is None,
        series_description="strokescan report (research)" + (f" version {version}" if version > 1 else ""),
        previous_versions=list(previous_versions) if previous_versions else None,
    )
    if missing_slices is not None:
        sr.CompletionFlagDescription = f"slices missing: {missing_slices}"[:64]
    return sr


def missing_slices(scan: Scan, sources: Sequence[Dataset]) -> str | None:
    """Why slices are known to be missing from the series (None when none is): fewer slices than
    ImagesInAcquisition, a gap in InstanceNumber, or a step between slice positions far larger than the slices'
    thickness and the series' usual step."""
    n = len(sources)
    with contextlib.suppress(TypeError, ValueError):
        expected = max(int(ds.get("ImagesInAcquisition") or 0) for ds in sources)
        if expected > n:
            return f"{n} of {expected} images (ImagesInAcquisition)"
    numbers = []
    with contextlib.suppress(TypeError, ValueError):
        numbers = sorted({int(ds.get("InstanceNumber")) for ds in sources if ds.get("InstanceNumber") not in (None, "")})
    if len(numbers) == n and n > 1 and numbers[-1] - numbers[0] + 1 > n:
        return f"{numbers[-1] - numbers[0] + 1 - n} instance number(s) missing"
    positions = scan.slice_positions_mm
    if positions is not None and len(positions) > 2:
        steps = np.abs(np.diff(np.asarray(positions, float)))
        usual = float(np.median(steps))
        thickness = scan.slice_thicknesses_mm
        for i, step in enumerate(steps):
            local = max(thickness[i], thickness[i + 1]) if thickness else usual
            if usual > 0 and step > 1.5 * usual and step > 1.5 * local:
                return f"a {step:.1f} mm gap between slices {i + 1} and {i + 2}"
    return None


def _patient_orientation(iop: Sequence[float] | None) -> tuple[str, str]:
    """Row and column directions as DICOM patient orientation letters (dominant axis), from the IOP."""
    if iop is None:
        return ("L", "P")
    letters = (("R", "L"), ("A", "P"), ("F", "H"))

    def letter(v: Sequence[float]) -> str:
        axis = int(np.argmax(np.abs(v)))
        return letters[axis][1 if v[axis] > 0 else 0]

    return (letter(iop[:3]), letter(iop[3:]))


def key_image_pixels(scan: Scan, result: ScanResult, index: int) -> np.ndarray:
    """RGB uint8: slice ``index`` with the overlay and the notice (and the scan's probability) burnt in."""
    masks = _masks(scan, result)
    rgb = np.ascontiguousarray(overlay_image(scan.pixels[index], scan.is_hu, masks[index]))
    height, width = rgb.shape[:2]
    font = cv2.FONT_HERSHEY_SIMPLEX
    lines = [NOTICE, f"slice {index + 1}/{scan.n_slices}  p={result.probability:.2f} ({result.operating_point})"]
    (text_w, text_h), _ = cv2.getTextSize(NOTICE, font, 1.0, 1)
    scale = max(0.3, min(1.0, 0.94 * width / text_w))
    thickness = 1 if scale < 0.8 else 2
    line_h = int(text_h * scale * 1.6) + 2
    y = line_h
    for text in lines:
        cv2.putText(rgb, text, (int(0.03 * width), y), font, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
        cv2.putText(rgb, text, (int(0.03 * width), y), font, scale, (255, 255, 255), thickness, cv2.LINE_AA)
        y += line_h
    del height
    return rgb


def build_key_image(scan: Scan, sources: list[Dataset], result: ScanResult, index: int | None = None,
                    uids: Callable[[], str] = generate_uid, version: int = 1) -> Dataset:
    """The secondary-capture key image of the most suspicious slice (or ``index``)."""
    if index is None:
        index = result.most_suspicious_slice or 0
    ref = sources[index]
    iop = scan.references[index].image_orientation_patient if scan.references else None
    image = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=ref, pixel_array=key_image_pixels(scan, result, index), photometric_interpretation="RGB",
        bits_allocated=8, coordinate_system="PATIENT", series_instance_uid=uids(),
        series_number=SC_SERIES_NUMBER, sop_instance_uid=uids(), instance_number=1,
        manufacturer=MANUFACTURER, pixel_spacing=tuple(float(v) for v in scan.pixel_spacing_mm)
        if scan.pixel_spacing_mm else None,
        patient_orientation=_patient_orientation(iop), transfer_syntax_uid=ExplicitVRLittleEndian,
    )
    image.BurnedInAnnotation = "YES"
    image.SeriesDescription = "strokescan key image (research)" + (f" version {version}" if version > 1 else "")
    image.ImageComments = NOTICE
    image.DerivationDescription = f"strokescan overlay of source slice {index + 1}"
    return image


def uid_maker(seed: str | None) -> Callable[[], str]:
    """Fresh UIDs, or with a ``seed`` the same sequence of UIDs every time: a result built again for the same
    seed (a retry after a crash) then has the same SOP Instance UIDs, so a PACS stores it once."""
    if seed is None:
        return generate_uid
    counter = itertools.count()
    return lambda: generate_uid(entropy_srcs=[seed, str(next(counter))])


def build_result_objects(scan: Scan, datasets: Sequence[Dataset], result: ScanResult,
                         uid_seed: str | None = None, previous_versions: Sequence[Dataset] | None = None,
                         complete: bool | None = None) -> ResultObjects:
    """SEG, SR and key image for ``result`` of ``scan`` read from ``datasets`` (the source instances).

    ``uid_seed`` makes the objects' UIDs deterministic (see :func:`uid_maker`). A SEG the geometry does not
    allow is left out (``seg_problem`` says why); the SR and key image are built all the same.
    ``previous_versions``: the SRs of earlier versions of this series' results, superseded by this one.
    ``complete``: False marks the SR PARTIAL; None (default) decides by :func:`missing_slices`."""
    uids = uid_maker(uid_seed)
    version = len(previous_versions or ()) + 1
    # highdicom warns with header values (a patient name it finds odd): never let them reach a log
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sources = ordered_sources(scan, datasets)
        seg, seg_problem = None, seg_geometry_problem(sources)
        if seg_problem is None:
            try:
                seg = build_segmentation(scan, sources, result, uids, version=version)
            except ValueError:  # highdicom refuses a geometry it cannot place (its message may quote values)
                seg_problem = "highdicom cannot place the SEG on the source slices"
        missing = missing_slices(scan, sources) if complete is None else (None if complete else "slices missing")
        sr = build_measurement_report(sources, seg, result, uids, missing_slices=missing,
                                      previous_versions=previous_versions)
        key = build_key_image(scan, sources, result, uids=uids, version=version)
        return ResultObjects(seg=seg, sr=sr, key_image=key, seg_problem=seg_problem, missing_slices=missing)
