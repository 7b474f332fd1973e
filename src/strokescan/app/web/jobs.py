"""The analysis queue, persisted in the database: an upload becomes a ``queued`` study; a worker thread claims
the oldest one (an atomic ``UPDATE ... WHERE status = 'queued'``, safe with several workers or processes), runs
the one :class:`~strokescan.inference.Predictor`, writes the viewer's PNG cache and stores the result.

Workers of ``strokescan worker`` (on several machines over one database) hold a lease: ``claimed_by`` and a
``heartbeat_at`` renewed while they analyse. A running study whose heartbeat is older than the lease (its
worker was killed) is claimed again by another worker; only the holder of the claim stores the outcome, so
each study's result is stored once.

A failure marks the study ``failed`` with one line (never a traceback, never a server path; the stored files have
neutral names unless the operator keeps identifiers) and keeps the upload. A DICOM upload of another modality
fails naming it before the series is assembled. At start-up, studies left ``running`` by a stopped server are
queued again: a restart loses nothing.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import warnings
from datetime import timedelta
from collections.abc import Callable
from pathlib import Path

import pydicom
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import sessionmaker

from strokescan.app.web.audit import record
from strokescan.app.web.db import Study, StudyStatus, utcnow
from strokescan.app.web.render import render_study
from strokescan.app.web.uploads import private_tree
from strokescan.errors import OutOfScopeError, StrokescanError
from strokescan.inference import Predictor, ScanResult
from strokescan.inference.explanations import load_backend
from strokescan.io import load_scan

log = logging.getLogger(__name__)


def requeue_interrupted(sessions: sessionmaker) -> int:
    """Queue again every study a stopped server left ``running``; returns how many."""
    with sessions.begin() as session:
        return session.execute(update(Study).where(Study.status == StudyStatus.RUNNING)
                               .values(status=StudyStatus.QUEUED, started_at=None)).rowcount


def _stale(lease_seconds: float):
    """Running studies whose worker has not renewed its lease in time (or never held one)."""
    cutoff = utcnow() - timedelta(seconds=lease_seconds)
    return and_(Study.status == StudyStatus.RUNNING,
                or_(Study.heartbeat_at < cutoff, and_(Study.heartbeat_at.is_(None), Study.started_at < cutoff)))


def claim_next(sessions: sessionmaker, worker_id: str | None = None, lease_seconds: float | None = None) -> int | None:
    """Mark the oldest queued study running for ``worker_id`` and return its id; with ``lease_seconds``, a study
    whose worker stopped renewing its lease is claimed again. None when there is nothing to do."""
    for stale in ([False, True] if lease_seconds else [False]):
        with sessions.begin() as session:
            where = _stale(lease_seconds) if stale else Study.status == StudyStatus.QUEUED
            for study_id in session.scalars(select(Study.id).where(where).order_by(Study.created_at, Study.id).limit(5)):
                now = utcnow()
                claimed = session.execute(update(Study).where(Study.id == study_id, where)
                                          .values(status=StudyStatus.RUNNING, started_at=now, heartbeat_at=now,
                                                  claimed_by=worker_id)).rowcount
                if claimed:
                    if stale:
                        log.warning("study %d: its worker stopped renewing its lease; claimed again", study_id)
                    return study_id
    return None


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:80]


def public_document(result: ScanResult, label: str, show_identifiers: bool) -> dict:
    """The result document as the web app stores and serves it: file names (which may carry a patient's name)
    replaced by slice numbers unless the operator opted in."""
    doc = result.to_dict()
    if not show_identifiers:
        doc["path"] = label
        for i, s in enumerate(doc["slices"]):
            s["source"] = f"slice {i + 1}"
    return doc


def one_line(error: Exception, instance_dir: Path, folder: Path | None = None) -> str:
    """The error's first line with the study's folder (else the instance folder) taken out of paths."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    for prefix in ([str(folder)] if folder is not None else []) + [str(instance_dir)]:
        text = text.replace(prefix + "/", "").replace(prefix, "the upload")
    return text


def modality_problem(path: Path, max_files: int = 2000) -> str | None:
    """For a folder of DICOM files none of which is CT: the reason, naming the modality (read from the headers
    before the series is assembled, so that five MR files fail as MR, not as a broken series)."""
    if not path.is_dir():
        return None
    modalities: set[str] = set()
    for i, file in enumerate(sorted(f for f in path.rglob("*") if f.is_file())):
        if i >= max_files:
            break
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(file, force=True, stop_before_pixels=True, specific_tags=["Modality"])
        except Exception:  # noqa: BLE001 - unreadable headers are the reader's to report
            continue
        modality = str(ds.get("Modality", "") or "").strip().upper()
        if modality:
            modalities.add(modality)
    if not modalities or "CT" in modalities:
        return None
    return f"modality {', '.join(sorted(modalities))}, not CT (the models read CT of the head only)"


class JobWorker(threading.Thread):
    """Runs queued analyses one at a time until :meth:`stop`. The Predictor and the explanation library are
    loaded when the thread starts (so the first study does not wait for them); a failure there is retried on the
    first study, which then fails with the reason."""

    def __init__(self, sessions: sessionmaker, instance_dir: Path, predictor_factory: Callable[[], Predictor],
                 show_identifiers: bool = False, poll_seconds: float = 0.5,
                 on_done: Callable[[int, object, ScanResult], None] | None = None,
                 housekeeping: Callable[[], None] | None = None, housekeeping_seconds: float = 3600.0,
                 worker_id: str | None = None, lease_seconds: float | None = None) -> None:
        super().__init__(name="strokescan-jobs", daemon=True)
        self.worker_id = worker_id or default_worker_id()
        self.lease_seconds = lease_seconds  # None: no reclaiming (the embedded worker requeues at start instead)
        self.housekeeping, self.housekeeping_seconds = housekeeping, housekeeping_seconds  # run when idle
        self._last_housekeeping = 0.0
        self.on_done = on_done  # called (study id, Scan, ScanResult) after a study is stored done; never fails it
        self.sessions, self.instance_dir = sessions, instance_dir
        self._factory, self._predictor = predictor_factory, None
        self.show_identifiers, self.poll_seconds = show_identifiers, poll_seconds
        self._stop_event, self.idle = threading.Event(), threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def wait_until_idle(self, timeout: float) -> bool:
        """Block until no study is queued or running (True), or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.sessions() as session:
                pending = session.scalar(select(func.count()).select_from(Study).where(
                    Study.status.in_([StudyStatus.QUEUED, StudyStatus.RUNNING])))
            if not pending:
                return True
            self.idle.clear()
            self.idle.wait(min(1.0, max(0.0, deadline - time.monotonic())))
        return False

    def _warm_up(self) -> None:
        try:
            self._predictor = self._factory()
            load_backend()
        except Exception as exc:  # noqa: BLE001 - reported by the first study, which tries again
            log.warning("models not loaded at start: %s", one_line(exc, self.instance_dir))
            self._predictor = None

    def _housekeep(self) -> None:
        if self.housekeeping is None or time.monotonic() - self._last_housekeeping < self.housekeeping_seconds:
            return
        self._last_housekeeping = time.monotonic()
        try:
            self.housekeeping()
        except Exception:  # noqa: BLE001 - housekeeping must never stop the worker
            log.exception("housekeeping failed")

    def run(self) -> None:
        self._warm_up()
        while not self._stop_event.is_set():
            study_id = claim_next(self.sessions, self.worker_id, self.lease_seconds)
            if study_id is None:
                self._housekeep()
                self.idle.set()
                self._stop_event.wait(self.poll_seconds)
                continue
            self.idle.clear()
            self.process(study_id)

    def _heartbeat(self, study_id: int, done: threading.Event) -> None:
        """Renew the lease on ``study_id`` until ``done`` (every third of the lease, at most every 5 s)."""
        every = min(5.0, (self.lease_seconds or 15.0) / 3)
        while not done.wait(every):
            try:
                with self.sessions.begin() as session:
                    session.execute(update(Study).where(Study.id == study_id, Study.claimed_by == self.worker_id,
                                                        Study.status == StudyStatus.RUNNING)
                                    .values(heartbeat_at=utcnow()))
            except Exception:  # noqa: BLE001 - a missed beat is retried; the analysis goes on
                log.warning("study %d: lease not renewed", study_id)

    def process(self, study_id: int) -> None:
        """Analyse one claimed study (renewing its lease meanwhile) and store the outcome."""
        beating = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(study_id, beating), daemon=True)
        beat.start()
        try:
            self._process(study_id)
        finally:
            beating.set()
            beat.join(10)

    def _process(self, study_id: int) -> None:
        with self.sessions() as session:
            study = session.get(Study, study_id)
            if study is None:  # deleted meanwhile
                return
            label, path = study.label, self.instance_dir / study.analyse_path
            folder = self.instance_dir / study.upload_dir
        log.info("study %d: analysis started", study_id)
        values: dict = {}
        done = None
        try:
            problem = modality_problem(path)
            if problem:
                raise OutOfScopeError(f"out of scope: {problem}", problem)
            if self._predictor is None:
                self._predictor = self._factory()
            scan = load_scan(path)
            result = self._predictor.analyse(scan, explain=True)
            render_study(scan, result.masks, folder / "view", result.heatmaps)
            doc = public_document(result, label, self.show_identifiers)
            (folder / "view" / "result.json").write_text(json.dumps(doc))
            private_tree(folder / "view")
            clot = doc["volumes"]["hemorrhage"] if doc.get("volumes") else None
            values.update(
                status=StudyStatus.DONE, error=None, n_slices=result.n_slices, probability=result.probability,
                positive=result.positive, operating_point=result.operating_point,
                subtypes_json=json.dumps(doc["scan"]["subtypes"]), result_json=json.dumps(doc),
                clot_ml=clot["volume"] if clot and clot["unit"] == "mL" else None,
            )
            log.info("study %d: done (%d slices)", study_id, result.n_slices)
            done = (scan, result)
        except StrokescanError as error:
            values.update(status=StudyStatus.FAILED, error=one_line(error, self.instance_dir, folder))
            log.info("study %d: failed: %s", study_id, values["error"])
        except Exception as error:  # noqa: BLE001 - a job must never take the worker down
            log.exception("study %d: internal error", study_id)
            values.update(status=StudyStatus.FAILED, error=f"internal error ({type(error).__name__}); the upload is kept")
        values["finished_at"] = utcnow()  # when the outcome is known, not when the job started
        with self.sessions.begin() as session:  # only the holder of the claim stores the outcome
            stored = session.execute(update(Study).where(Study.id == study_id, Study.claimed_by == self.worker_id,
                                                         Study.status == StudyStatus.RUNNING)
                                     .values(**values)).rowcount
        if not stored:
            log.warning("study %d: another worker holds it now; this outcome is dropped", study_id)
            return
        record(self.sessions, "analysed", study_id=study_id, via="worker",
               detail=f"{values['status'].value} by {self.worker_id}")
        if done is not None and self.on_done is not None:
            try:
                self.on_done(study_id, *done)
            except Exception:  # noqa: BLE001 - a hook must never fail the job or stop the worker
                log.exception("study %d: post-analysis hook failed", study_id)
