"""A :class:`~strokescan.inference.ScanResult` as DICOM objects any viewer or PACS takes, in the source study:

* a **DICOM SEG** (binary): one segment per lesion class found (SNOMED CT category and type from
  :mod:`strokescan.core.labels`), each frame derived from, and placed exactly on, one source slice
  (its ImagePositionPatient and ImageOrientationPatient: a gantry-tilted stack keeps its tilt). Empty frames
  are omitted (highdicom's default); a scan without any lesion gets a SEG of every lesion class with all frames
  kept (empty), so that "nothing segmented" is an explicit answer rather than a missing object.
* a **Comprehensive 3D SR measurement report** (TID 1500, ``highdicom.sr.MeasurementReport``): the volume of
  each lesion class in mL (referencing its SEG segment when there is one), the scan probability, the flag, the
  operating point and the model version (algorithm identification).
* a **secondary-capture key image** (``highdicom.sc.SCImage``) of the most suspicious slice with the lesion
  overlay and the notice "strokescan: research software, not a diagnosis" burnt in.

The patient and study modules are copied from the source instances (that is what puts the objects in the
same study); nothing here logs them.
"""

from __future__ import annotations

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
    """The derived instances for one analysed series."""

    seg: Dataset
    sr: Dataset
    key_image: Dataset

    def all(self) -> list[Dataset]:
        return [self.seg, self.sr, self.key_image]


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


def build_segmentation(scan: Scan, sources: list[Dataset], result: ScanResult,
                       uids: Callable[[], str] = generate_uid) -> Dataset:
    """The binary DICOM SEG of ``result.masks`` on the source slices (``sources`` in slice order)."""
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
    return hd.seg.Segmentation(
        source_images=sources, pixel_array=pixel_array, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=uids(), series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=uids(), instance_number=1, manufacturer=MANUFACTURER,
        manufacturer_model_name="strokescan", software_versions=str(__version__), device_serial_number="0",
        series_description="strokescan lesions (research)", content_label="STROKESCAN",
        content_description="strokescan lesions: research, not a diagnosis",
        omit_empty_frames=omit_empty,
    )


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


def build_measurement_report(sources: list[Dataset], seg: Dataset, result: ScanResult,
                             uids: Callable[[], str] = generate_uid) -> Dataset:
    """The TID 1500 measurement report, in the source study."""
    _, algorithm = _algorithm(result)
    volumes = volumes_json(result.quantification) if result.quantification is not None else {}
    segments = _segment_numbers(seg)
    groups: list = []
    for c in LESION_CLASSES:
        entry = volumes.get(c.label)
        if entry is None:
            continue
        unit = ML if entry["unit"] == "mL" else VOXELS
        measurement = hd.sr.Measurement(name=codes.SCT.Volume, value=float(entry["volume"]), unit=unit,
                                        algorithm_id=algorithm)
        tracking = hd.sr.TrackingIdentifier(uid=uids(), identifier=f"strokescan {c.label}")
        common = dict(tracking_identifier=tracking, finding_type=_coded(c.snomed), measurements=[measurement],
                      finding_category=_coded(MORPHOLOGICALLY_ABNORMAL_STRUCTURE), algorithm_id=algorithm)
        if c.label in segments and float(entry["volume"]) > 0:
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
    return hd.sr.Comprehensive3DSR(
        evidence=[*sources, seg], content=report[0], series_instance_uid=uids(),
        series_number=SR_SERIES_NUMBER, sop_instance_uid=uids(), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, series_description="strokescan report (research)",
    )


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
                    uids: Callable[[], str] = generate_uid) -> Dataset:
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
    image.SeriesDescription = "strokescan key image (research)"
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
                         uid_seed: str | None = None) -> ResultObjects:
    """SEG, SR and key image for ``result`` of ``scan`` read from ``datasets`` (the source instances).

    ``uid_seed`` makes the objects' UIDs deterministic (see :func:`uid_maker`)."""
    uids = uid_maker(uid_seed)
    # highdicom warns with header values (a patient name it finds odd): never let them reach a log
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sources = ordered_sources(scan, datasets)
        seg = build_segmentation(scan, sources, result, uids)
        sr = build_measurement_report(sources, seg, result, uids)
        return ResultObjects(seg=seg, sr=sr, key_image=build_key_image(scan, sources, result, uids=uids))
