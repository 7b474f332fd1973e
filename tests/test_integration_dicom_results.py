"""Results as DICOM: SEG frames on the source slices (tilted GE stack), TID 1500 SR in the same study, key image."""

from __future__ import annotations

import dataclasses
import io
import zipfile
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from conftest import save_untrained_classifier

from strokescan.config import SAMPLES_DIR
from strokescan.core.labels import LESION_CLASSES
from strokescan.io import load_scan

GE = SAMPLES_DIR / "ge-hispeed-head-series.zip"


def ge_datasets() -> list[pydicom.Dataset]:
    with zipfile.ZipFile(GE) as z:
        return [pydicom.dcmread(io.BytesIO(z.read(n))) for n in sorted(z.namelist()) if n.endswith(".dcm")]


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    from strokescan.inference import Predictor

    datasets = ge_datasets()
    scan = load_scan(datasets)
    model = save_untrained_classifier(tmp_path_factory.mktemp("clf"))
    result = Predictor(model, segment=True).analyse(scan)
    return datasets, scan, result


@pytest.fixture(scope="module")
def objects(analysed, tmp_path_factory):
    """The three objects written to disk and read back, as a PACS would hold them."""
    from strokescan.app.integration.dicom_results import build_result_objects

    datasets, scan, result = analysed
    folder = tmp_path_factory.mktemp("objects")
    built = build_result_objects(scan, datasets, result)
    paths = {}
    for name, ds in (("seg", built.seg), ("sr", built.sr), ("sc", built.key_image)):
        paths[name] = folder / f"{name}.dcm"
        ds.save_as(paths[name], enforce_file_format=True)
    return {k: pydicom.dcmread(p) for k, p in paths.items()}


def test_ge_series_is_tilted():
    scan = load_scan(GE)
    assert scan.n_slices == 28 and scan.gantry_tilt_deg == pytest.approx(18.5)


