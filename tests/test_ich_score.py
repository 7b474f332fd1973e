"""The ICH score: Hemphill 2001's points, where each value came from, incomplete scores, bad input."""

import json

import numpy as np
import pytest
from strokescan.app.cli import main
from strokescan.config import SAMPLES_DIR
from strokescan.errors import InputError
from strokescan.inference.ich_score import gcs_points, ich_score, ich_score_for
from strokescan.inference.quantification import quantify_series
from strokescan.inference.results import ScanResult


@pytest.mark.parametrize("gcs, points", [(3, 2), (4, 2), (5, 1), (12, 1), (13, 0), (15, 0)])
def test_gcs_points_follow_hemphill(gcs, points):
    assert gcs_points(gcs) == points


def test_worked_example_and_the_cuts():
    # GCS 9 (1) + 35 mL (1) + IVH (1) + supratentorial (0) + 82 years (1) = 4
    s = ich_score(gcs=9, age=82, volume_ml=35, ivh=True, infratentorial=False)
    assert s.total == 4 and s.to_dict()["mortality_30d_percent_in_derivation_cohort"] == 97
    assert ich_score(gcs=15, age=79, volume_ml=29.9, ivh=False, infratentorial=False).total == 0
    assert ich_score(gcs=3, age=80, volume_ml=30.0, ivh=True, infratentorial=True).total == 6


def test_missing_components_leave_a_range_not_a_total():
    s = ich_score(gcs=9, age=82, ivh=True)
    d = s.to_dict()
    assert s.total is None and d["missing"] == ["volume_ml", "infratentorial"] and d["possible"] == [3, 5]
    assert d["mortality_30d_percent_in_derivation_cohort"] is None
    assert ich_score().possible == (0, 6)


@pytest.mark.parametrize("kwargs, words", [({"gcs": 2}, "3 to 15"), ({"gcs": 16}, "3 to 15"), ({"age": -1}, "age"),
                                           ({"volume_ml": -3.0}, "0 to 10000"), ({"volume_ml": float("nan")}, "0 to 10000")])
def test_impossible_values_are_refused(kwargs, words):
    with pytest.raises(InputError, match=words):
        ich_score(**kwargs)


def _result(clot_px: int, positive: bool, spacing=(0.5, 0.5)) -> ScanResult:
    masks = [np.zeros((128, 128), np.uint8) for _ in range(3)]
    masks[1].flat[:clot_px] = 1
    return ScanResult(path="x", n_slices=3, slices=[], probability=0.9 if positive else 0.1, positive=positive,
                      slice_threshold=0.5, scan_threshold=0.5, quantification=quantify_series(masks, spacing, 5.0))


def test_the_measured_volume_is_strokescans_and_says_so():
    r = _result(16000, positive=True)  # 16000 px x 0.25 mm2 x 5 mm = 20 mL
    s = ich_score_for(r, gcs=14, age=60, ivh=False, infratentorial=False)
    assert s.to_dict()["components"]["volume_ml"] == {"value": 20.0, "points": 0, "max_points": 1, "source": "strokescan"}
    assert s.total == 0 and not s.notes
    by_hand = ich_score_for(r, gcs=14, age=60, ivh=False, infratentorial=False, volume_ml=45)
    assert by_hand.total == 1 and by_hand.components[1].source == "clinician"


def test_a_volume_the_detector_does_not_back_is_flagged_for_checking():
    assert "did not flag" in ich_score_for(_result(400, positive=False)).notes[0]
    assert "outlined no clot" in ich_score_for(_result(0, positive=True)).notes[0]
    no_spacing = ScanResult(path="x", n_slices=1, slices=[], probability=0.9, positive=True,
                            slice_threshold=0.5, scan_threshold=0.5, quantification=quantify_series([np.ones((8, 8), np.uint8)]))
    s = ich_score_for(no_spacing, gcs=9)
    assert s.components[1].points is None and "single 2-D slice" in s.notes[0]


def test_cli_prints_the_score_and_refuses_bad_answers(capsys):
    assert main(["ich-score", "--gcs", "9", "--age", "82", "--ivh", "yes", "--infratentorial", "no",
                 "--volume-ml", "35", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["total"] == 4 and doc["components"]["intraventricular"]["source"] == "clinician"
    assert main(["ich-score", "--gcs", "2"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0  # one line
    with pytest.raises(SystemExit) as exc:
        main(["ich-score", "--ivh", "maybe"])
    assert exc.value.code == 2


def test_cli_measures_the_clot_on_a_real_series(capsys):
    series = SAMPLES_DIR / "ge-hispeed-head-series.zip"
    assert main(["ich-score", str(series), "--gcs", "14", "--age", "60", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    volume = doc["components"]["volume_ml"]
    assert volume["source"] == "strokescan" and volume["value"] >= 0
    assert doc["total"] is None and doc["missing"] == ["intraventricular", "infratentorial"]


def test_the_viewer_computes_the_score_from_the_form_and_stores_nothing(tmp_path, monkeypatch):
    import io
    import re

    from strokescan.app.web.commands import ensure_admin
    from strokescan.app.web.server import WebSettings, create_app
    from strokescan.inference import Predictor

    def csrf(url: str) -> str:
        return re.search(r'name="csrf_token" value="([^"]+)"', client.get(url).text).group(1)

    monkeypatch.setenv("STROKESCAN_ADMIN_PASSWORD", "ich-score-test-password")
    predictor = Predictor(segment=True)
    app = create_app(WebSettings(instance_dir=tmp_path / "instance", predictor_factory=lambda: predictor,
                                 show_identifiers=False))
    worker = app.extensions["strokescan"]["worker"]
    try:
        ensure_admin(app)
        client = app.test_client()
        client.post("/login", data={"username": "admin", "password": "ich-score-test-password", "csrf_token": csrf("/login")})
        series = (SAMPLES_DIR / "ge-hispeed-head-series.zip").read_bytes()
        r = client.post("/upload", data={"files": [(io.BytesIO(series), "series.zip")], "csrf_token": csrf("/upload")},
                        content_type="multipart/form-data")
        study_id = int(r.headers["Location"].rsplit("/", 1)[-1])
        assert worker.wait_until_idle(300), "the job worker did not finish in time"
        url = f"/studies/{study_id}/ich-score"
        form = {"gcs": "9", "age": "82", "ivh": "yes", "infratentorial": "no", "volume_ml": "", "csrf_token": csrf(f"/studies/{study_id}")}
        page = client.post(url, data=form)
        assert page.status_code == 200
        assert re.search(r"ICH score 3 / 6", page.text)  # GCS 9 (1) + IVH (1) + age 82 (1); the GE clot is < 30 mL
        assert re.search(r"<td>volume_ml</td><td>[0-9.]+</td>\s*<td>0 / 1</td><td>strokescan</td>", page.text)
        assert client.post(url, data={**form, "volume_ml": "31"}).text.count("ICH score 4 / 6") == 1
        bad = client.post(url, data={**form, "gcs": "2"})
        assert bad.status_code == 400 and "3 to 15" in bad.text
        assert client.post(url, data={**form, "ivh": "maybe"}).status_code == 400
        assert client.post(url, data={k: v for k, v in form.items() if k != "csrf_token"}).status_code == 400
        assert "ICH score 3 / 6" not in client.get(f"/studies/{study_id}").text  # computed for the page only
    finally:
        worker.stop()
