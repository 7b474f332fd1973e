"""The DICOM listener in-process, with pynetdicom peers on 127.0.0.1: receive, queue, analyse, send once."""

from __future__ import annotations

import copy
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
from sqlalchemy import select
from test_integration_dicom_results import ge_datasets

from strokescan.app.web.db import Study, StudyStatus


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

    def start() -> Listener:
        settings = ListenerSettings(
            instance_dir=tmp_path / "instance", database_url=f"sqlite:///{tmp_path / 'instance' / 'db.sqlite'}",
            port=0, quiet_seconds=1.0, allowed_calling_aets=("SCANNER", "OTHER"),
            destination=Destination("127.0.0.1", collector.port, "PACS"),
            predictor_factory=lambda: Predictor(model, segment=True))
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
    # a restart finds everything sent: nothing is queued or sent again
    listener.stop()
    again = start()
    again.sweep()
    time.sleep(1.5)
    assert len(collector.received) == 3 and len(studies(again)) == 1
    text = caplog.text
    for secret in ("REMOVED", "QMNx85rKkkg", datasets[0].StudyInstanceUID, datasets[0].SeriesInstanceUID):
        assert secret not in text


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
    assert "cannot be decoded" in caplog.text and "lacks a study, series or instance UID" in caplog.text
    assert "REMOVED" not in caplog.text and good.SOPInstanceUID not in caplog.text
    assert listener.inbox.series() == []


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


def test_echo_and_concurrent_associations(peers):
    start, collector = peers
    listener = start()
    ae = AE(ae_title="SCANNER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", listener.port, ae_title="STROKESCAN")
    assert int(assoc.send_c_echo().Status) == 0
    assoc.release()
    base = ge_datasets()
    sets = []
    for _ in range(4):
        series = generate_uid()
        copies = []
        for ds in base[:6]:
            c = copy.deepcopy(ds)
            c.SeriesInstanceUID, c.SOPInstanceUID = series, generate_uid()
            copies.append(c)
        sets.append(copies)
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
