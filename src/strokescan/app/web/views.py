"""The pages: log in (throttled) and out, password change, worklist (paged, refreshed live), study viewer,
upload, reader feedback (and its CSV export), and for admins the users, settings and study deletion. Every view
of patient content is audited (:mod:`~strokescan.app.web.audit`)."""

from __future__ import annotations

import csv
import io
import logging
import math
from functools import wraps

from flask import (Blueprint, Response, abort, current_app, flash, redirect, render_template, request, send_file,
                   session, url_for)
from flask_login import current_user, login_required, login_user, logout_user
from sqlalchemy import func, select

from strokescan.app.web.accounts import (AccountError, attempt_login, authenticate, create_user, end_session,
                                         end_sessions, find_user, revoke_tokens, set_password, start_session, unlock)
from strokescan.app.web.audit import record_request
from strokescan.app.web.db import ApiToken, Feedback, Setting, Study, StudyStatus, User, UserSession, utcnow
from strokescan.app.web.render import HEATMAP_OVERLAY, study_geometry, windows_for
from strokescan.app.web.studies import count_of, create_study, delete_study, study_folder, worklist_query
from strokescan.app.web.uploads import UploadRejected
from strokescan.core.labels import LESION_CLASSES, SUBTYPE_ABBREVIATIONS
from strokescan.errors import InputError
from strokescan.inference.ich_score import ich_score_measured

log = logging.getLogger(__name__)
bp = Blueprint("ui", __name__)
IMAGE_AUDIT_SECONDS = 60.0
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _ctx() -> dict:
    return current_app.extensions["strokescan"]


def _show_ids() -> bool:
    return bool(_ctx()["settings"].show_identifiers)


def error_page(status: int, message: str):
    return render_template("error.html", status=status, message=message), status


def _safe_next(target: str | None) -> str:
    """Only same-site relative targets after login (no open redirect)."""
    return target if target and target.startswith("/") and not target.startswith("//") else url_for("ui.worklist")


def admin_required(view):
    """Admins only: a reader gets 403."""
    @wraps(view)
    @login_required
    def wrapper(*args, **kwargs):
        if not current_user.is_admin:
            return error_page(403, "only an admin may do this")
        return view(*args, **kwargs)
    return wrapper


