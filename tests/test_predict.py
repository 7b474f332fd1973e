"""Predictor and `strokescan predict`: JSON lines, scan lines, errors per input, the bundled model."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from strokescan.cli import main
from strokescan.config import SAMPLES_DIR
from strokescan.io import load_scan
from strokescan.models.classifier import ClassifierPlan, SliceClassifier, save_classifier
from strokescan.prediction import DEFAULT_CLASSIFIER_DIR, Predictor
from strokescan.preprocessing.pipeline import SlicePlan

GE_ZIP = SAMPLES_DIR / "ge-hispeed-head-series.zip"
BLEED = SAMPLES_DIR / "ctich_080_10.jpg"
NORMAL = SAMPLES_DIR / "ctich_100_20.jpg"
bundled = pytest.mark.skipif(not (DEFAULT_CLASSIFIER_DIR / "classifier.pt").exists(), reason="no bundled model yet")


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """An untrained classifier saved the real way (predictions meaningless, format and plumbing real)."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model")
    plan = ClassifierPlan(
        slice_plan=SlicePlan(size=96, correct_rotation=False),
        calibration={"method": "platt", "a": 1.0, "b": 0.0},
        slice_threshold=0.5, scan_threshold=0.5, threshold_rule="test",
    )
    save_classifier(SliceClassifier(pretrained=False), plan, folder)
    return folder


def _json_lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def test_json_lines_for_a_2d_image_and_a_series(tiny_model_dir, capsys):
    rc = main(["predict", str(BLEED), str(GE_ZIP), "--json", "--model", str(tiny_model_dir)])
    assert rc == 0
    lines = _json_lines(capsys)
    image = [x for x in lines if x["path"] == str(BLEED)]
    assert len(image) == 1 and image[0]["slice_index"] is None
    assert 0.0 <= image[0]["probability"] <= 1.0 and isinstance(image[0]["positive"], bool)
    series = [x for x in lines if x["path"] == str(GE_ZIP)]
    slices, scan = [x for x in series if not x.get("scan")], [x for x in series if x.get("scan")]
    assert [x["slice_index"] for x in slices] == list(range(28))
    assert len(scan) == 1 and scan[0]["probability"] == pytest.approx(max(x["probability"] for x in slices), abs=1e-4)
    assert scan[0]["positive"] == (scan[0]["probability"] >= 0.5)


def test_bad_inputs_get_an_error_line_and_the_others_are_still_analysed(tiny_model_dir, tmp_path, capsys):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    rc = main(["predict", str(empty), str(BLEED), str(text), str(tmp_path / "missing.dcm"), "--json",
               "--model", str(tiny_model_dir)])
    assert rc == 2
    lines = _json_lines(capsys)
    errors = {Path(x["path"]).name: x["error_type"] for x in lines if "error" in x}
    assert errors == {"empty.png": "EmptyInputError", "notes.txt": "UnsupportedFormatError",
                      "missing.dcm": "PathNotFoundError"}
    assert [x["path"] for x in lines if "probability" in x] == [str(BLEED)]


def test_table_output_and_a_missing_model_is_a_one_line_error(tiny_model_dir, tmp_path, capsys):
    assert main(["predict", str(NORMAL), "--model", str(tiny_model_dir)]) == 0
    out = capsys.readouterr().out
    assert str(NORMAL) in out and "p=" in out
    assert main(["predict", str(NORMAL), "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no classifier here" in err[0]


def test_size_limit_from_the_environment_is_refused_with_exit_2(tmp_path):
    env = {"STROKESCAN_MAX_FILE_MB": "0", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "strokescan.cli", "inspect", str(BLEED)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "limit" in proc.stderr and "Traceback" not in proc.stderr


@bundled
def test_bundled_model_ranks_a_hemorrhage_slice_above_a_normal_one():
    predictor = Predictor()
    bleed = predictor.analyse(load_scan(BLEED)).probability
    normal = predictor.analyse(load_scan(NORMAL)).probability
    assert bleed > normal
    assert bleed >= predictor.plan.slice_threshold > normal
