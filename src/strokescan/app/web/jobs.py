"""The analysis queue, persisted in the database: an upload becomes a ``queued`` study; a worker thread claims
the oldest one (an atomic ``UPDATE ... WHERE status = 'queued'``, safe with several workers or processes), runs
the one :class:`~strokescan.inference.Predictor`, writes the viewer's PNG cache and stores the result.

A failure marks the study ``failed`` with one line (never a traceback, never a server path; the stored files have
neutral names unless the operator keeps identifiers) and keeps the upload. A DICOM upload of another modality
fails naming it before the series is assembled. At start-up, studies left ``running`` by a stopped server are
queued again: a restart loses nothing.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pydicom
from sqlalchemy import func, select, update
from sqlalchemy.orm import sessionmaker

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


def claim_next(sessions: sessionmaker) -> int | None:
    """Mark the oldest queued study running and return its id (None when the queue is empty)."""
    with sessions.begin() as session:
        for study_id in session.scalars(select(Study.id).where(Study.status == StudyStatus.QUEUED)
                                        .order_by(Study.created_at, Study.id).limit(5)):
            claimed = session.execute(update(Study).where(Study.id == study_id, Study.status == StudyStatus.QUEUED)
                                      .values(status=StudyStatus.RUNNING, started_at=utcnow())).rowcount
            if claimed:
                return study_id
    return None


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
                 housekeeping: Callable[[], None] | None = None, housekeeping_seconds: float = 3600.0) -> None:
        super().__init__(name="strokescan-jobs", daemon=True)
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
            study_id = claim_next(self.sessions)
            if study_id is None:
                self._housekeep()
                self.idle.set()
                self._stop_event.wait(self.poll_seconds)
                continue
            self.idle.clear()
            self.process(study_id)

    def process(self, study_id: int) -> None:
        """Analyse one claimed study and store the outcome."""
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
        with self.sessions.begin() as session:
            session.execute(update(Study).where(Study.id == study_id).values(**values))
        if done is not None and self.on_done is not None:
            try:
                self.on_done(study_id, *done)
            except Exception:  # noqa: BLE001 - a hook must never fail the job or stop the worker
                log.exception("study %d: post-analysis hook failed", study_id)
