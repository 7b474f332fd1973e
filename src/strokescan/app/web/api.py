"""The REST API under ``/api/v1``: bearer-token authentication (revocable, expiring tokens; every use audited),
studies made by upload (202 + id), their status, the result (the one result schema, docs/results.md), masks as
PNG and NIfTI, reader feedback, deletion (admins); described by ``/api/v1/openapi.json``. Errors are JSON
``{"error": "..."}`` with a 4xx status."""

from __future__ import annotations

import logging
from functools import wraps
from pathlib import Path

from flask import Blueprint, Response, current_app, g, jsonify, request, url_for
from sqlalchemy import select

from strokescan.app.web.accounts import token_row
from strokescan.app.web.audit import record, record_request
from strokescan.app.web.db import Feedback, Study, StudyStatus, utcnow
from strokescan.app.web.openapi import OPENAPI
from strokescan.app.web.render import mask_png, masks_nifti, study_geometry
from strokescan.app.web.studies import (count_of, create_study, delete_study, study_folder, study_summary,
                                        worklist_query)
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


def _show_ids() -> bool:
    return bool(_ctx()["settings"].show_identifiers)


def token_required(view):
    """A live token (neither revoked nor expired) or 401; the use is recorded on the token and audited."""
    @wraps(view)
    def wrapper(*args, **kwargs):
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return _error(401, "send 'Authorization: Bearer <token>' (make one with 'strokescan web token USER')")
        now = utcnow()
        with _ctx()["sessions"].begin() as session:
            row = token_row(session, header.removeprefix("Bearer ").strip()[:200])
            state = row.state(now) if row is not None else "unknown"
            if state == "active":
                row.last_used_at = now
                g.api_user, g.api_user_id, g.api_token_id = row.user, row.user_id, row.id
            refused = (row.user_id, row.user.username, row.id) if row is not None and state != "active" else None
        if state != "active":
            if refused:
                record(_ctx()["sessions"], "token_refused", user_id=refused[0], username=refused[1], via="api",
                       token_id=refused[2], remote_addr=request.remote_addr, detail=f"{state} token")
            return _error(401, "unknown or revoked token" if state != "expired" else "this token has expired")
        record_request("token_use", study_id=kwargs.get("study_id"), detail=f"{request.method} {request.path}"[:200])
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
                                 g.api_user_id, show_identifiers=_show_ids())
            summary = study_summary(study, _show_ids())
            ignored, n_files = study.ignored, study.n_files
    except UploadRejected as error:
        return _error(error.status, str(error))
    log.info("study %d: uploaded through the API", summary["id"])
    record_request("upload", study_id=summary["id"], detail=f"{n_files} files, {len(ignored)} ignored")
    response = jsonify({**summary, "links": _links(summary["id"]), "ignored": ignored})
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
    limit, offset = request.args.get("limit") or "100", request.args.get("offset") or "0"
    if not (limit.isdigit() and offset.isdigit() and len(offset) < 10 and 1 <= int(limit) <= 1000):
        return _error(400, "limit: 1 to 1000; offset: a whole number")
    query = worklist_query(status, request.args.get("flagged") == "1")
    with _ctx()["sessions"]() as session:
        total = count_of(session, query)
        studies = session.scalars(query.offset(int(offset)).limit(int(limit))).all()
        listed = [study_summary(s, _show_ids()) for s in studies]
    record_request("view_worklist", detail=f"{len(listed)} studies")
    return jsonify(studies=listed, total=total, offset=int(offset), limit=int(limit))


@bp.get("/studies/<int:study_id>")
@token_required
def get_study(study_id: int):
    with _ctx()["sessions"]() as session:
        study = _study(session, study_id)
        if study is None:
            return _error(404, f"no study {study_id}")
        answer = {**study_summary(study, _show_ids()), "links": _links(study_id)}
    record_request("view_study", study_id=study_id)
    return jsonify(answer)


@bp.delete("/studies/<int:study_id>")
@token_required
def delete(study_id: int):
    if not g.api_user.is_admin:
        return _error(403, "only an admin may delete a study")
    with _ctx()["sessions"].begin() as session:
        study = _study(session, study_id)
        if study is None:
            return _error(404, f"no study {study_id}")
        if study.status == StudyStatus.RUNNING:
            return _error(409, f"study {study_id} is being analysed: delete it when it is done")
        delete_study(session, _ctx()["settings"].instance_dir, study)
    record_request("delete", study_id=study_id)
    return Response(status=204)


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
    if problem:
        return problem
    record_request("view_result", study_id=study_id)
    return jsonify(study.result)


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
        data = mask_png(folder, index)
        record_request("view_mask", study_id=study_id, detail=f"slice {index}")
        return Response(data, mimetype="image/png")
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
    record_request("export", study_id=study_id, detail="masks.nii.gz")
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
        answer = {"id": row.id, "study_id": study_id, "agrees": row.agrees, "note": row.note}
    record_request("feedback", study_id=study_id, detail="agree" if answer["agrees"] else "disagree")
    return jsonify(answer), 201


@bp.get("/feedback")
@token_required
def list_feedback():
    with _ctx()["sessions"]() as session:
        rows = session.scalars(select(Feedback).order_by(Feedback.created_at)).all()
        listed = [{"id": f.id, "study_id": f.study_id, "reader": f.user.username, "agrees": f.agrees,
                   "note": f.note, "created_at": f.created_at.isoformat() + "Z"} for f in rows]
    record_request("export", detail=f"feedback, {len(listed)} rows")
    return jsonify(feedback=listed)


@bp.errorhandler(404)
def _not_found(_error):
    return _error(404, "no such resource")


@bp.errorhandler(405)
def _not_allowed(_error):
    return _error(405, "method not allowed here")
