"""The pages: log in, worklist, study viewer, upload, reader feedback (and its CSV export)."""

from __future__ import annotations

import csv
import io
import logging


from flask import (Blueprint, Response, abort, current_app, flash, redirect, render_template, request, send_file,
                   url_for)
from flask_login import current_user, login_required, login_user, logout_user
from sqlalchemy import select

from strokescan.app.web.accounts import authenticate
from strokescan.app.web.db import Feedback, Study, StudyStatus
from strokescan.app.web.render import HEATMAP_OVERLAY, study_geometry, windows_for
from strokescan.app.web.studies import create_study, study_folder, worklist_query
from strokescan.app.web.uploads import UploadRejected
from strokescan.core.labels import LESION_CLASSES, SUBTYPE_ABBREVIATIONS
from strokescan.errors import InputError
from strokescan.inference.ich_score import ich_score_measured

log = logging.getLogger(__name__)
bp = Blueprint("ui", __name__)


def _ctx() -> dict:
    return current_app.extensions["strokescan"]


def error_page(status: int, message: str):
    return render_template("error.html", status=status, message=message), status


def _safe_next(target: str | None) -> str:
    """Only same-site relative targets after login (no open redirect)."""
    return target if target and target.startswith("/") and not target.startswith("//") else url_for("ui.worklist")


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "POST":
        with _ctx()["sessions"]() as session:
            user = authenticate(session, request.form.get("username", ""), request.form.get("password", ""))
        if user is None:
            log.info("failed login")
            return render_template("login.html", error="wrong user name or password"), 401
        login_user(user)
        return redirect(_safe_next(request.args.get("next")))
    return render_template("login.html", error=None)


@bp.post("/logout")
@login_required
def logout():
    logout_user()
    return redirect(url_for("ui.login"))


@bp.get("/")
@login_required
def worklist():
    status = request.args.get("status") or None
    if status and status not in {s.value for s in StudyStatus}:
        return error_page(400, f"unknown status {status!r}")
    flagged = request.args.get("flagged") == "1"
    search = (request.args.get("q") or "").strip()[:80] or None
    with _ctx()["sessions"]() as session:
        studies = session.scalars(worklist_query(status, flagged, search)).all()
    return render_template("worklist.html", studies=studies, status=status, flagged=flagged, search=search or "",
                           statuses=[s.value for s in StudyStatus], abbreviations=SUBTYPE_ABBREVIATIONS)


def _study_or_404(session, study_id: int) -> Study:
    study = session.get(Study, study_id)
    if study is None:
        abort(404)
    return study


@bp.get("/studies/<int:study_id>")
@login_required
def study(study_id: int, ich: dict | None = None):
    with _ctx()["sessions"]() as session:
        study = _study_or_404(session, study_id)
        feedback = [(f.agrees, f.note, f.user.username, f.created_at) for f in study.feedback]
    result = study.result
    windows = windows_for(study_geometry(study_folder(_ctx()["settings"].instance_dir, study))["is_hu"]) if result else []
    explained = [i for i, s in enumerate(result["slices"]) if s.get("explanation")] if result else []
    return render_template("study.html", study=study, result=result, feedback=feedback, windows=windows,
                           classes=LESION_CLASSES, explained=explained, ich=ich,
                           abbreviations=SUBTYPE_ABBREVIATIONS)


