"""Studies as the pages and the API see them: made from an upload, listed in worklist order, summarised."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import Select, case, or_, select
from sqlalchemy.orm import Session

from strokescan.app.web.db import Study, StudyStatus
from strokescan.app.web.uploads import UploadLimits, UploadRejected, store_upload

KIND_NAMES = {"dicom": "DICOM", "nifti": "NIfTI", "image": "Image"}
UPLOADS = "uploads"


def create_study(session: Session, instance_dir: Path, parts: Iterable[tuple[str, BinaryIO]], limits: UploadLimits,
                 user_id: int | None, label: str | None = None) -> Study:
    """Store an upload (checked by :func:`~strokescan.app.web.uploads.store_upload`) and queue its analysis."""
    stored = store_upload(parts, instance_dir / UPLOADS, limits)
    if stored.kind != "dicom" and stored.n_files > 1:
        shutil.rmtree(stored.root, ignore_errors=True)
        raise UploadRejected(f"{stored.n_files} {stored.kind} files in one upload: send one image or NIfTI volume "
                             "per study (a DICOM series may have many files)", 400)
    study = Study(label=label or "upload", kind=stored.kind, n_files=stored.n_files, uploaded_by=user_id,
                  upload_dir=str(stored.root.relative_to(instance_dir)),
                  analyse_path=str(stored.analyse_path.relative_to(instance_dir)), status=StudyStatus.QUEUED)
    session.add(study)
    session.flush()
    if label is None:
        study.label = f"{KIND_NAMES[stored.kind]} upload {study.id}"
    return study


def worklist_query(status: str | None = None, flagged_only: bool = False, search: str | None = None) -> Select:
    """Studies in worklist order: flagged findings first, then the rest; each group in arrival order."""
    query = select(Study).order_by(case((Study.positive.is_(True), 0), else_=1), Study.created_at, Study.id)
    if status:
        query = query.where(Study.status == StudyStatus(status))
    if flagged_only:
        query = query.where(Study.positive.is_(True))
    if search:
        query = query.where(or_(Study.label.ilike(f"%{search}%"), Study.kind.ilike(f"%{search}%")))
    return query


def study_summary(study: Study) -> dict:
    """The study as the API lists it (status, headline findings, no identifiers)."""
    return {
        "id": study.id, "label": study.label, "kind": study.kind, "status": study.status.value,
        "error": study.error, "created_at": study.created_at.isoformat() + "Z",
        "finished_at": study.finished_at.isoformat() + "Z" if study.finished_at else None,
        "n_slices": study.n_slices, "probability": study.probability, "positive": study.positive,
        "operating_point": study.operating_point, "subtypes": study.subtypes, "clot_ml": study.clot_ml,
    }


def study_folder(instance_dir: Path, study: Study) -> Path:
    return instance_dir / study.upload_dir / "view"
