"""The seam every interface uses: the Predictor's public steps, one result schema, the batch runner, sharing
a Predictor between threads, and the refusal of what the models were not made for."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pydicom
import pytest

from strokescan.app.batch import BatchRunner
from strokescan.app.cli import main
from strokescan.config import SAMPLES_DIR
from strokescan.core.labels import HEMORRHAGE_SUBTYPES
from strokescan.errors import OutOfScopeError
from strokescan.inference import SCHEMA_VERSION, Predictor
from strokescan.inference.predictor import one_finding
from strokescan.io import load_scan

GE_ZIP = SAMPLES_DIR / "ge-hispeed-head-series.zip"
BLEED = SAMPLES_DIR / "phe-sich_0021_13.png"  # large parenchymal hematoma


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(segment=True)


@pytest.fixture(scope="module")
def series():
    return load_scan(GE_ZIP)


def test_the_public_steps_compose_to_analyse(predictor: Predictor, series) -> None:
    prepared = predictor.prepare(series)
    assert len(prepared.for_classifier) == len(prepared.for_segmenter) == series.n_slices
    assert prepared.classifier_input().shape == (series.n_slices, 3, 224, 224)
    assert len(set(prepared.rotation_deg)) == 1  # one angle for the whole volume
    probabilities = predictor.classify(prepared)
    masks = predictor.segment(prepared)
    result = predictor.analyse(series)
    assert [s.probability for s in result.slices] == pytest.approx(probabilities[:, 0].tolist(), abs=1e-6)
    assert [s.subtypes["intraventricular"] for s in result.slices] == pytest.approx(probabilities[:, 3].tolist(), abs=1e-6)
    coherent = one_finding([m.copy() for m in masks], [s.positive for s in result.slices], predictor.experimental_infarct)
    assert all(np.array_equal(a, b) for a, b in zip(coherent, result.masks, strict=True))
    volumes = predictor.quantify(series, coherent)
    assert result.quantification.classes["hemorrhage"].total == pytest.approx(volumes.classes["hemorrhage"].total)
    any_calibrator = predictor.calibrators[0]
    assert np.allclose(any_calibrator(predictor.logits(prepared)[:, 0]), probabilities[:, 0])


def test_one_predictor_shared_by_four_threads_gives_the_same_results(series) -> None:
    shared = Predictor()
    alone = [s.probability for s in shared.analyse(series).slices]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: shared.analyse(series), range(4)))
    for r in results:
        assert [s.probability for s in r.slices] == pytest.approx(alone, abs=1e-6)


def test_result_document_has_one_schema_and_the_json_lines_derive_from_it(predictor: Predictor, series) -> None:
    result = predictor.analyse(series)
    doc = json.loads(json.dumps(result.to_dict()))  # JSON-serialisable as it is
    assert doc["schema_version"] == SCHEMA_VERSION
    assert set(doc) == {"schema_version", "path", "n_slices", "out_of_scope", "model", "operating_point",
                        "thresholds", "scan", "slices", "volumes"}
    assert doc["out_of_scope"] is None and doc["n_slices"] == len(doc["slices"]) == 28
    brain = sorted(s["probability"] for s in doc["slices"] if s["brain_visible"])
    assert predictor.plan.scan_score == "top3_mean"  # the bundled model's rule, chosen on validation folds
    assert doc["scan"]["probability"] == pytest.approx(sum(brain[-3:]) / 3, abs=1e-3)
    assert doc["operating_point"] == "balanced" and set(doc["scan"]["subtypes"]) == set(HEMORRHAGE_SUBTYPES)
    assert [s["positive"] for s in doc["slices"]] == [
        s["brain_visible"] and s["probability"] >= doc["thresholds"]["slice"] for s in doc["slices"]]
    assert doc["volumes"]["hemorrhage"]["unit"] == "mL"
    lines = result.json_lines()
    assert [line["probability"] for line in lines[:-1]] == [s["probability"] for s in doc["slices"]]
    assert lines[-1]["scan"] is True and lines[-1]["volumes"] == doc["volumes"]
    assert lines[-1]["operating_point"] == "balanced" and lines[-1]["thresholds"] == doc["thresholds"]
    assert all(line["schema_version"] == SCHEMA_VERSION for line in lines)
    text = json.dumps(doc)
    for uid in (series.identifiers.study_instance_uid, series.identifiers.series_instance_uid):
        assert not uid or uid not in text  # DICOM UIDs never reach a result


def test_batch_runner_keeps_going_past_a_bad_input_and_writes_masks(predictor: Predictor, tmp_path: Path) -> None:
    runner = BatchRunner(predictor, masks_dir=tmp_path / "m")
    items = list(runner.run([str(tmp_path / "missing.png"), str(BLEED)]))
    assert [type(i.error).__name__ if i.error else None for i in items] == ["PathNotFoundError", None]
    assert items[1].mask_paths == [str(tmp_path / "m" / "phe-sich_0021_13.png")]
    assert Path(items[1].mask_paths[0]).is_file()
    assert items[0].json_lines() == [{"path": str(tmp_path / "missing.png"), "error": items[0].error.args[0],
                                      "error_type": "PathNotFoundError"}]
    with pytest.raises(ValueError):
        BatchRunner(Predictor(), masks_dir=tmp_path)  # masks need a segmenter


def test_an_mr_slice_is_refused_unless_forced_and_no_identifier_leaks(mr_dir: Path, capsys, caplog) -> None:
    mr = mr_dir / "1.dcm"
    if not mr.is_file():
        pytest.skip("MR files missing")
    ds = pydicom.dcmread(mr)
    secrets = [str(v) for v in (ds.get("PatientName"), ds.get("PatientID"), ds.get("StudyInstanceUID"),
                                ds.get("SeriesInstanceUID"), ds.get("SOPInstanceUID")) if v]
    assert secrets, "the MR test file should carry identifying tags"
    with pytest.raises(OutOfScopeError, match="MR"):
        Predictor().analyse(load_scan(mr))
    assert main(["-v", "predict", str(mr), "--json"]) == 2
    captured = capsys.readouterr()
    line = json.loads(captured.out)
    assert line["error_type"] == "OutOfScopeError" and "MR" in line["error"] and "probability" not in line
    assert main(["-v", "predict", str(mr), "--json", "--force"]) == 0
    forced = capsys.readouterr()
    result = json.loads(forced.out.splitlines()[0])
    assert "MR" in result["out_of_scope"] and 0.0 <= result["probability"] <= 1.0
    everything = captured.out + captured.err + forced.out + forced.err + caplog.text
    for value in secrets:
        assert value not in everything
    assert main(["predict", str(mr)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "MR" in err[0] and "Traceback" not in err[0]


def test_slices_without_brain_are_never_flagged_nor_scored(tmp_path: Path) -> None:
    """Thresholds of 0 flag every slice that shows brain; an air-only slice stays unflagged and out of the
    scan score, at either operating point."""
    from conftest import save_untrained_classifier
    from strokescan.io.scan import Scan

    folder = save_untrained_classifier(tmp_path / "model", size=64)
    plan = json.loads((folder / "classifier.json").read_text())
    for point in plan["operating_points"].values():
        point["slice_threshold"] = point["scan_threshold"] = 0.0
    (folder / "classifier.json").write_text(json.dumps(plan))
    head = load_scan(BLEED)
    air = np.zeros_like(head.pixels[0])
    scan = Scan(pixels=np.stack([head.pixels[0], air]), is_hu=head.is_hu, modality="CT", source_format="image",
                source_path=Path("two.png"), slice_sources=["head", "air"])
    for point in ("balanced", "sensitive"):
        result = Predictor(folder, operating_point=point).analyse(scan)
        assert [s.brain_visible for s in result.slices] == [True, False]
        assert [s.positive for s in result.slices] == [True, False]
        assert result.probability == pytest.approx(result.slices[0].probability, abs=1e-6)
        assert result.to_dict()["operating_point"] == point


def test_an_unknown_operating_point_is_a_typed_error(untrained_classifier: Path) -> None:
    from strokescan.errors import ModelError

    with pytest.raises(ModelError, match="operating point"):
        Predictor(untrained_classifier, operating_point="reckless")


def _gated_segmenter(folder: Path, threshold: float, detector_sha256: str) -> Path:
    """A copy of the bundled segmenter whose plan gates clot by the detector at ``threshold``."""
    import shutil

    from strokescan.inference.segmenter import DEFAULT_SEGMENTER_DIR

    shutil.copytree(DEFAULT_SEGMENTER_DIR, folder)
    plan = json.loads((folder / "segmenter.json").read_text())
    plan.update(min_slice_probability=threshold, gate_detector_sha256=detector_sha256)
    (folder / "segmenter.json").write_text(json.dumps(plan))
    return folder


def test_the_detector_gate_applies_with_the_detector_it_was_set_for_only(predictor: Predictor, tmp_path: Path,
                                                                         monkeypatch) -> None:
    from strokescan.core.labels import HEMORRHAGE
    from strokescan.inference import predictor as predictor_module

    scan = load_scan(BLEED)
    p = float(predictor.analyse(scan).slices[0].probability)
    assert (predictor.analyse(scan).masks[0] == HEMORRHAGE).any()
    mine = predictor.plan.weights_sha256
    above = Predictor(segmenter_dir=_gated_segmenter(tmp_path / "above", p + 0.01, mine)).analyse(scan)
    assert not (above.masks[0] == HEMORRHAGE).any()  # its detector says less than the gate: no clot
    assert above.model["segmenter_clot_decision"].endswith(f"detector gate {p + 0.01:g}")
    below = Predictor(segmenter_dir=_gated_segmenter(tmp_path / "below", p - 0.01, mine)).analyse(scan)
    assert np.array_equal(below.masks[0], predictor.analyse(scan).masks[0])
    warnings: list[str] = []  # the CLI tests reconfigure logging, so read the warning where it is made
    monkeypatch.setattr(predictor_module.log, "warning", lambda msg, *args: warnings.append(msg % args))
    other = Predictor(segmenter_dir=_gated_segmenter(tmp_path / "other", p + 0.01, "0" * 64)).analyse(scan)
    assert (other.masks[0] == HEMORRHAGE).any() and any("another detector" in w for w in warnings)
    assert other.model["segmenter_clot_decision"].endswith("(off: other detector)")
