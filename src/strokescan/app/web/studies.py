"""Studies as the pages and the API see them: made from an upload, listed in worklist order (a page at a time),
summarised, deleted (by an admin, or by the retention setting)."""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

import pydicom
from sqlalchemy import Select, case, delete, func, or_, select
from sqlalchemy.orm import Session

from strokescan.app.web.db import Feedback, Study, StudyStatus, utcnow
from strokescan.app.web.uploads import StoredUpload, UploadLimits, UploadRejected, store_upload

KIND_NAMES = {"dicom": "DICOM", "nifti": "NIfTI", "image": "Image"}
UPLOADS = "uploads"

#: DICOM keywords shown (with show_identifiers only) and the names the pages and the API use for them
IDENTIFIER_TAGS = {"PatientName": "patient_name", "PatientID": "patient_id", "AccessionNumber": "accession_number",
                   "StudyDate": "study_date", "StudyDescription": "study_description"}


def dicom_identifiers(stored: StoredUpload) -> dict[str, str]:
    """The patient name and ID, accession number, study date and description of the first DICOM file that has
    them (header only; empty values left out)."""
    files = [stored.analyse_path] if stored.analyse_path.is_file() else sorted(
        p for p in stored.root.rglob("*") if p.is_file())
    for path in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - a file whose header cannot be read shows nothing
            continue
        found = {name: str(ds.get(tag, "") or "").strip()[:120] for tag, name in IDENTIFIER_TAGS.items()}
        found = {k: v for k, v in found.items() if v}
        if found.get("study_date") and len(found["study_date"]) == 8 and found["study_date"].isdigit():
            d = found["study_date"]
            found["study_date"] = f"{d[:4]}-{d[4:6]}-{d[6:]}"
        if found:
            return found
    return {}


def create_study(session: Session, instance_dir: Path, parts: Iterable[tuple[str, BinaryIO]], limits: UploadLimits,
                 user_id: int | None, label: str | None = None, show_identifiers: bool = False) -> Study:
    """Store an upload (checked by :func:`~strokescan.app.web.uploads.store_upload`) and queue its analysis.

    The client's file names are kept on disk, and the DICOM identifiers in the database, only with
    ``show_identifiers``. ``study.ignored`` (not stored) lists the files left out of a DICOM upload."""
    stored = store_upload(parts, instance_dir / UPLOADS, limits, keep_names=show_identifiers)
    if stored.kind != "dicom" and stored.n_files > 1:
        shutil.rmtree(stored.root, ignore_errors=True)
        raise UploadRejected(f"{stored.n_files} {stored.kind} files in one upload: send one image or NIfTI volume "
                             "per study (a DICOM series may have many files)", 400)
    identifiers = dicom_identifiers(stored) if show_identifiers and stored.kind == "dicom" else {}
    study = Study(label=label or "upload", kind=stored.kind, n_files=stored.n_files, uploaded_by=user_id,
                  upload_dir=str(stored.root.relative_to(instance_dir)),
                  analyse_path=str(stored.analyse_path.relative_to(instance_dir)), status=StudyStatus.QUEUED,
                  identifiers_json=json.dumps(identifiers, ensure_ascii=False) if identifiers else None)
    session.add(study)
    session.flush()
    if label is None:
        study.label = f"{KIND_NAMES[stored.kind]} upload {study.id}"
    study.ignored = stored.ignored  # type: ignore[attr-defined]
    return study


def worklist_query(status: str | None = None, flagged_only: bool = False, search: str | None = None,
                   show_identifiers: bool = False) -> Select:
    """Studies in worklist order: flagged findings first, then the rest; each group in arrival order. The search
    matches the label and kind, and with ``show_identifiers`` the patient name, ID and accession number too."""
    query = select(Study).order_by(case((Study.positive.is_(True), 0), else_=1), Study.created_at, Study.id)
    if status:
        query = query.where(Study.status == StudyStatus(status))
    if flagged_only:
        query = query.where(Study.positive.is_(True))
    if search:
        fields = [Study.label.ilike(f"%{search}%"), Study.kind.ilike(f"%{search}%")]
        if show_identifiers:
            fields.append(Study.identifiers_json.ilike(f"%{search}%"))
        query = query.where(or_(*fields))
    return query


def count_of(session: Session, query: Select) -> int:
    return session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))


def study_summary(study: Study, show_identifiers: bool = False) -> dict:
    """The study as the API lists it (status, headline findings; identifiers only with ``show_identifiers``)."""
    summary = {
        "id": study.id, "label": study.label, "kind": study.kind, "status": study.status.value,
        "error": study.error, "created_at": study.created_at.isoformat() + "Z",
        "started_at": study.started_at.isoformat() + "Z" if study.started_at else None,
        "finished_at": study.finished_at.isoformat() + "Z" if study.finished_at else None,
        "n_slices": study.n_slices, "probability": study.probability, "positive": study.positive,
        "operating_point": study.operating_point, "subtypes": study.subtypes, "clot_ml": study.clot_ml,
    }
    if show_identifiers:
        summary["identifiers"] = study.identifiers
    return summary


def study_folder(instance_dir: Path, study: Study) -> Path:
    return instance_dir / study.upload_dir / "view"


def delete_study(session: Session, instance_dir: Path, study: Study) -> None:
    """Remove a study, its feedback and its files (the audit trail keeps its events)."""
    folder = (instance_dir / study.upload_dir).resolve()
    session.execute(delete(Feedback).where(Feedback.study_id == study.id))
    session.delete(study)
    session.flush()
    if folder.is_relative_to((instance_dir / UPLOADS).resolve()):
        shutil.rmtree(folder, ignore_errors=True)


def expired_studies(session: Session, retention_days: int) -> list[Study]:
    """Finished studies that arrived more than ``retention_days`` ago (none when the setting is 0)."""
    if retention_days <= 0:
        return []
    cutoff = utcnow() - timedelta(days=retention_days)
    return list(session.scalars(select(Study).where(
        Study.created_at < cutoff, Study.status.in_([StudyStatus.DONE, StudyStatus.FAILED]))))
