"""Predictor and `strokescan predict`: JSON lines, scan lines, errors per input, the bundled model."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import save_hemorrhage_everywhere_segmenter
from strokescan.app.cli import main
from strokescan.config import SAMPLES_DIR
from strokescan.io import load_scan
from strokescan.inference.predictor import DEFAULT_CLASSIFIER_DIR, Predictor

GE_ZIP = SAMPLES_DIR / "ge-hispeed-head-series.zip"
BLEED = SAMPLES_DIR / "phe-sich_0021_13.png"  # large parenchymal hematoma (phe-sich box + edema rim)
NORMAL = SAMPLES_DIR / "phe-sich_0011_18.png"  # lesion-free slice at the lateral ventricles (no mask, no box)
bundled = pytest.mark.skipif(not (DEFAULT_CLASSIFIER_DIR / "classifier.pt").exists(), reason="no bundled model yet")


@pytest.fixture(scope="module")
def tiny_model_dir(untrained_classifier) -> Path:
    return untrained_classifier


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
    proc = subprocess.run([sys.executable, "-m", "strokescan.app.cli", "inspect", str(BLEED)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "limit" in proc.stderr and "Traceback" not in proc.stderr


@bundled
def test_bundled_model_ranks_a_hemorrhage_slice_above_a_normal_one():
    """A wiring check, not an evaluation: the bundled detector trained on PHE-SICH, these slices included."""
    predictor = Predictor()
    bleed = predictor.analyse(load_scan(BLEED))
    normal = predictor.analyse(load_scan(NORMAL))
    assert bleed.probability > normal.probability
    assert bleed.probability >= predictor.plan.threshold("slice") > normal.probability
    assert bleed.positive and not normal.positive and bleed.operating_point == "balanced"


# --- segmentation through `predict --masks-dir / --overlays-dir` ---------------------------------------------


@pytest.fixture(scope="module")
def bleeding_segmenter_dir(tmp_path_factory) -> Path:
    """A tiny U-Net saved the real way whose last layer says "hemorrhage" everywhere: after post-processing
    its masks are the head, so sizes, units and file names can be checked against the written PNGs."""
    return save_hemorrhage_everywhere_segmenter(tmp_path_factory.mktemp("segmenter"))


def test_masks_overlays_and_sizes_for_an_image_and_a_series(tiny_model_dir, bleeding_segmenter_dir, tmp_path, capsys):
    from PIL import Image

    masks_dir, overlays_dir = tmp_path / "masks", tmp_path / "overlays"
    rc = main(["predict", str(BLEED), str(GE_ZIP), "--json", "--model", str(tiny_model_dir),
               "--segmenter", str(bleeding_segmenter_dir), "--masks-dir", str(masks_dir),
               "--overlays-dir", str(overlays_dir)])
    assert rc == 0
    lines = _json_lines(capsys)

    image = next(x for x in lines if x["path"] == str(BLEED))
    assert image["mask"] == str(masks_dir / "phe-sich_0021_13.png")
    mask = np.asarray(Image.open(image["mask"]))
    assert mask.shape == load_scan(BLEED).pixels.shape[1:] and set(np.unique(mask)) == {0, 1}
    bleed = image["lesions"]["hemorrhage"]
    assert bleed["unit"] == "px" and bleed["pixels"] == int((mask == 1).sum()) > 1000
    assert image["lesions"]["edema"]["pixels"] == 0

    scan = load_scan(GE_ZIP)
    slices = [x for x in lines if x["path"] == str(GE_ZIP) and not x.get("scan")]
    assert [Path(x["mask"]).name for x in slices] == [f"ge-hispeed-head-series_{i}.png" for i in range(28)]
    pixels = [int((np.asarray(Image.open(x["mask"])) == 1).sum()) for x in slices]
    assert [x["lesions"]["hemorrhage"]["pixels"] for x in slices] == pixels
    px_area = float(scan.pixel_spacing_mm[0]) * float(scan.pixel_spacing_mm[1])
    assert slices[5]["lesions"]["hemorrhage"]["unit"] == "mm2"
    assert slices[5]["lesions"]["hemorrhage"]["area"] == pytest.approx(pixels[5] * px_area, rel=1e-3)
    volumes = next(x for x in lines if x["path"] == str(GE_ZIP) and x.get("scan"))["volumes"]
    assert len(set(scan.slice_thicknesses_mm)) == 2  # 4 mm and 7 mm slices: each counts for its own thickness
    assert volumes["hemorrhage"]["unit"] == "mL"
    assert volumes["hemorrhage"]["volume"] == pytest.approx(
        sum(n * t for n, t in zip(pixels, scan.slice_thicknesses_mm, strict=True)) * px_area / 1000, rel=1e-3)
    assert volumes["infarct"]["volume"] == 0 and "abc2_ml" in volumes["hemorrhage"]["largest"]

    assert sorted(p.name for p in overlays_dir.iterdir()) == sorted(
        ["phe-sich_0021_13.png"] + [f"ge-hispeed-head-series_{i}.png" for i in range(28)])
    overlay = np.asarray(Image.open(overlays_dir / "phe-sich_0021_13.png"))
    assert overlay.shape == (*mask.shape, 3) and (overlay[..., 0] > overlay[..., 2]).any()  # red where it bleeds


def test_two_inputs_with_one_name_do_not_overwrite_each_other(tmp_path):
    from strokescan.app.batch import output_stem

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        (tmp_path / folder / "head.nii.gz").write_bytes(b"x")
    taken: set[str] = set()
    assert output_stem(tmp_path / "a" / "head.nii.gz", taken) == "head"
    assert output_stem(tmp_path / "b" / "head.nii.gz", taken) == "head-2"
    assert output_stem(tmp_path / "a", taken) == "a"


def test_segmentation_refusals_are_one_line_errors(tiny_model_dir, bleeding_segmenter_dir, tmp_path, capsys):
    assert main(["predict", str(NORMAL), "--model", str(tiny_model_dir), "--segmenter", str(tmp_path),
                 "--masks-dir", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no segmenter here" in err[0]
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    rc = main(["predict", str(NORMAL), "--json", "--model", str(tiny_model_dir), "--segmenter",
               str(bleeding_segmenter_dir), "--masks-dir", str(blocked)])
    assert rc == 2
    lines = _json_lines(capsys)
    assert len(lines) == 1 and lines[0]["error_type"] == "OutputError" and "cannot write" in lines[0]["error"]


@bundled
def test_demo_analyses_every_bundled_sample(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # overlays (when a segmenter is bundled) land here, not in the repo
    assert main(["demo", "--json"]) == 0
    lines = _json_lines(capsys)
    paths = {Path(x["path"]).name for x in lines if "probability" in x}
    assert paths == {p.name for p in SAMPLES_DIR.iterdir() if p.suffix in {".jpg", ".png", ".zip"}}
    scan = next(x for x in lines if x.get("scan"))
    assert scan["n_slices"] == 28 and 0.0 <= scan["probability"] <= 1.0