def test_seg_frames_lie_on_the_source_slices(analysed, objects):
    datasets, scan, result = analysed
    seg = hd.seg.Segmentation.from_dataset(objects["seg"])
    by_uid = {ds.SOPInstanceUID: ds for ds in datasets}
    assert seg.StudyInstanceUID == datasets[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == datasets[0].FrameOfReferenceUID
    iop = [float(v) for v in seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient]
    assert np.allclose(iop, [float(v) for v in datasets[0].ImageOrientationPatient])  # the tilt is kept
    masks = np.stack(result.masks)
    labels = [str(s.SegmentLabel) for s in seg.SegmentSequence]
    expected_frames = 0
    for k, label in enumerate(labels, start=1):
        cls = next(c for c in LESION_CLASSES if c.label == label)
        expected_frames += int(((masks == cls).reshape(len(masks), -1).any(axis=1)).sum())
    assert seg.NumberOfFrames == expected_frames  # empty frames omitted, every non-empty one present
    pixels = seg.pixel_array.reshape(seg.NumberOfFrames, seg.Rows, seg.Columns)
    slice_of = {r.sop_instance_uid: i for i, r in enumerate(scan.references)}
    for f, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        ipp = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        assert np.allclose(ipp, [float(v) for v in by_uid[uid].ImagePositionPatient], atol=1e-4)
        segment = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        cls = next(c for c in LESION_CLASSES if c.label == labels[segment - 1])
        assert np.array_equal(pixels[f] > 0, masks[slice_of[uid]] == cls)  # same pixels, same grid


def test_seg_segments_carry_snomed_codes(objects):
    for item in objects["seg"].SegmentSequence:
        cls = next(c for c in LESION_CLASSES if c.label == item.SegmentLabel)
        code = item.SegmentedPropertyTypeCodeSequence[0]
        assert (code.CodeValue, code.CodingSchemeDesignator) == (cls.snomed.value, cls.snomed.scheme)
        assert item.SegmentAlgorithmType == "AUTOMATIC"


def test_sr_is_a_tid1500_report_in_the_source_study(analysed, objects):
    datasets, _, result = analysed
    sr = hd.sr.Comprehensive3DSR.from_dataset(objects["sr"])
    assert sr.StudyInstanceUID == datasets[0].StudyInstanceUID
    assert sr.SeriesInstanceUID != datasets[0].SeriesInstanceUID
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    volumes = result.to_dict()["volumes"]
    report = sr.content
    found = {}
    for group in [*report.get_volumetric_roi_measurement_groups(), *report.get_image_measurement_groups()]:
        for m in group.get_measurements():
            found[(group.finding_type.meaning, m.name.meaning)] = (m.value, m.unit.value)
    for cls in LESION_CLASSES:
        value, unit = found[(cls.snomed.meaning, "Volume")]
        assert unit == "mL" and value == pytest.approx(volumes[cls.label]["volume"], abs=1e-3)
    assert found[("Hemorrhage", "Probability of intracranial hemorrhage")][0] == pytest.approx(result.probability, abs=1e-4)
    values: list[str] = []
    objects["sr"].walk(lambda _ds, elem: values.append(str(elem.value)) if elem.keyword in ("TextValue", "CodeMeaning")
                       else None)
    assert "balanced" in values  # the operating point
    assert f"classifier_sha256={result.model['classifier_sha256']}" in values  # the model version
    assert result.model["strokescan"] in values


def test_key_image_has_the_notice_and_the_study(analysed, objects):
    datasets, scan, result = analysed
    sc = objects["sc"]
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and sc.StudyInstanceUID == datasets[0].StudyInstanceUID
    assert sc.BurnedInAnnotation == "YES" and "not a diagnosis" in sc.ImageComments
    assert sc.pixel_array.shape == (scan.pixels.shape[1], scan.pixels.shape[2], 3)
    from strokescan.app.integration.dicom_results import key_image_pixels

    plain = key_image_pixels(dataclasses.replace(scan), result, result.most_suspicious_slice)
    assert np.array_equal(sc.pixel_array, plain)
    assert (plain[:40].astype(int).sum(axis=-1) == 765).sum() > 200  # white text at the top


def test_no_lesion_gives_an_explicit_empty_seg(analysed):
    from strokescan.app.integration.dicom_results import build_result_objects

    datasets, scan, result = analysed
    empty = dataclasses.replace(result, masks=[np.zeros_like(m) for m in result.masks])
    built = build_result_objects(scan, datasets, empty)
    assert built.seg.NumberOfFrames == scan.n_slices * len(LESION_CLASSES)
    assert not built.seg.pixel_array.any()


def test_refuses_a_non_dicom_scan(analysed, tmp_path: Path):
    from strokescan.app.integration.dicom_results import ResultObjectError, build_result_objects

    datasets, scan, result = analysed
    with pytest.raises(ResultObjectError):
        build_result_objects(dataclasses.replace(scan, references=None), datasets, result)
    with pytest.raises(ResultObjectError):
        build_result_objects(scan, datasets[:-1], result)


CQ500 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "head-ct-dicom" / "cq500-ct-0_thin_jpeg-lossless"


def test_seg_frames_carry_their_own_thickness_and_the_sr_volume_matches_the_seg(analysed, objects):
    """The GE series mixes 4 mm and 7 mm slices: no shared SliceThickness; SR volume = SEG pixels x each frame's
    thickness (within 1 %)."""
    datasets, scan, result = analysed
    seg = objects["seg"]
    assert "PixelMeasuresSequence" not in seg.SharedFunctionalGroupsSequence[0]
    by_uid = {ds.SOPInstanceUID: float(ds.SliceThickness) for ds in datasets}
    pixels = seg.pixel_array.reshape(int(seg.NumberOfFrames), seg.Rows, seg.Columns)
    labels = [str(s.SegmentLabel) for s in seg.SegmentSequence]
    seg_ml: dict[str, float] = {}
    for f, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        measures = item.PixelMeasuresSequence[0]
        assert float(measures.SliceThickness) == by_uid[uid]
        area = float(measures.PixelSpacing[0]) * float(measures.PixelSpacing[1])
        label = labels[int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber) - 1]
        seg_ml[label] = seg_ml.get(label, 0.0) + int(pixels[f].sum()) * area * float(measures.SliceThickness) / 1000
    sr = hd.sr.Comprehensive3DSR.from_dataset(objects["sr"])
    for group in sr.content.get_volumetric_roi_measurement_groups():
        (m,) = group.get_measurements()
        label = next(c.label for c in LESION_CLASSES if c.snomed.meaning == group.finding_type.meaning)
        assert m.value == pytest.approx(seg_ml[label], rel=0.01)
    assert objects["sr"].CompletionFlag == "COMPLETE"


