"""FHIR out: a DiagnosticReport with Observations, written to a folder and POSTed to a local test server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from strokescan.inference import ScanResult
from strokescan.inference.quantification import quantify_series


def make_result(positive: bool = True) -> ScanResult:
    masks = [np.zeros((32, 32), np.uint8) for _ in range(4)]
    masks[1][10:20, 10:20] = 1
    masks[2][5:8, 5:8] = 3
    return ScanResult(path="x", n_slices=4, slices=[], probability=0.8731 if positive else 0.1, positive=positive,
                      slice_threshold=0.5, scan_threshold=0.5, operating_point="sensitive",
                      model={"strokescan": "9.9.9", "classifier_sha256": "abc123"}, masks=masks,
                      quantification=quantify_series(masks, (0.5, 0.5), 5.0))


class Recorder(BaseHTTPRequestHandler):
    posts: list = []
    status = 200

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).posts.append((self.path, dict(self.headers), body))
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/fhir+json")
        self.end_headers()
        self.wfile.write(b'{"resourceType":"Bundle","type":"transaction-response"}')

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    Recorder.posts, Recorder.status = [], 200
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/fhir", Recorder
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def resources(doc: dict, kind: str) -> list[dict]:
    return [e["resource"] for e in doc["entry"] if e["resource"]["resourceType"] == kind]


def test_bundle_holds_report_observations_and_no_identifiers():
    from strokescan.app.integration.fhir import bundle_json, build_bundle

    doc = json.loads(bundle_json(build_bundle(make_result())))
    assert doc["type"] == "transaction"
    (report,) = resources(doc, "DiagnosticReport")
    observations = resources(doc, "Observation")
    urls = {e["fullUrl"] for e in doc["entry"]}
    assert all(r["reference"] in urls for r in report["result"]) and len(report["result"]) == len(observations)
    assert report["subject"] == {"reference": "Patient/unknown"} and "identifier" not in report
    assert report["code"]["coding"][0]["code"] == "24725-4" and "not a diagnosis" in report["conclusion"]
    prob = next(o for o in observations if o["code"]["coding"][0]["code"] == "hemorrhage-probability")
    assert prob["valueQuantity"]["value"] == pytest.approx(0.8731)
    assert prob["interpretation"][0]["coding"][0]["code"] == "POS"
    assert prob["component"][0]["valueString"] == "sensitive"
    vols = {o["component"][0]["valueCodeableConcept"]["coding"][0]["display"]: o["valueQuantity"]
            for o in observations if o["code"]["coding"][0]["code"] == "118565006"}
    assert vols["Hemorrhage"] == {"value": pytest.approx(100 * 0.25 * 5 / 1000), "unit": "mL",
                                  "system": "http://unitsofmeasure.org", "code": "mL"}
    assert vols["Edema"]["value"] == 0 and vols["Infarct"]["value"] == pytest.approx(9 * 0.25 * 5 / 1000, abs=1e-3)
    (device,) = resources(doc, "Device")
    assert device["version"][0]["value"] == "9.9.9"


def test_study_uid_only_when_asked():
    from strokescan.app.integration.fhir import bundle_json, build_bundle

    doc = json.loads(bundle_json(build_bundle(make_result(False), "Patient/42", study_instance_uid="1.2.3")))
    (report,) = resources(doc, "DiagnosticReport")
    assert report["identifier"][0]["value"] == "urn:oid:1.2.3" and report["subject"]["reference"] == "Patient/42"
    assert "not flagged" in report["conclusion"]


def test_deliver_writes_and_posts(server, tmp_path: Path):
    from strokescan.app.integration.fhir import FhirSettings, deliver

    url, recorder = server
    settings = FhirSettings(folder=tmp_path / "fhir", url=url, headers=(("Authorization", "Bearer t"),))
    deliver(make_result(), settings, study_instance_uid="1.2.3")
    (written,) = (tmp_path / "fhir").glob("report-*.json")
    (path, headers, body), = recorder.posts
    assert path == "/fhir" and headers["Content-Type"] == "application/fhir+json"
    assert headers["Authorization"] == "Bearer t"
    assert json.loads(body) == json.loads(written.read_bytes())
    assert "1.2.3" not in body.decode()  # include_study_uid is off by default


def test_post_failure_is_one_line_without_data(server):
    from strokescan.app.integration.fhir import FhirPostError, build_bundle, post_bundle

    url, recorder = server
    recorder.status = 422
    with pytest.raises(FhirPostError, match="HTTP 422"):
        post_bundle(build_bundle(make_result()), url)
    with pytest.raises(FhirPostError, match="unreachable"):
        post_bundle(build_bundle(make_result()), "http://127.0.0.1:9/fhir", timeout_s=2)


def test_identifiers_only_when_enabled_subject_by_patient_id_and_bearer_token(server, tmp_path: Path):  # noqa: F811
    """Off by default: placeholder subject, no study UID. Enabled: the subject by PatientID in the site's system,
    the ImagingStudy by StudyInstanceUID; the bearer token reaches the server."""
    from strokescan.app.integration.fhir import FhirSettings, deliver

    url, recorder = server
    uid, patient = "1.2.826.0.1.3680043.9.4245.1", "QMNx85rKkkg"
    plain = deliver(make_result(), FhirSettings(url=url), study_instance_uid=uid, patient_id=patient)
    text = plain.model_dump_json()
    assert uid not in text and patient not in text
    settings = FhirSettings(url=url, include_study_uid=True, patient_identifier_system="urn:oid:1.2.3.4",
                            headers=(("Authorization", "Bearer s3cret"),))
    deliver(make_result(), settings, study_instance_uid=uid, patient_id=patient)
    _, headers, body = recorder.posts[-1]
    assert headers["Authorization"] == "Bearer s3cret"
    (report,) = resources(json.loads(body), "DiagnosticReport")
    assert report["subject"] == {"identifier": {"system": "urn:oid:1.2.3.4", "value": patient}}
    assert report["imagingStudy"] == [{"type": "ImagingStudy", "identifier": {
        "system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}}]


def test_listen_reads_a_toml_config_and_flags_win(tmp_path: Path, monkeypatch):
    import argparse

    from strokescan.app.integration.listener import add_listen_arguments, settings_from_args

    monkeypatch.setenv("STROKESCAN_FHIR_TOKEN", "tok")
    config = tmp_path / "listen.toml"
    config.write_text('[listen]\nport = 11999\nallow = ["CT1", "CT2"]\nquiet-seconds = 7\n'
                      'dest = "PACS@127.0.0.1:4242"\nfhir-dir = "fhir"\nmax-attempts = 4\n')
    parser = argparse.ArgumentParser()
    add_listen_arguments(parser)
    args = parser.parse_args(["--config", str(config), "--quiet-seconds", "2", "--instance-dir", str(tmp_path)])
    settings = settings_from_args(args)
    assert (settings.port, settings.allowed_calling_aets, settings.quiet_seconds, settings.max_attempts) == (
        11999, ("CT1", "CT2"), 2.0, 4)
    assert settings.destination.port == 4242 and settings.fhir.headers == (("Authorization", "Bearer tok"),)
    config.write_text("colour = 'blue'\n")
    with pytest.raises(ValueError, match="unknown option"):
        settings_from_args(parser.parse_args(["--config", str(config), "--instance-dir", str(tmp_path)]))
