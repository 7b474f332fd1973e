"""The web app and ``strokescan worker`` on a real PostgreSQL server (Debian's postgresql, started by the test in a
temporary folder on a Unix socket, stopped at the end): the schema's migrations and the audit trail's
append-only trigger; two workers over one database analyse 20 queued studies exactly once each; a worker killed
with SIGKILL mid-study loses nothing: the other takes the study over when the lease runs out and finishes it;
the DICOM listener stores and analyses a series there."""

from __future__ import annotations

import importlib.util
import io
import os
import re
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("psycopg", reason="PostgreSQL tests need psycopg (the 'test' extra)")

from sqlalchemy import select, text, update  # noqa: E402
from sqlalchemy.exc import DatabaseError  # noqa: E402

from conftest import save_untrained_classifier  # noqa: E402
from strokescan.app.web.accounts import create_user, issue_token  # noqa: E402
from strokescan.app.web.db import AuditEvent, Study, StudyStatus  # noqa: E402
from strokescan.app.web.server import WebSettings, create_app  # noqa: E402
from strokescan.config import SAMPLES_DIR  # noqa: E402
from strokescan.inference import Predictor  # noqa: E402

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "web_workers.py"
_spec = importlib.util.spec_from_file_location("web_workers", BENCHMARK)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

if bench._pg_binary("initdb") is None:
    pytest.skip("PostgreSQL tests need Debian's postgresql (apt-get install postgresql)", allow_module_level=True)


@pytest.fixture(scope="module")
def server():
    with bench.throwaway_postgres() as url:
        yield url


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_untrained_classifier(tmp_path_factory.mktemp("pg_model"), size=96)


def _db(server: str, name: str) -> str:
    return bench.fresh_database(server, name)