def _log_in(user: User) -> None:
    """A fresh server-side session for ``user`` (the old cookie's contents are dropped: no session fixation)."""
    session.clear()
    with _ctx()["sessions"].begin() as db:
        start_session(db, user)
    login_user(user)
    session.permanent = True  # the cookie expires with the session's absolute limit


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "POST":
        name = request.form.get("username", "")[:80]
        policy = _ctx()["settings"].policy
        with _ctx()["sessions"].begin() as db:
            outcome = attempt_login(db, name, request.form.get("password", ""), policy)
            known = (outcome.known.id, outcome.known.username) if outcome.known is not None else (None, None)
            user = outcome.user
        if outcome.locked_now:
            log.warning("login: %s locked for %d minutes", "a user" if known[0] else "an unknown user name",
                        policy.lockout.total_seconds() // 60)
            record_request("lockout", user_id=known[0], username=known[1],
                           detail=f"{policy.max_failures} wrong passwords in a row"
                                  + ("" if known[0] else "; unknown user name"))
        if outcome.locked_until is not None:
            if not outcome.locked_now:
                record_request("login_failed", user_id=known[0], username=known[1], detail="locked")
            minutes = max(1, math.ceil((outcome.locked_until - utcnow()).total_seconds() / 60))
            return render_template("login.html", error="too many failed logins with this name: try again in "
                                                       f"{minutes} minute{'s' if minutes > 1 else ''}"), 429
        if user is None:
            log.info("failed login")
            record_request("login_failed", user_id=known[0], username=known[1],
                           detail=None if known[0] else "unknown user name")
            return render_template("login.html", error="wrong user name or password"), 401
        _log_in(user)
        record_request("login", user_id=user.id, username=user.username)
        return redirect(_safe_next(request.args.get("next")))
    return render_template("login.html", error=None)


@bp.post("/logout")
@login_required
def logout():
    with _ctx()["sessions"].begin() as db:
        end_session(db, current_user.session_secret, "logout")
    record_request("logout")
    logout_user()
    session.clear()
    return redirect(url_for("ui.login"))


@bp.route("/account/password", methods=["GET", "POST"])
@login_required
def change_password():
    """A user changes their own password: every other session and every API token of theirs ends."""
    if request.method == "GET":
        return render_template("password.html", error=None)
    with _ctx()["sessions"].begin() as db:
        user = db.get(User, current_user.id)
        if authenticate(db, user.username, request.form.get("current", "")) is None:
            error = "the current password is wrong"
        elif request.form.get("new", "") != request.form.get("again", ""):
            error = "the new passwords differ"
        else:
            try:
                ended, tokens = set_password(db, user, request.form.get("new", ""))
                error = None
            except AccountError as exc:
                error = str(exc)
    if error:
        return render_template("password.html", error=error), 400
    record_request("password_changed", detail=f"{ended} sessions ended, {tokens} tokens revoked")
    _log_in(user)
    flash(f"Password changed: {ended} session(s) ended (log in again elsewhere), {tokens} API token(s) revoked.")
    return redirect(url_for("ui.worklist"))


def _page_args() -> tuple[int, int]:
    text = request.args.get("page") or "1"
    page = int(text) if text.isdigit() and len(text) < 7 else 1
    return max(page, 1), _ctx()["settings"].page_size


@bp.get("/")
@login_required
def worklist():
    status = request.args.get("status") or None
    if status and status not in {s.value for s in StudyStatus}:
        return error_page(400, f"unknown status {status!r}")
    flagged = request.args.get("flagged") == "1"
    search = (request.args.get("q") or "").strip()[:80] or None
    page, size = _page_args()
    query = worklist_query(status, flagged, search, _show_ids())
    with _ctx()["sessions"]() as db:
        total = count_of(db, query)
        pages = max(1, math.ceil(total / size))
        page = min(page, pages)
        studies = db.scalars(query.offset((page - 1) * size).limit(size)).all()
    record_request("view_worklist", detail=f"page {page}", once_per=IMAGE_AUDIT_SECONDS)
    template = "worklist_rows.html" if request.args.get("rows") == "1" else "worklist.html"
    return render_template(template, studies=studies, status=status, flagged=flagged, search=search or "",
                           statuses=[s.value for s in StudyStatus], abbreviations=SUBTYPE_ABBREVIATIONS,
                           page=page, pages=pages, total=total, show_identifiers=_show_ids())


@bp.get("/worklist/state")
@login_required
def worklist_state():
    """What the worklist's live refresh polls, as JSON: a fingerprint of the studies' states (the rows are redrawn
    when it changes) and the ids of the newest flagged studies (an id not seen before raises the alert)."""
    with _ctx()["sessions"]() as db:
        rows = db.execute(select(Study.id, Study.status, Study.positive)).all()
        flagged = db.scalars(select(Study.id).where(Study.positive.is_(True)).order_by(Study.id.desc()).limit(500)).all()
    fingerprint = f"{len(rows)}:" + str(hash(tuple(sorted((i, s.value, p) for i, s, p in rows))))
    return {"fingerprint": fingerprint,
            "flagged": [{"id": i, "url": url_for("ui.study", study_id=i)} for i in flagged]}


def _study_or_404(db, study_id: int) -> Study:
    study = db.get(Study, study_id)
    if study is None:
        abort(404)
    return study


@bp.get("/studies/<int:study_id>")
@login_required
def study(study_id: int, ich: dict | None = None, form: dict | None = None):
    with _ctx()["sessions"]() as db:
        study = _study_or_404(db, study_id)
        feedback = [(f.agrees, f.note, f.user.username, f.created_at) for f in study.feedback]
    record_request("view_study", study_id=study_id)
    result = study.result
    windows = windows_for(study_geometry(study_folder(_ctx()["settings"].instance_dir, study))["is_hu"]) if result else []
    explained = [i for i, s in enumerate(result["slices"]) if s.get("explanation")] if result else []
    return render_template("study.html", study=study, result=result, feedback=feedback, windows=windows,
                           classes=LESION_CLASSES, explained=explained, ich=ich, form=form or {},
                           abbreviations=SUBTYPE_ABBREVIATIONS, show_identifiers=_show_ids())


def _form_int(name: str) -> int | None:
    text = (request.form.get(name) or "").strip()
    if not text:
        return None
    if not text.isdigit() or len(text) > 6:
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
    with _ctx()["sessions"]() as db:
        found = _study_or_404(db, study_id)
        result, measured = found.result, found.clot_ml  # clot_ml: None unless segmented with a known spacing
    if not result:
        return error_page(409, "the study has no result yet")
    try:
        text = (request.form.get("volume_ml") or "").strip()
        volume = float(text) if text else None
        if volume is not None and not math.isfinite(volume):
            raise ValueError(text)
        score = ich_score_measured(measured, bool(result["scan"]["positive"]), _form_int("gcs"), _form_int("age"),
                                   _form_yes_no("ivh"), _form_yes_no("infratentorial"), volume)
    except ValueError:
        return error_page(400, "volume_ml: expected a number of mL")
    except InputError as exc:
        return error_page(400, str(exc))
    form = {k: (request.form.get(k) or "")[:20] for k in ("gcs", "age", "ivh", "infratentorial", "volume_ml")}
    return study(study_id, ich=score.to_dict(), form=form)  # the inputs stay filled in


def _png(study_id: int, kind: str, *parts: str) -> Response:
    with _ctx()["sessions"]() as db:
        study = _study_or_404(db, study_id)
    folder = study_folder(_ctx()["settings"].instance_dir, study)
    path = folder.joinpath(*parts)
    if not path.resolve().is_relative_to(folder.resolve()) or not path.is_file():
        abort(404)
    record_request("view_image", study_id=study_id, detail=kind, once_per=IMAGE_AUDIT_SECONDS)
    return send_file(path, mimetype="image/png", max_age=0)  # Cache-Control: no-store (server.py)


@bp.get("/studies/<int:study_id>/slices/<window>/<int:index>.png")
@login_required
def slice_png(study_id: int, window: str, index: int):
    if window not in {"brain", "subdural", "stroke", "bone", "stored"}:
        abort(404)
    return _png(study_id, f"slices {window}", "slices", window, f"{index}.png")


@bp.get("/studies/<int:study_id>/overlays/<name>/<int:index>.png")
@login_required
def overlay_png(study_id: int, name: str, index: int):
    if name not in {c.label for c in LESION_CLASSES} | {HEATMAP_OVERLAY}:
        abort(404)  # a heat map exists for explained slices only: the others are 404 too
    return _png(study_id, f"overlay {name}", "overlays", name, f"{index}.png")


@bp.post("/studies/<int:study_id>/feedback")
@login_required
def feedback(study_id: int):
    verdict = request.form.get("verdict")
    if verdict not in {"agree", "disagree"}:
        return error_page(400, "feedback needs 'agree' or 'disagree'")
    note = (request.form.get("note") or "").strip()[:2000]
    with _ctx()["sessions"].begin() as db:
        _study_or_404(db, study_id)
        db.add(Feedback(study_id=study_id, user_id=current_user.id, agrees=verdict == "agree", note=note))
    record_request("feedback", study_id=study_id, detail=verdict)
    flash("Thank you: your reading is saved.")
    return redirect(url_for("ui.study", study_id=study_id))


def csv_safe(value: object) -> object:
    """A cell a spreadsheet shows as text: one starting with = + - @ (or a tab or CR) gets a leading quote."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


@bp.get("/feedback.csv")
@login_required
def feedback_csv():
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["study_id", "study_label", "model_positive", "model_probability", "reader", "agrees", "note",
                     "created_at"])
    n = 0
    with _ctx()["sessions"]() as db:
        for f in db.scalars(select(Feedback).order_by(Feedback.created_at)):
            writer.writerow([csv_safe(v) for v in (f.study_id, f.study.label, f.study.positive, f.study.probability,
                                                   f.user.username, f.agrees, f.note, f.created_at.isoformat() + "Z")])
            n += 1
    record_request("export", detail=f"feedback.csv, {n} rows")
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
        with _ctx()["sessions"].begin() as db:
            study = create_study(db, _ctx()["settings"].instance_dir,
                                 ((f.filename or "", f.stream) for f in files), _ctx()["settings"].limits,
                                 current_user.id, show_identifiers=_show_ids())
            study_id, ignored, n_files = study.id, study.ignored, study.n_files
    except UploadRejected as error:
        if wants_json:
            return {"error": str(error)}, error.status
        return render_template("upload.html", limits=_ctx()["settings"].limits, error=str(error)), error.status
    log.info("study %d: uploaded", study_id)
    record_request("upload", study_id=study_id, detail=f"{n_files} files, {len(ignored)} ignored")
    target = url_for("ui.study", study_id=study_id)
    if ignored:
        flash(f"{len(ignored)} file(s) of no known kind were left out: {', '.join(ignored[:20])}"
              + (" ..." if len(ignored) > 20 else ""))
    return ({"id": study_id, "url": target, "ignored": ignored}, 202) if wants_json else redirect(target)


@bp.get("/studies/<int:study_id>/status")
@login_required
def status(study_id: int):
    with _ctx()["sessions"]() as db:
        study = _study_or_404(db, study_id)
        answer = {"status": study.status.value, "error": study.error}
    record_request("view_study", study_id=study_id, detail="status", once_per=IMAGE_AUDIT_SECONDS)
    return answer


# ------------------------------------------------------------------------------------------- admin


@bp.post("/studies/<int:study_id>/delete")
@admin_required
def delete(study_id: int):
    with _ctx()["sessions"].begin() as db:
        study = _study_or_404(db, study_id)
        if study.status == StudyStatus.RUNNING:
            return error_page(409, "the study is being analysed: delete it when it is done")
        delete_study(db, _ctx()["settings"].instance_dir, study)
    record_request("delete", study_id=study_id)
    flash(f"Study {study_id} deleted.")
    return redirect(url_for("ui.worklist"))


@bp.get("/admin/users")
@admin_required
def users():
    now = utcnow()
    with _ctx()["sessions"]() as db:
        rows = []
        for u in db.scalars(select(User).order_by(User.username)):
            live = db.scalar(select(func.count()).select_from(UserSession).where(
                UserSession.user_id == u.id, UserSession.ended_at.is_(None)))
            tokens = [t for t in db.scalars(select(ApiToken).where(ApiToken.user_id == u.id)) if t.state(now) == "active"]
            rows.append({"name": u.username, "role": u.role, "sessions": live, "tokens": len(tokens),
                         "locked": bool(u.locked_until and u.locked_until > now)})
        retention = db.get(Setting, "retention_days")
    days = int(retention.value) if retention else _ctx()["settings"].retention_days
    return render_template("admin.html", users=rows, retention_days=days)


@bp.post("/admin/users")
@admin_required
def user_action():
    """Make a user, change a role, unlock, end sessions, revoke tokens (each audited)."""
    action, name = request.form.get("action", ""), (request.form.get("username") or "")[:80]
    try:
        with _ctx()["sessions"].begin() as db:
            if action == "create":
                user = create_user(db, name, request.form.get("password", ""), request.form.get("role") == "admin")
                detail = f"created {name} ({user.role})"
            else:
                user = find_user(db, name)
                if action == "role":
                    role = request.form.get("role")
                    if role not in {"admin", "reader"}:
                        raise AccountError("a role is admin or reader")
                    if user.id == current_user.id and role != "admin":
                        raise AccountError("an admin cannot take their own admin role")
                    user.is_admin = role == "admin"
                    detail = f"{name} is {role}"
                elif action == "unlock":
                    unlock(db, user)
                    detail = f"{name} unlocked"
                elif action == "end-sessions":
                    detail = f"{name}: {end_sessions(db, user.id, 'admin')} sessions ended"
                elif action == "revoke-tokens":
                    detail = f"{name}: {revoke_tokens(db, user.id)} tokens revoked"
                else:
                    raise AccountError(f"unknown action {action[:20]!r}")
    except AccountError as exc:
        return error_page(400, str(exc))
    record_request("user_created" if action == "create" else "user_changed", detail=detail)
    flash(detail)
    return redirect(url_for("ui.users"))


@bp.post("/admin/settings")
@admin_required
def settings():
    text = (request.form.get("retention_days") or "").strip()
    if not text.isdigit() or int(text) > 36500:
        return error_page(400, "retention_days: a whole number of days (0 keeps studies)")
    with _ctx()["sessions"].begin() as db:
        row = db.get(Setting, "retention_days")
        if row is None:
            db.add(Setting(key="retention_days", value=str(int(text))))
        else:
            row.value = str(int(text))
    record_request("settings_changed", detail=f"retention_days={int(text)}")
    flash(f"Retention: {int(text)} days" if int(text) else "Retention: studies are kept until deleted")
    return redirect(url_for("ui.users"))
