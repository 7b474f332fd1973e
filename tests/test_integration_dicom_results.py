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