def _outcome_when(url: str, condition, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = bench.outcome(url)
        if condition(result):
            return result
        time.sleep(0.3)
    pytest.fail(f"not reached in {timeout} s: {bench.outcome(url)}")


def test_the_web_app_runs_on_postgresql_with_its_audit_trail_append_only(server, model_dir, tmp_path):
    url = _db(server, "webapp")
    app = create_app(WebSettings(instance_dir=tmp_path / "instance", database_url=url, show_identifiers=False,
                                 predictor_factory=lambda: Predictor(model_dir, segment=True)))
    try:
        sessions = app.extensions["strokescan"]["sessions"]
        with sessions.begin() as session:
            token = issue_token(session, create_user(session, "reader", "reader-password-1"))
        client = app.test_client()
        r = client.post("/api/v1/studies", data={"files": [(io.BytesIO((SAMPLES_DIR / "phe-sich_0021_13.png")
                                                                      .read_bytes()), "a.png")]},
                        headers={"Authorization": f"Bearer {token}"}, content_type="multipart/form-data")
        assert r.status_code == 202
        assert app.extensions["strokescan"]["worker"].wait_until_idle(120)
        auth = {"Authorization": f"Bearer {token}"}
        assert client.get(f"/api/v1/studies/{r.json['id']}", headers=auth).json["status"] == "done"
        assert client.get("/api/v1/studies/99999999999999999999", headers=auth).status_code == 404
        login = app.test_client()
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', login.get("/login").text).group(1)
        assert login.post("/login", data={"username": "reader", "password": "reader-password-1",
                                          "csrf_token": csrf}).status_code == 302
        with sessions() as session:
            actions = set(session.scalars(select(AuditEvent.action)))
        assert {"upload", "token_use", "view_study", "analysed", "login"} <= actions
        with pytest.raises(DatabaseError, match="append-only"):
            with sessions.begin() as session:
                session.execute(update(AuditEvent).values(username="x"))
        with pytest.raises(DatabaseError, match="append-only"):
            with sessions.begin() as session:
                session.execute(text("delete from audit_events"))
    finally:
        app.extensions["strokescan"]["worker"].stop()
        app.extensions["strokescan"]["engine"].dispose()


def test_two_workers_analyse_twenty_queued_studies_exactly_once(server, model_dir, tmp_path):
    url = _db(server, "twenty")
    instance = tmp_path / "instance"
    ids = bench.queue_studies(url, instance, 20, SAMPLES_DIR / "phe-sich_0021_13.png")
    workers = [bench.start_worker(url, instance, f"w{i}", model_dir, log=tmp_path / f"w{i}.log") for i in (1, 2)]
    try:
        result = _outcome_when(url, lambda r: r["status"]["done"] + r["status"]["failed"] >= 20, 300)
    finally:
        bench.stop_workers(workers)
    assert len(ids) == 20 and result["status"] == Counter({"done": 20})
    assert result["analysed"] == Counter({1: 20}), result  # each study analysed once
    assert set(result["by_worker"]) <= {"w1", "w2"} and sum(result["by_worker"].values()) == 20
    assert all(p.returncode == 0 for p in workers)  # SIGTERM: a clean stop


def test_a_worker_killed_mid_study_loses_nothing(server, model_dir, tmp_path):
    url = _db(server, "killed")
    instance = tmp_path / "instance"
    (study_id,) = bench.queue_studies(url, instance, 1, SAMPLES_DIR / "ge-hispeed-head-series.zip")
    workers = {name: bench.start_worker(url, instance, name, model_dir, lease=3.0, log=tmp_path / f"{name}.log")
               for name in ("a", "b")}
    try:
        from strokescan.app.web.db import make_engine, session_factory

        engine = make_engine(url)
        sessions = session_factory(engine)
        deadline = time.monotonic() + 120
        holder = None
        while holder is None and time.monotonic() < deadline:
            with sessions() as session:
                study = session.get(Study, study_id)
                if study.status == StudyStatus.RUNNING:
                    holder = study.claimed_by
            time.sleep(0.05)
        assert holder in workers, "no worker claimed the study"
        os.killpg(workers[holder].pid, signal.SIGKILL)  # mid-study: 28 slices take seconds
        workers[holder].wait(10)
        other = "b" if holder == "a" else "a"
        result = _outcome_when(url, lambda r: r["status"]["done"] == 1, 180)
        with sessions() as session:
            study = session.get(Study, study_id)
            assert (study.status, study.claimed_by, study.n_slices) == (StudyStatus.DONE, other, 28)
            events = session.scalars(select(AuditEvent).where(AuditEvent.action == "analysed")).all()
        assert [e.detail for e in events] == [f"done by {other}"] and result["analysed"] == Counter({1: 1})
        assert "claimed again" in (tmp_path / f"{other}.log").read_text()
        engine.dispose()
    finally:
        bench.stop_workers(list(workers.values()))


def test_the_listener_stores_and_analyses_a_series_on_postgresql(server, model_dir, tmp_path):
    """``strokescan listen`` over PostgreSQL: 28 C-STOREs, one row per instance, the series analysed once; the
    worklist of a web app on the same database lists it."""
    from test_integration_dicom_results import ge_datasets
    from test_integration_listener import send

    from strokescan.app.integration.listener import Listener, ListenerSettings
    from strokescan.app.web.db import ReceivedInstance

    url = _db(server, "listener")
    instance = tmp_path / "instance"
    listener = Listener(ListenerSettings(instance_dir=instance, database_url=url, port=0, quiet_seconds=1.0,
                                         predictor_factory=lambda: Predictor(model_dir, segment=True)))
    listener.start()
    try:
        assert send(listener.port, ge_datasets()) == [0] * 28
        result = _outcome_when(url, lambda r: r["status"]["done"] + r["status"]["failed"] >= 1, 180)
        assert result["status"] == Counter({"done": 1}) and result["analysed"] == Counter({1: 1})
        with listener.sessions() as session:
            assert len(session.scalars(select(ReceivedInstance)).all()) == 28
            assert session.scalar(select(Study)).n_slices == 28
    finally:
        listener.stop()
    app = create_app(WebSettings(instance_dir=instance, database_url=url, start_worker=False))
    with app.extensions["strokescan"]["sessions"].begin() as session:
        token = issue_token(session, create_user(session, "reader", "reader-password-1"))
    listed = app.test_client().get("/api/v1/studies", headers={"Authorization": f"Bearer {token}"}).json
    assert [s["status"] for s in listed["studies"]] == ["done"]
    app.extensions["strokescan"]["engine"].dispose()
