"""The DICOM listener in-process, with pynetdicom peers on 127.0.0.1: receive, record, queue, analyse, send once."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import threading
import time
from pathlib import Path

import pydicom
import pytest
from conftest import save_untrained_classifier, wait_for
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, StoragePresentationContexts, evt
from pynetdicom.sop_class import CTImageStorage, Verification
from sqlalchemy import delete, select
from test_integration_dicom_results import ge_datasets
from test_integration_fhir import resources, server  # noqa: F401 - server: the recording FHIR server fixture

from strokescan.app.web.db import InstanceStatus, ReceivedInstance, Study, StudyStatus


class Collector:
    """A tiny Storage SCP on 127.0.0.1 standing in for the PACS: keeps what it receives."""

    def __init__(self) -> None:
        self.received: list[pydicom.Dataset] = []
        ae = AE(ae_title="PACS")
        for cx in StoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        self.server = ae.start_server(("127.0.0.1", 0), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._store)])
        self.port = self.server.server_address[1]

    def _store(self, event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        self.received.append(ds)
        return 0x0000

    def stop(self) -> None:
        self.server.shutdown()


def send(port: int, datasets, calling: str = "SCANNER", aet: str = "STROKESCAN") -> list[int]:
    ae = AE(ae_title=calling)
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=aet)
    if not assoc.is_established:
        return []
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_untrained_classifier(tmp_path_factory.mktemp("clf"))


@pytest.fixture
def peers(tmp_path: Path, model: Path):
    from strokescan.app.integration.listener import Destination, Listener, ListenerSettings
    from strokescan.inference import Predictor

    collector = Collector()
    listeners = []

    def start(**overrides) -> Listener:
        """A listener on the test's inbox; ``overrides``: other ListenerSettings fields."""
        settings = ListenerSettings(**{
            "instance_dir": tmp_path / "instance", "database_url": f"sqlite:///{tmp_path / 'instance' / 'db.sqlite'}",
            "port": 0, "quiet_seconds": 1.0, "allowed_calling_aets": ("SCANNER", "OTHER"),
            "destination": Destination("127.0.0.1", collector.port, "PACS"),
            "predictor_factory": lambda: Predictor(model, segment=True), **overrides})
        listener = Listener(settings)
        listener.start()
        listeners.append(listener)
        return listener

    yield start, collector
    for listener in listeners:
        listener.stop()
    collector.stop()


def studies(listener) -> list[Study]:
    with listener.sessions() as session:
        return list(session.scalars(select(Study).order_by(Study.id)))


def instance_rows(listener) -> list[ReceivedInstance]:
    with listener.sessions() as session:
        return list(session.scalars(select(ReceivedInstance).order_by(ReceivedInstance.id)))


def new_series(datasets, n: int) -> list[pydicom.Dataset]:
    """Copies of the first ``n`` datasets as a new series (fresh series and instance UIDs)."""
    series, copies = generate_uid(), []
    for ds in datasets[:n]:
        c = copy.deepcopy(ds)
        c.SeriesInstanceUID, c.SOPInstanceUID = series, generate_uid()
        copies.append(c)
    return copies


