"""The DICOM listener in-process, with pynetdicom peers on 127.0.0.1: receive, record, queue, analyse, send once."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import ssl
import subprocess
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
    """A tiny Storage SCP on 127.0.0.1 standing in for the PACS: keeps what it receives (over TLS with
    ``ssl_context``)."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.received: list[pydicom.Dataset] = []
        ae = AE(ae_title="PACS")
        for cx in StoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        self.server = ae.start_server(("127.0.0.1", 0), block=False, ssl_context=ssl_context,
                                      evt_handlers=[(evt.EVT_C_STORE, self._store)])
        self.port = self.server.server_address[1]

    def _store(self, event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        self.received.append(ds)
        return 0x0000

    def stop(self) -> None:
        """Stop receiving (idempotent)."""
        server, self.server = self.server, None
        if server is not None:
            server.shutdown()


def send(port: int, datasets, calling: str = "SCANNER", aet: str = "STROKESCAN",
         tls: ssl.SSLContext | None = None, bind: str | None = None) -> list[int]:
    """C-STORE ``datasets`` on one association (over TLS with ``tls``; from the address ``bind``); [] when the
    association is refused."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=aet, tls_args=None if tls is None else (tls, "127.0.0.1"),
                         bind_address=None if bind is None else (bind, 0))
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


# ---- issue 30: who may call (AE title and host), retention of the received copies, DICOM TLS --------------------
def listener_log_on(caplog, monkeypatch, level: int = logging.INFO) -> None:
    """Capture the listener's lines (a library's logging.config call earlier in the session can disable them)."""
    caplog.set_level(level)
    listener_log = logging.getLogger("strokescan.app.integration.listener")
    monkeypatch.setattr(listener_log, "disabled", False)
    monkeypatch.setattr(listener_log, "propagate", True)


def test_allow_rules_by_ae_title_and_host():
    from strokescan.app.integration.listener import AllowRule, allow_refusal

    rules = [AllowRule.parse(t) for t in ("PACS", "CT1@127.0.0.1", "*@10.1.0.0/16", "CT6@::1")]
    assert allow_refusal(rules, "PACS", "192.0.2.7") is None  # an AE title alone: from any host
    assert allow_refusal(rules, "CT1", "127.0.0.1") is None
    assert allow_refusal(rules, "CT1", "::ffff:127.0.0.1") is None  # IPv4-mapped IPv6
    assert allow_refusal(rules, "CT1", "127.0.0.2") == "host not allowed for this calling AE title by --allow"
    assert allow_refusal(rules, "ANYONE", "10.1.200.3") is None  # *@network: any AE title from there
    assert allow_refusal(rules, "CT6", "::1") is None and allow_refusal(rules, "CT6", "127.0.0.1") is not None
    assert allow_refusal(rules, "INTRUDER", "127.0.0.1") == "calling AE title not in --allow (nor its host)"
    assert allow_refusal(rules[:2], "INTRUDER", "127.0.0.1") == "calling AE title not in --allow"
    assert allow_refusal([], "ANYONE", "203.0.113.1") is None  # no --allow: anyone
    localhost = AllowRule.parse("CT2@localhost")  # a name, resolved when parsed
    assert localhost.accepts_host("127.0.0.1") or localhost.accepts_host("::1")
    for bad in ("", "@127.0.0.1", "CT1@", "A" * 17, "CT1@no-such-host.invalid"):
        with pytest.raises(ValueError):
            AllowRule.parse(bad)


@pytest.mark.skipif(shutil.which("storescu") is None, reason="DCMTK storescu is not installed")
def test_allow_by_host_storescu_from_127_0_0_1_accepted_other_host_refused(peers, tmp_path: Path, caplog,
                                                                            monkeypatch):
    from strokescan.app.integration.listener import AllowRule

    start, _ = peers
    listener_log_on(caplog, monkeypatch, logging.WARNING)
    # nothing is analysed here: a long quiet time, and no worker
    listener = start(allowed_calling_aets=("SCANNER@127.0.0.1", "PACS@127.0.0.0/30"), quiet_seconds=600,
                     run_worker=False)
    slice_file = tmp_path / "slice.dcm"
    ge_datasets()[0].save_as(slice_file, enforce_file_format=True)

    def storescu(calling: str) -> subprocess.CompletedProcess:
        return subprocess.run(["storescu", "-aet", calling, "-aec", "STROKESCAN", "127.0.0.1", str(listener.port),
                               str(slice_file)], capture_output=True, text=True, timeout=60)

    assert storescu("SCANNER").returncode == 0  # SCANNER from 127.0.0.1: allowed
    assert len(listener.inbox.series()) == 1 and "refused" not in caplog.text
    # SCANNER from another host (127.0.0.2 is another address of this machine): refused, one line
    assert send(listener.port, ge_datasets()[1:2], calling="SCANNER", bind="127.0.0.2") == []
    # PACS from 127.0.0.2: inside its network 127.0.0.0/30, allowed
    assert send(listener.port, ge_datasets()[1:2], calling="PACS", bind="127.0.0.2") == [0]
    assert storescu("INTRUDER").returncode != 0  # an AE title in no entry: refused from anywhere
    # storescu itself from a host not in the list: SCANNER allowed only from 192.0.2.1 now
    listener.allow = [AllowRule.parse("SCANNER@192.0.2.1")]
    assert storescu("SCANNER").returncode != 0
    wait_for(lambda: caplog.text.count("refused") >= 3, 10, "three refusal lines")
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 3, lines
    assert "'SCANNER' at 127.0.0.2 refused: host not allowed for this calling AE title by --allow" in lines[0]
    assert "'INTRUDER' at 127.0.0.1 refused: calling AE title not in --allow" in lines[1]
    assert "'SCANNER' at 127.0.0.1 refused: host not allowed for this calling AE title by --allow" in lines[2]
    assert len(listener.inbox.instances(listener.inbox.series()[0])) == 2


def _fake_series(inbox: Path, name: str, delivered_days_ago: float | None, *extra: str) -> Path:
    """A series folder as the listener leaves it: instances, results, and sent.json when delivered."""
    folder = inbox / name
    (folder / "instances").mkdir(parents=True)
    (folder / "results").mkdir()
    for i in range(3):
        (folder / "instances" / f"{i}.dcm").write_bytes(b"copy with identifiers")
    (folder / "results" / "sr.dcm").write_bytes(b"result with identifiers")
    (folder / "results" / "notes.json").write_text("{}")
    if delivered_days_ago is not None:
        at = time.time() - delivered_days_ago * 86400
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
        (folder / "sent.json").write_text(json.dumps({"study_id": 1, "at": stamp, "files": ["sr.dcm"]}))
        os.utime(folder / "sent.json", (at, at))
    for marker in extra:
        (folder / marker).write_text("{}")
    return folder


def test_retention_purges_only_delivered_series_past_keep_days(tmp_path: Path, caplog, monkeypatch):
    from strokescan.app.integration.listener import INBOX, Listener, ListenerSettings

    listener_log_on(caplog, monkeypatch)
    instance = tmp_path / "instance"
    inbox = instance / INBOX
    old = _fake_series(inbox, "a" * 24, 8)
    recent = _fake_series(inbox, "b" * 24, 6)
    pending = _fake_series(inbox, "c" * 24, None)
    failed = _fake_series(inbox, "d" * 24, None, "failed.json", "delivery.json")
    grown = _fake_series(inbox, "e" * 24, 30, "grown")  # delivered, then grew: to be analysed again first
    listener = Listener(ListenerSettings(instance_dir=instance, database_url=f"sqlite:///{instance / 'db.sqlite'}",
                                         keep_days=7, run_worker=False))
    assert listener.purge() == 1
    assert not (old / "instances").exists() and not (old / "results" / "sr.dcm").exists()
    assert (old / "sent.json").exists() and (old / "results" / "notes.json").exists()
    assert json.loads((old / "purged.json").read_text())["instances"] == 3
    for kept in (recent, pending, failed, grown):
        assert len(list((kept / "instances").glob("*.dcm"))) == 3 and (kept / "results" / "sr.dcm").exists()
    assert listener.purge() == 0  # once
    assert listener.purge(now=time.time() + 1.5 * 86400) == 1 and not (recent / "instances").exists()
    lines = [r.getMessage() for r in caplog.records if "retention" in r.getMessage()]
    assert len(lines) == 2 and lines[0].startswith("series aaaaaaaa: retention: 3 received instance(s) and 1 ")
    for kept in (pending, failed, grown):
        assert (kept / "instances").is_dir()


def test_keep_days_0_deletes_a_delivered_series_copies_and_keeps_an_undelivered_one(peers, caplog, monkeypatch):
    start, collector = peers
    listener_log_on(caplog, monkeypatch)
    listener = start(keep_days=0, max_attempts=1)
    delivered = new_series(ge_datasets(), 6)
    assert send(listener.port, delivered) == [0] * 6
    (folder,) = listener.inbox.series()
    wait_for(lambda: (folder / "purged.json").exists() and not (folder / "instances").exists(), 150,
             "the delivered series to be purged")
    assert (folder / "sent.json").exists() and len(collector.received) == 3
    assert not (folder / "instances").exists() and not list(folder.glob("results*/*.dcm"))
    # the PACS sends the series again after the purge: analysed again, delivered as version 2, purged again
    assert send(listener.port, delivered) == [0] * 6
    wait_for(lambda: (folder / "results-v1" / "sent.json").exists() and (folder / "sent.json").exists()
             and not (folder / "instances").exists(), 150, "version 2 delivered and purged")
    assert len(collector.received) == 6 and len({ds.SOPInstanceUID for ds in collector.received}) == 6
    # the destination goes away: the next series is not delivered (given up after one attempt) and stays
    collector.stop()
    undelivered = new_series(ge_datasets(), 6)
    assert send(listener.port, undelivered) == [0] * 6
    other = next(f for f in listener.inbox.series() if f != folder)
    wait_for(lambda: (other / "failed.json").exists(), 150, "the second series to be given up")
    time.sleep(1.0)  # a few sweeps
    assert len(listener.inbox.instances(other)) == 6 and not (other / "purged.json").exists()
    assert [r.getMessage() for r in caplog.records if "retention" in r.getMessage()] == [
        f"series {folder.name[:8]}: retention: 6 received instance(s) and 3 result object(s) deleted, 0.0 day(s) "
        "after delivery (--keep-days 0)"] * 2
    for ds in (*delivered, *undelivered):
        for value in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, str(ds.PatientID)):
            assert value not in caplog.text


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> dict[str, Path]:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate (both signed by it), and a second CA
    that signed nothing here; made with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("pki")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2", "-subj", f"/CN={ca}")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=strokescan test {name}")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", *(("-extfile", "san.ext") if name == "server" else ()))
    return {p.stem if p.suffix == ".pem" else p.name: p for p in folder.iterdir()}


def _client_tls(certificates: dict[str, Path], with_certificate: bool = True) -> ssl.SSLContext:
    from strokescan.app.integration.listener import client_tls_context

    return client_tls_context(certificates["ca"], certificates["client"] if with_certificate else None,
                              certificates["client.key"] if with_certificate else None)


def test_tls_client_certificates_required_and_refusals_logged(peers, certificates, caplog, monkeypatch):
    start, _ = peers
    listener_log_on(caplog, monkeypatch)
    listener = start(tls_cert=certificates["server"], tls_key=certificates["server.key"], tls_ca=certificates["ca"],
                     quiet_seconds=600, run_worker=False)
    ae = AE(ae_title="SCANNER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", listener.port, ae_title="STROKESCAN",
                         tls_args=(_client_tls(certificates), "127.0.0.1"))
    assert assoc.is_established and int(assoc.send_c_echo().Status) == 0
    assoc.release()
    assert send(listener.port, ge_datasets()[:2], tls=_client_tls(certificates)) == [0, 0]
    assert len(listener.inbox.instances(listener.inbox.series()[0])) == 2
    assert send(listener.port, ge_datasets()[2:3], tls=_client_tls(certificates, with_certificate=False)) == []
    assert send(listener.port, ge_datasets()[2:3]) == []  # no TLS at all
    # a client that does not trust the server's CA gives up itself
    other = ssl.create_default_context(cafile=str(certificates["other-ca"]))
    assert send(listener.port, ge_datasets()[2:3], tls=other) == []
    wait_for(lambda: caplog.text.count("TLS connection from 127.0.0.1 refused") >= 3, 10, "three TLS refusals")
    assert "listening as STROKESCAN" in caplog.text and "client certificates required" in caplog.text
    assert len(listener.inbox.instances(listener.inbox.series()[0])) == 2
    # the listener still serves after the refusals
    assert send(listener.port, ge_datasets()[2:3], tls=_client_tls(certificates)) == [0]
    if shutil.which("storescu") is not None:  # DCMTK as the scanner, with its certificate (BCP 195 profile)
        slice_file = certificates["ca"].parent / "slice.dcm"
        ge_datasets()[3].save_as(slice_file, enforce_file_format=True)
        done = subprocess.run(["storescu", "+tls", str(certificates["client.key"]), str(certificates["client"]),
                               "+cf", str(certificates["ca"]), "-aet", "SCANNER", "-aec", "STROKESCAN", "127.0.0.1",
                               str(listener.port), str(slice_file)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        assert len(listener.inbox.instances(listener.inbox.series()[0])) == 4


def test_tls_in_and_out(peers, certificates):
    """A series in over TLS (with a client certificate), results out over TLS to a destination that requires ours."""
    from strokescan.app.integration.listener import Destination, send_datasets, server_tls_context

    start, _ = peers
    pacs = Collector(ssl_context=server_tls_context(certificates["server"], certificates["server.key"],
                                                    ca=certificates["ca"]))
    try:
        destination = Destination("127.0.0.1", pacs.port, "PACS")
        # the destination's certificate is checked: another CA, or no TLS, and nothing is sent
        assert send_datasets(ge_datasets()[:1], destination, tls=_client_tls(certificates)) == [0]
        assert send_datasets(ge_datasets()[:1], destination, timeout_s=5,
                             tls=ssl.create_default_context(cafile=str(certificates["other-ca"]))) == [-1]
        pacs.received.clear()
        listener = start(tls_cert=certificates["server"], tls_key=certificates["server.key"],
                         tls_ca=certificates["ca"], dest_tls_ca=certificates["ca"], destination=destination)
        series = new_series(ge_datasets(), 6)
        assert send(listener.port, series, tls=_client_tls(certificates)) == [0] * 6
        (folder,) = listener.inbox.series()
        wait_for(lambda: (folder / "sent.json").exists(), 150, "the results to be sent over TLS")
        assert sorted(str(ds.Modality) for ds in pacs.received) == ["OT", "SEG", "SR"]
    finally:
        pacs.stop()


def test_listen_toml_retention_allow_and_tls_keys(tmp_path: Path, certificates, capsys, monkeypatch):
    import argparse
    import signal

    from strokescan.app.integration import listener as module
    from strokescan.app.integration.listener import add_listen_arguments, run_listen, settings_from_args

    monkeypatch.setattr(module, "setup_logging", lambda *_args: None)  # leave the test session's logging alone
    monkeypatch.setattr(signal, "signal", lambda *_args: None)

    config = tmp_path / "listen.toml"
    config.write_text(f'[listen]\nkeep-days = 0\nallow = ["CT1@127.0.0.1", "*@10.0.0.0/8"]\n'
                      f'tls-cert = "{certificates["server"]}"\ntls-key = "{certificates["server.key"]}"\n'
                      f'tls-ca = "{certificates["ca"]}"\ndest-tls-ca = "{certificates["ca"]}"\n')
    parser = argparse.ArgumentParser()
    add_listen_arguments(parser)
    settings = settings_from_args(parser.parse_args(["--config", str(config), "--instance-dir", str(tmp_path)]))
    assert settings.keep_days == 0 and settings.allowed_calling_aets == ("CT1@127.0.0.1", "*@10.0.0.0/8")
    assert (settings.tls_cert, settings.tls_key, settings.tls_ca, settings.dest_tls_ca) == (
        certificates["server"], certificates["server.key"], certificates["ca"], certificates["ca"])
    assert settings_from_args(parser.parse_args(["--instance-dir", str(tmp_path)])).keep_days == 7
    # a bad entry, or a key without its certificate: one error line and exit status 2, no traceback
    for argv in (["--allow", "CT1@"], ["--tls-key", str(certificates["server.key"])], ["--keep-days", "-1"]):
        assert run_listen(parser.parse_args(["--instance-dir", str(tmp_path / "i"), "--port", "0", *argv])) == 2
        assert "strokescan listen: error:" in capsys.readouterr().err
