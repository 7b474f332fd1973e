"""Explanations where people see them (issue 17): ``Predictor.analyse(explain=True)`` and the result schema 1.2,
``predict --heatmaps-dir`` (files, JSON lines, a bad folder) and the web viewer's heat map overlays. The bundled
detector on the bundled samples: real maps, no training."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from strokescan.app.cli import main
from strokescan.app.web.commands import ensure_admin
from strokescan.app.web.jobs import JobWorker
from strokescan.app.web.server import WebSettings, create_app
from strokescan.config import SAMPLES_DIR
from strokescan.inference import SCHEMA_VERSION, Predictor
from strokescan.inference.explanations import CHOSEN_LAYER
from strokescan.io import load_scan

BLEED = SAMPLES_DIR / "phe-sich_0004_18.png"  # parenchymal hematoma, flagged by the bundled detector
GE_ZIP = SAMPLES_DIR / "ge-hispeed-head-series.zip"
PASSWORD = "explanation-test-password"
TOGGLE_LABEL = "where the detector looked (not a lesion outline)"


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor()


def test_an_explained_flagged_slice_carries_its_map_in_schema_1_2(predictor: Predictor) -> None:
    scan = load_scan(BLEED)
    result = predictor.analyse(scan, explain=True)
    doc = json.loads(json.dumps(result.to_dict()))
    assert SCHEMA_VERSION == doc["schema_version"] == "1.4"
    (s,) = doc["slices"]
    assert s["positive"]
    e = s["explanation"]
    assert set(e) == {"method", "target", "layer", "peak", "score"}
    assert (e["method"], e["target"], e["layer"]) == ("gradcam", "any", CHOSEN_LAYER) == ("gradcam", "any", "block13")
    rows, cols = scan.pixels.shape[1:]
    r, c = e["peak"]
    assert 0 <= r < rows and 0 <= c < cols and np.isfinite(e["score"])
    (hm,) = result.heatmaps
    assert hm.heat.shape == (rows, cols) and hm.heat[r, c] == pytest.approx(hm.heat.max()) == pytest.approx(1.0)
    (line,) = result.json_lines()
    assert line["explanation"] == e


def test_without_explain_there_is_no_explanation(predictor: Predictor) -> None:
    result = predictor.analyse_path(BLEED)
    assert result.heatmaps is None and all(s.explanation is None for s in result.slices)
    assert "explanation" not in result.to_dict()["slices"][0] and "explanation" not in result.json_lines()[0]


def test_a_series_explains_its_flagged_slices_or_else_the_most_suspicious(predictor: Predictor, monkeypatch) -> None:
    scan = load_scan(GE_ZIP)
    result = predictor.analyse(scan, explain=True)
    flagged = [s.slice_index for s in result.slices if s.positive]
    assert flagged and [s.slice_index for s in result.slices if s.explanation] == flagged
    assert [h.slice_index for h in result.heatmaps] == flagged
    monkeypatch.setattr(predictor.plan, "threshold", lambda level, point: 1.01)  # nothing can be flagged
    result = predictor.analyse(scan, explain=True)
    assert not any(s.positive for s in result.slices)
    assert [s.slice_index for s in result.slices if s.explanation] == [result.most_suspicious_slice]


def test_predict_heatmaps_dir_writes_one_png_per_explained_slice(tmp_path: Path, capsys) -> None:
    out = tmp_path / "heat"
    assert main(["predict", str(BLEED), "--json", "--heatmaps-dir", str(out)]) == 0
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert line["schema_version"] == "1.4" and line["explanation"]["layer"] == "block13"
    (png,) = out.iterdir()
    assert png.name == "phe-sich_0004_18.png"
    image = np.asarray(Image.open(png))
    assert image.shape == (*load_scan(BLEED).pixels.shape[1:], 3)
    r, c = line["explanation"]["peak"]
    assert image[r, c].tolist() == [255, 255, 255]  # the cross at the peak


def test_predict_refuses_a_file_as_heatmaps_dir_in_one_line(tmp_path: Path, capsys) -> None:
    not_a_folder = tmp_path / "taken.png"
    not_a_folder.write_bytes(b"x")
    assert main(["predict", str(BLEED), "--heatmaps-dir", str(not_a_folder)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("strokescan: error: cannot write") and "Traceback" not in captured.err
    assert main(["predict", str(BLEED), "--json", "--heatmaps-dir", str(not_a_folder)]) == 2
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert line["error_type"] == "OutputError" and "cannot write" in line["error"]


def _csrf(client, url: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(url).text).group(1)


def test_the_viewer_serves_heat_maps_of_explained_slices_only(tmp_path: Path, predictor: Predictor,
                                                                monkeypatch) -> None:
    monkeypatch.setenv("STROKESCAN_ADMIN_PASSWORD", PASSWORD)
    app = create_app(WebSettings(instance_dir=tmp_path / "instance", predictor_factory=lambda: predictor,
                                 show_identifiers=False))
    worker: JobWorker = app.extensions["strokescan"]["worker"]
    try:
        ensure_admin(app)
        client = app.test_client()
        client.post("/login", data={"username": "admin", "password": PASSWORD, "csrf_token": _csrf(client, "/login")})
        r = client.post("/upload", data={"files": [(io.BytesIO(GE_ZIP.read_bytes()), "series.zip")],
                                         "csrf_token": _csrf(client, "/upload")}, content_type="multipart/form-data")
        assert r.status_code == 302
        study_id = int(r.headers["Location"].rsplit("/", 1)[-1])
        assert worker.wait_until_idle(300), "the job worker did not finish in time"
        page = client.get(f"/studies/{study_id}").text
        assert "done" in page
        slices = json.loads(re.search(r'data-slices="([^"]*)"', page).group(1).join("[]"))
        assert slices and len(slices) < 28
        assert TOGGLE_LABEL in page and re.search(r'<input type="checkbox" id="heatmap-toggle">', page)
        for i in range(28):
            png = client.get(f"/studies/{study_id}/overlays/heatmap/{i}.png")
            if i in slices:
                assert png.status_code == 200 and "private" in png.headers["Cache-Control"]
                rgba = np.asarray(Image.open(io.BytesIO(png.data)))
                assert rgba.shape == (512, 512, 4) and rgba[..., 3].min() == 0 < rgba[..., 3].max()
            else:
                assert png.status_code == 404
    finally:
        worker.stop()