@pytest.mark.skipif(not CQ500.is_dir(), reason="shared head-ct-dicom data absent")
def test_no_frame_of_reference_gives_sr_and_key_image_without_seg(analysed):
    from strokescan.app.integration.dicom_results import build_result_objects
    from strokescan.inference import Predictor

    _, _, ge_result = analysed
    datasets = [pydicom.dcmread(p) for p in sorted(CQ500.glob("*.dcm"))]
    assert not any("FrameOfReferenceUID" in ds for ds in datasets)
    scan = load_scan(CQ500)
    result = dataclasses.replace(ge_result, masks=[np.zeros(scan.pixels.shape[1:], np.uint8)] * scan.n_slices,
                                 quantification=Predictor.quantify(scan, [np.zeros(scan.pixels.shape[1:], np.uint8)]
                                                                   * scan.n_slices))
    built = build_result_objects(scan, datasets, result, uid_seed="cq500")
    assert built.seg is None and "FrameOfReferenceUID" in built.seg_problem
    assert [ds.Modality for ds in built.all()] == ["SR", "OT"]
    sr = hd.sr.Comprehensive3DSR.from_dataset(built.sr)
    assert sr.StudyInstanceUID == datasets[0].StudyInstanceUID
    # every 5th slice of the thin series: instance numbers are missing, so the report says PARTIAL
    assert built.sr.CompletionFlag == "PARTIAL" and "instance number" in built.sr.CompletionFlagDescription


def test_a_gap_says_partial_and_a_new_version_supersedes_the_old(analysed):
    from strokescan.app.integration.dicom_results import build_result_objects, missing_slices

    datasets, scan, result = analysed
    first = build_result_objects(scan, datasets, result, uid_seed="v1")
    assert first.missing_slices is None and first.sr.CompletionFlag == "COMPLETE"
    kept = [ds for k, ds in enumerate(datasets) if k != 5]  # slice 6 never arrived
    gappy = load_scan(kept)
    masks = [m for k, m in enumerate(result.masks) if k != 5]
    partial = build_result_objects(gappy, kept, dataclasses.replace(result, masks=masks, slices=[
        s for k, s in enumerate(result.slices) if k != 5]),
                                   uid_seed="v2", previous_versions=[first.sr])
    assert missing_slices(gappy, kept) is not None
    assert partial.sr.CompletionFlag == "PARTIAL"
    assert {partial.seg.SOPInstanceUID, partial.sr.SOPInstanceUID} & {first.seg.SOPInstanceUID,
                                                                      first.sr.SOPInstanceUID} == set()
    (item,) = partial.sr.PredecessorDocumentsSequence
    ref = item.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == first.sr.SOPInstanceUID
    assert "version 2" in partial.seg.SeriesDescription and "version 2" in partial.sr.SeriesDescription
    # only instance numbers say so when positions cannot: the last slice missing is not a gap
    assert missing_slices(load_scan(datasets[:-1]), datasets[:-1]) is None