def _form_int(name: str) -> int | None:
    text = (request.form.get(name) or "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise InputError(f"{name}: expected a whole number, got {text[:20]!r}")
    return int(text)


def _form_yes_no(name: str) -> bool | None:
    text = request.form.get(name) or ""
    if text not in {"", "yes", "no"}:
        raise InputError(f"{name}: expected yes, no or blank")
    return None if not text else text == "yes"


@bp.post("/studies/<int:study_id>/ich-score")
@login_required
def ich_score(study_id: int):
    """The ICH score from the form and this study's clot volume; computed for the page, never stored."""
    with _ctx()["sessions"]() as session:
        found = _study_or_404(session, study_id)
        result, measured = found.result, found.clot_ml  # clot_ml: None unless segmented with a known spacing
    if not result:
        return error_page(409, "the study has no result yet")
    try:
        text = (request.form.get("volume_ml") or "").strip()
        volume = float(text) if text else None
        score = ich_score_measured(measured, bool(result["scan"]["positive"]), _form_int("gcs"), _form_int("age"),
                                   _form_yes_no("ivh"), _form_yes_no("infratentorial"), volume)
    except ValueError:
        return error_page(400, "volume_ml: expected a number of mL")
    except InputError as exc:
        return error_page(400, str(exc))
    return study(study_id, ich=score.to_dict())


def _cached_png(study_id: int, *parts: str) -> Response:
    with _ctx()["sessions"]() as session:
        study = _study_or_404(session, study_id)
    folder = study_folder(_ctx()["settings"].instance_dir, study)
    path = folder.joinpath(*parts)
    if not path.resolve().is_relative_to(folder.resolve()) or not path.is_file():
        abort(404)
    response = send_file(path, mimetype="image/png", max_age=3600)
    response.cache_control.public = False
    response.cache_control.private = True  # a patient's images: never in a shared cache
    return response


@bp.get("/studies/<int:study_id>/slices/<window>/<int:index>.png")
@login_required
def slice_png(study_id: int, window: str, index: int):
    if window not in {"brain", "subdural", "stroke", "bone", "stored"}:
        abort(404)
    return _cached_png(study_id, "slices", window, f"{index}.png")


@bp.get("/studies/<int:study_id>/overlays/<name>/<int:index>.png")
@login_required
def overlay_png(study_id: int, name: str, index: int):
    if name not in {c.label for c in LESION_CLASSES} | {HEATMAP_OVERLAY}:
        abort(404)  # a heat map exists for explained slices only: the others are 404 too
    return _cached_png(study_id, "overlays", name, f"{index}.png")


@bp.post("/studies/<int:study_id>/feedback")
@login_required
def feedback(study_id: int):
    verdict = request.form.get("verdict")
    if verdict not in {"agree", "disagree"}:
        return error_page(400, "feedback needs 'agree' or 'disagree'")
    note = (request.form.get("note") or "").strip()[:2000]
    with _ctx()["sessions"].begin() as session:
        _study_or_404(session, study_id)
        session.add(Feedback(study_id=study_id, user_id=current_user.id, agrees=verdict == "agree", note=note))
    flash("Thank you: your reading is saved.")
    return redirect(url_for("ui.study", study_id=study_id))


@bp.get("/feedback.csv")
@login_required
def feedback_csv():
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["study_id", "study_label", "model_positive", "model_probability", "reader", "agrees", "note",
                     "created_at"])
    with _ctx()["sessions"]() as session:
        for f in session.scalars(select(Feedback).order_by(Feedback.created_at)):
            writer.writerow([f.study_id, f.study.label, f.study.positive, f.study.probability, f.user.username,
                             f.agrees, f.note, f.created_at.isoformat() + "Z"])
    return Response(out.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": "attachment; filename=strokescan-feedback.csv"})


@bp.route("/upload", methods=["GET", "POST"])
@login_required
def upload():
    if request.method == "GET":
        return render_template("upload.html", limits=_ctx()["settings"].limits)
    wants_json = request.accept_mimetypes.best == "application/json"
    files = request.files.getlist("files")
    try:
        with _ctx()["sessions"].begin() as session:
            study = create_study(session, _ctx()["settings"].instance_dir,
                                 ((f.filename or "", f.stream) for f in files), _ctx()["settings"].limits,
                                 current_user.id)
            study_id = study.id
    except UploadRejected as error:
        if wants_json:
            return {"error": str(error)}, error.status
        return render_template("upload.html", limits=_ctx()["settings"].limits, error=str(error)), error.status
    log.info("study %d: uploaded", study_id)
    target = url_for("ui.study", study_id=study_id)
    return ({"id": study_id, "url": target}, 202) if wants_json else redirect(target)


@bp.get("/studies/<int:study_id>/status")
@login_required
def status(study_id: int):
    with _ctx()["sessions"]() as session:
        study = _study_or_404(session, study_id)
        return {"status": study.status.value, "error": study.error}