def test_migrations_match_the_models(tmp_path: Path):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from strokescan.app.web.db import Base, make_engine, upgrade_database

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade_database(url)
    with make_engine(url).connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_series_in_results_out_once(peers, caplog):
    start, collector = peers
    caplog.set_level(logging.INFO)
    listener = start()
    datasets = ge_datasets()
    assert send(listener.port, datasets) == [0] * 28
    inbox = listener.inbox.series()
    assert len(inbox) == 1 and len(listener.inbox.instances(inbox[0])) == 28
    wait_for(lambda: (inbox[0] / "sent.json").exists(), 120, "the results to be sent")
    kinds = sorted(str(ds.Modality) for ds in collector.received)
    assert kinds == ["OT", "SEG", "SR"]
    assert {ds.StudyInstanceUID for ds in collector.received} == {datasets[0].StudyInstanceUID}
    (study,) = studies(listener)
    assert study.status == StudyStatus.DONE and study.kind == "dicom" and study.label == f"DICOM from SCANNER {study.id}"
    assert study.n_slices == 28
    # one row per instance, written before its success went back; hashes only, every slice analysed
    rows = instance_rows(listener)
    assert sorted(r.sop_instance_sha256 for r in rows) == sorted(
        hashlib.sha256(ds.SOPInstanceUID.encode()).hexdigest() for ds in datasets)
    root = listener.inbox.root
    for row in rows:
        stored = pydicom.dcmread(root / row.inbox_path, stop_before_pixels=True)
        assert row.series_key == inbox[0].name and row.inbox_path.startswith(f"{inbox[0].name}/instances/")
        assert row.sop_instance_sha256.startswith(Path(row.inbox_path).stem)
        assert row.calling_ae == "SCANNER" and row.sop_class_uid == CTImageStorage
        assert row.transfer_syntax_uid == stored.file_meta.TransferSyntaxUID
        assert row.n_bytes == (root / row.inbox_path).stat().st_size and row.received_at is not None
        assert (row.status, row.reason) == (InstanceStatus.ANALYSED, None)
    # a restart finds everything sent: nothing is queued or sent again; rows a crash left out are made again
    listener.stop()
    with listener.sessions.begin() as session:
        session.execute(delete(ReceivedInstance).where(ReceivedInstance.id.in_([r.id for r in rows[:3]])))
    again = start()
    again.sweep()
    time.sleep(1.5)
    assert len(collector.received) == 3 and len(studies(again)) == 1
    again_rows = instance_rows(again)
    assert len(again_rows) == 28 and {r.status for r in again_rows} == {InstanceStatus.ANALYSED}
    remade = {r.sop_instance_sha256: r for r in again_rows}
    for row in rows[:3]:
        new = remade[row.sop_instance_sha256]
        assert (new.inbox_path, new.n_bytes, new.transfer_syntax_uid, new.sop_class_uid, new.calling_ae) == (
            row.inbox_path, row.n_bytes, row.transfer_syntax_uid, row.sop_class_uid, row.calling_ae)
    # a resend keeps one row per instance
    assert send(again.port, datasets[:5]) == [0] * 5
    assert len(instance_rows(again)) == 28
    text = caplog.text
    for secret in ("REMOVED", "QMNx85rKkkg", datasets[0].StudyInstanceUID, datasets[0].SeriesInstanceUID):
        assert secret not in text
    with again.sessions() as session:
        dump = repr([[getattr(r, c.key) for c in ReceivedInstance.__table__.columns]
                     for r in session.scalars(select(ReceivedInstance))])
    for ds in datasets:
        assert ds.SOPInstanceUID not in dump and ds.StudyInstanceUID not in dump and "REMOVED" not in dump


def test_refusals(peers, tmp_path: Path, caplog, monkeypatch):
    from pynetdicom import _config

    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)  # send the file's bytes as they are
    start, _ = peers
    listener = start()
    assert send(listener.port, ge_datasets()[:1], calling="INTRUDER") == []  # association rejected
    bad = tmp_path / "bad.dcm"
    good = ge_datasets()[0]
    good.save_as(bad, enforce_file_format=True)
    raw = bad.read_bytes()
    meta_end = raw.index(b"\x08\x00\x05\x00")  # first dataset element after the file meta
    bad.write_bytes(raw[:meta_end] + b"\x08\x00\x18\x00ZZ\x04\x00" + b"1.23" + b"\x10\x00\x10\x00PN\x04\x00abcd")
    caplog.set_level(logging.WARNING)
    listener_log = logging.getLogger("strokescan.app.integration.listener")
    # a library's logging.config call earlier in the session can disable existing loggers; the refusals must log
    monkeypatch.setattr(listener_log, "disabled", False)
    monkeypatch.setattr(listener_log, "propagate", True)
    ae = AE(ae_title="SCANNER")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", listener.port, ae_title="STROKESCAN")
    status = assoc.send_c_store(bad)
    no_uid = copy.deepcopy(good)
    del no_uid.SeriesInstanceUID
    status2 = assoc.send_c_store(no_uid)
    odd_uid = copy.deepcopy(good)
    odd_uid.StudyInstanceUID = "REMOVED-not-a-uid"
    status3 = assoc.send_c_store(odd_uid)
    assoc.release()
    assert int(status.Status) == 0xC210 and int(status2.Status) == 0xA900 and int(status3.Status) == 0xA900
    assert "cannot be decoded" in caplog.text and "lacks a study, series or instance UID" in caplog.text, (
        f"listener log: level {listener_log.getEffectiveLevel()}, handlers {logging.getLogger().handlers}")
    assert "REMOVED" not in caplog.text and good.SOPInstanceUID not in caplog.text
    assert listener.inbox.series() == [] and instance_rows(listener) == []


