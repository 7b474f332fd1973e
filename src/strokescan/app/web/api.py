"""The REST API under ``/api/v1``: bearer-token authentication, studies made by upload (202 + id), their status,
the result (the one result schema, docs/results.md), masks as PNG and NIfTI, reader feedback; described by
``/api/v1/openapi.json``. Errors are JSON ``{"error": "..."}`` with a 4xx status."""

from __future__ import annotations

import logging
from functools import wraps
from pathlib import Path

from flask import Blueprint, Response, current_app, g, jsonify, request, url_for
from sqlalchemy import select

from strokescan.app.web.accounts import user_for_token
from strokescan.app.web.db import Feedback, Study, StudyStatus
from strokescan.app.web.openapi import OPENAPI
from strokescan.app.web.render import mask_png, masks_nifti, study_geometry
from strokescan.app.web.studies import create_study, study_folder, study_summary, worklist_query
from strokescan.app.web.uploads import UploadRejected

log = logging.getLogger(__name__)
bp = Blueprint("api", __name__)


def _ctx() -> dict:
    return current_app.extensions["strokescan"]


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify(error=message), status


@bp.record_once
def _exempt_from_csrf(state) -> None:
    """Token-authenticated requests carry no cookie a third-party site could ride on: no CSRF token needed."""
    state.app.extensions["csrf"].exempt(bp)


def token_required(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return _error(401, "send 'Authorization: Bearer <token>' (make one with 'strokescan web token USER')")
        with _ctx()["sessions"]() as session:
            user = user_for_token(session, header.removeprefix("Bearer ").strip())
            if user is None:
                return _error(401, "unknown or revoked token")
            g.api_user_id = user.id
        return view(*args, **kwargs)
    return wrapper


def _study(session, study_id: int) -> Study | None:
    return session.get(Study, study_id)


@bp.get("/openapi.json")
def openapi():
    return jsonify(OPENAPI)


@bp.post("/studies")
@token_required
def create():
    files = request.files.getlist("files")
    try:
        with _ctx()["sessions"].begin() as session:
            study = create_study(session, _ctx()["settings"].instance_dir,
                                 ((f.filename or "", f.stream) for f in files), _ctx()["settings"].limits,
                                 g.api_user_id)
            summary = study_summary(study)
    except UploadRejected as error:
        return _error(error.status, str(error))
    log.info("study %d: uploaded through the API", summary["id"])
    response = jsonify({**summary, "links": _links(summary["id"])})
    response.headers["Location"] = url_for("api.get_study", study_id=summary["id"])
    return response, 202


def _links(study_id: int) -> dict:
    return {"self": url_for("api.get_study", study_id=study_id), "result": url_for("api.result", study_id=study_id),
            "viewer": url_for("ui.study", study_id=study_id)}


@bp.get("/studies")
@token_required
def list_studies():
    status = request.args.get("status")
    if status and status not in {s.value for s in StudyStatus}:
        return _error(400, f"unknown status {status!r}; one of {', '.join(s.value for s in StudyStatus)}")
    with _ctx()["sessions"]() as session:
        studies = session.scalars(worklist_query(status, request.args.get("flagged") == "1")).all()
        return jsonify(studies=[study_summary(s) for s in studies])


@bp.get("/studies/<int:study_id>")
@token_required
def get_study(study_id: int):
    with _ctx()["sessions"]() as session:
        study = _study(session, study_id)
        if study is None:
            return _error(404, f"no study {study_id}")
        return jsonify({**study_summary(study), "links": _links(study_id)})


def _done_study(study_id: int) -> tuple[Study | None, tuple | None]:
    with _ctx()["sessions"]() as session:
        study = _study(session, study_id)
    if study is None:
        return None, _error(404, f"no study {study_id}")
    if study.status != StudyStatus.DONE:
        return None, _error(409, f"study {study_id} is {study.status.value}" + (f": {study.error}" if study.error else ""))
    return study, None


@bp.get("/studies/<int:study_id>/result")
@token_required
def result(study_id: int):
    study, problem = _done_study(study_id)
    return problem or jsonify(study.result)


def _masks_folder(study_id: int) -> tuple[Study | None, Path | None, tuple | None]:
    """The done study and its view folder holding masks, or the API's error answer."""
    study, problem = _done_study(study_id)
    if problem:
        return None, None, problem
    folder = study_folder(_ctx()["settings"].instance_dir, study)
    if not (folder / "masks.npz").exists():
        return None, None, _error(404, "this study has no masks")
    return study, folder, None


@bp.get("/studies/<int:study_id>/masks/<int:index>.png")
@token_required
def mask(study_id: int, index: int):
    study, folder, problem = _masks_folder(study_id)
    if problem:
        return problem
    try:
        return Response(mask_png(folder, index), mimetype="image/png")
    except IndexError:
        return _error(404, f"no slice {index} (the study has {study.n_slices})")


@bp.get("/studies/<int:study_id>/masks.nii.gz")
@token_required
def mask_volume(study_id: int):
    _study, folder, problem = _masks_folder(study_id)
    if problem:
        return problem
    geometry = study_geometry(folder)
    spacing = geometry["pixel_spacing_mm"]
    data = masks_nifti(folder, tuple(spacing) if spacing else None, geometry["slice_mm"])
    return Response(data, mimetype="application/gzip",
                    headers={"Content-Disposition": f"attachment; filename=study-{study_id}-masks.nii.gz"})


@bp.post("/studies/<int:study_id>/feedback")
@token_required
def feedback(study_id: int):
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("agrees"), bool):
        return _error(400, 'send JSON {"agrees": true|false, "note": "..."}')
    note = body.get("note", "")
    if not isinstance(note, str) or len(note) > 2000:
        return _error(400, "note: a string of at most 2000 characters")
    with _ctx()["sessions"].begin() as session:
        if _study(session, study_id) is None:
            return _error(404, f"no study {study_id}")
        row = Feedback(study_id=study_id, user_id=g.api_user_id, agrees=body["agrees"], note=note)
        session.add(row)
        session.flush()
        return jsonify(id=row.id, study_id=study_id, agrees=row.agrees, note=row.note), 201


@bp.get("/feedback")
@token_required
def list_feedback():
    with _ctx()["sessions"]() as session:
        rows = session.scalars(select(Feedback).order_by(Feedback.created_at)).all()
        return jsonify(feedback=[{"id": f.id, "study_id": f.study_id, "reader": f.user.username, "agrees": f.agrees,
                                  "note": f.note, "created_at": f.created_at.isoformat() + "Z"} for f in rows])


@bp.errorhandler(404)
def _not_found(_error):
    return _error(404, "no such resource")


@bp.errorhandler(405)
def _not_allowed(_error):
    return _error(405, "method not allowed here")