def test_out_of_scope_series_is_recorded_and_skipped(peers):
    start, collector = peers
    listener = start()
    series = generate_uid()
    datasets = []
    for ds in ge_datasets()[:5]:
        ds.BodyPartExamined, ds.SeriesInstanceUID, ds.SOPInstanceUID = "CHEST", series, generate_uid()
        datasets.append(ds)
    assert send(listener.port, datasets, calling="OTHER") == [0] * 5
    (folder,) = listener.inbox.series()
    wait_for(lambda: (folder / "skipped.json").exists(), 60, "the series to be skipped")
    assert "not the head" in json.loads((folder / "skipped.json").read_text())["reason"]
    assert collector.received == [] and studies(listener)[0].status == StudyStatus.FAILED
    rows = instance_rows(listener)
    assert len(rows) == 5 and {r.status for r in rows} == {InstanceStatus.SKIPPED}
    assert all("not the head" in r.reason and r.calling_ae == "OTHER" for r in rows)


def test_echo_and_concurrent_associations(peers):
    start, collector = peers
    listener = start()
    ae = AE(ae_title="SCANNER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", listener.port, ae_title="STROKESCAN")
    assert int(assoc.send_c_echo().Status) == 0
    assoc.release()
    base = ge_datasets()
    sets = [new_series(base, 6) for _ in range(4)]
    results: list = [None] * 4
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, send(listener.port, sets[i])))
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [[0] * 6] * 4
    folders = listener.inbox.series()
    assert len(folders) == 4 and all(len(listener.inbox.instances(f)) == 6 for f in folders)
    wait_for(lambda: all((f / "sent.json").exists() for f in folders), 150, "four results")
    assert len(collector.received) == 12 and len({ds.SOPInstanceUID for ds in collector.received}) == 12
    assert len(studies(listener)) == 4
    rows = instance_rows(listener)
    assert len(rows) == 24 and {r.status for r in rows} == {InstanceStatus.ANALYSED}
    assert len({r.series_key for r in rows}) == 4


def test_fhir_bundle_per_series_without_patient_identity(peers, server, tmp_path: Path):  # noqa: F811
    """The listener configured with a FHIR folder and base URL: one DiagnosticReport bundle per series, written
    and POSTed, with a placeholder subject and no identifying header value."""
    from strokescan.app.integration.fhir import FhirSettings

    start, _ = peers
    url, recorder = server
    listener = start(fhir=FhirSettings(folder=tmp_path / "fhir", url=url))
    first, second = ge_datasets(), new_series(ge_datasets(), 6)
    assert send(listener.port, first) == [0] * 28
    assert send(listener.port, second) == [0] * 6
    wait_for(lambda: len(recorder.posts) >= 2 and all((f / "sent.json").exists() for f in listener.inbox.series()),
             150, "two FHIR bundles and two DICOM deliveries")
    time.sleep(1.0)  # a duplicate would come now
    written = sorted((tmp_path / "fhir").glob("report-*.json"))
    assert len(recorder.posts) == 2 and len(written) == 2
    bodies = [body for _, _, body in recorder.posts]
    assert sorted(p.read_bytes() for p in written) == sorted(bodies)  # the same bundle written and POSTed
    for path, headers, body in recorder.posts:
        assert path == "/fhir" and headers["Content-Type"] == "application/fhir+json"
        doc = json.loads(body)
        (report,) = resources(doc, "DiagnosticReport")
        assert doc["type"] == "transaction" and report["subject"] == {"reference": "Patient/unknown"}
        assert "identifier" not in report and "not a diagnosis" in report["conclusion"]
        assert not resources(doc, "Patient")
        text = body.decode()
        for ds in (*first, *second):
            for value in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, str(ds.PatientName),
                          str(ds.PatientID)):
                assert value not in text
    probabilities = sorted(
        next(o for o in resources(json.loads(b), "Observation") if o["code"]["coding"][0]["code"] ==
             "hemorrhage-probability")["valueQuantity"]["value"] for b in bodies)
    assert probabilities == sorted(round(s.probability, 4) for s in studies(listener))
