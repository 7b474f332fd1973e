"""The Flask application factory: settings, database, server-side login sessions, CSRF, security and no-store
headers, the request body limit, the job worker (with the retention purge), and the two blueprints (pages in
:mod:`~strokescan.app.web.views`, the REST API in :mod:`~strokescan.app.web.api`)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from flask import Flask, abort, jsonify, request
from flask_login import LoginManager
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy.orm import sessionmaker
from werkzeug.routing import IntegerConverter

from strokescan import __version__
from strokescan.app.web import api, views
from strokescan.app.web.accounts import AccessPolicy, user_for_session
from strokescan.app.web.audit import record
from strokescan.app.web.db import Setting, User, make_engine, session_factory, upgrade_database
from strokescan.app.web.jobs import JobWorker, requeue_interrupted
from strokescan.app.web.studies import delete_study, expired_studies
from strokescan.app.web.uploads import UploadLimits
from strokescan.config import database_url, show_identifiers, web_access, web_root
from strokescan.inference import Predictor

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


@dataclass
class WebSettings:
    """Everything the web app is configured with (defaults from :mod:`strokescan.config`)."""

    instance_dir: Path = field(default_factory=web_root)
    database_url: str | None = None  # default: SQLite in instance_dir (or $STROKESCAN_DATABASE_URL)
    show_identifiers: bool = field(default_factory=show_identifiers)
    limits: UploadLimits = field(default_factory=UploadLimits)
    start_worker: bool = True
    predictor_factory: Callable[[], Predictor] = lambda: Predictor(segment=True)
    secure_cookies: bool = False  # True behind HTTPS
    policy: AccessPolicy = field(default_factory=lambda: AccessPolicy.from_config(web_access()))
    page_size: int = field(default_factory=lambda: web_access()["worklist_page_size"])
    retention_days: int = field(default_factory=lambda: web_access()["retention_days"])  # an admin may change it
    housekeeping_seconds: float = 3600.0  # how often the worker purges studies past the retention

    def url(self) -> str:
        return self.database_url or (database_url() if self.instance_dir == web_root()
                                     else f"sqlite:///{self.instance_dir / 'strokescan.db'}")


def _secret_key(instance_dir: Path) -> str:
    """A random key made once per instance and kept in ``secret_key`` (mode 0600)."""
    path = instance_dir / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


class StudyId(IntegerConverter):
    """Ids in URLs: whole numbers a database integer holds; a larger one is no such page (404), never a 500."""

    def __init__(self, map, *args, **kwargs) -> None:  # noqa: A002 - werkzeug's name
        kwargs.setdefault("max", 2**63 - 1)
        super().__init__(map, *args, **kwargs)


def retention_days(app: Flask) -> int:
    """The admin's retention setting (days; 0 keeps studies), else the configured default."""
    ctx = app.extensions["strokescan"]
    with ctx["sessions"]() as session:
        row = session.get(Setting, "retention_days")
    return int(row.value) if row is not None else ctx["settings"].retention_days


def purge_expired(app: Flask) -> int:
    """Delete finished studies older than the retention; each deletion audited. Returns how many."""
    ctx = app.extensions["strokescan"]
    days = retention_days(app)
    with ctx["sessions"].begin() as session:
        studies = expired_studies(session, days)
        ids = [s.id for s in studies]
        for study in studies:
            delete_study(session, ctx["settings"].instance_dir, study)
    for study_id in ids:
        record(ctx["sessions"], "retention_purge", study_id=study_id, via="worker",
               detail=f"older than {days} days")
    if ids:
        log.info("retention: %d studies older than %d days deleted", len(ids), days)
    return len(ids)


def create_app(settings: WebSettings | None = None) -> Flask:
    """The web app: database upgraded to the newest schema, studies left running requeued, worker started."""
    settings = settings or WebSettings()
    settings.instance_dir.mkdir(parents=True, exist_ok=True)
    settings.instance_dir.chmod(0o700)
    url = settings.url()
    upgrade_database(url)
    engine = make_engine(url)
    sessions: sessionmaker = session_factory(engine)
    app = Flask(__name__)
    app.url_map.converters["int"] = StudyId
    app.config.update(
        SECRET_KEY=_secret_key(settings.instance_dir),
        MAX_CONTENT_LENGTH=settings.limits.max_total_bytes + (1 << 20),
        SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax", SESSION_COOKIE_SECURE=settings.secure_cookies,
        REMEMBER_COOKIE_HTTPONLY=True, WTF_CSRF_TIME_LIMIT=None,
        PERMANENT_SESSION_LIFETIME=settings.policy.session_max,
    )
    app.extensions["strokescan"] = {"settings": settings, "sessions": sessions, "engine": engine}

    @app.before_request
    def _body_limit():
        """Refuse a body over the limit from its Content-Length, before anything reads it."""
        if request.content_length is not None and request.content_length > app.config["MAX_CONTENT_LENGTH"]:
            abort(413)

    CSRFProtect(app)
    login = LoginManager(app)
    login.login_view = "ui.login"
    login.login_message = "Please log in."
    login.session_protection = "basic"

    @login.user_loader
    def _load_user(secret: str) -> User | None:
        """The user of a live server-side session (the cookie holds its secret); None sends them to log in."""
        with sessions() as session:
            return user_for_session(session, secret, settings.policy)

    app.register_blueprint(views.bp)
    app.register_blueprint(api.bp, url_prefix="/api/v1")

    @app.after_request
    def _headers(response):
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        if not request.path.startswith("/static/"):  # pages, images, CSV, API: patient content, never cached
            response.headers["Cache-Control"] = "private, no-store"
            response.headers.pop("Expires", None)
        return response

    @app.errorhandler(CSRFError)
    def _csrf(error):
        return views.error_page(400, f"the form expired or came from elsewhere ({error.description}); reload the page")

    @app.errorhandler(413)
    def _too_large(_error):
        message = f"the upload is over the {settings.limits.max_total_bytes >> 20} MiB limit"
        wants_json = request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"
        return (jsonify(error=message), 413) if wants_json else views.error_page(413, message)

    @app.errorhandler(404)
    def _not_found(_error):
        if request.path.startswith("/api/"):
            return jsonify(error="no such resource"), 404
        return views.error_page(404, "no such page")

    @app.errorhandler(405)
    def _not_allowed(_error):
        if request.path.startswith("/api/"):
            return jsonify(error="method not allowed here"), 405
        return views.error_page(405, "method not allowed here")

    @app.errorhandler(500)
    def _internal(_error):
        log.error("internal error on %s %s", request.method, request.path)
        if request.path.startswith("/api/"):
            return jsonify(error="internal error"), 500
        return views.error_page(500, "internal error")

    @app.context_processor
    def _version() -> dict:
        return {"strokescan_version": __version__}

    if settings.start_worker:  # the embedded worker is the only one: what is running was interrupted
        requeued = requeue_interrupted(sessions)
        if requeued:
            log.info("%d interrupted analyses queued again", requeued)
        worker = JobWorker(sessions, settings.instance_dir, settings.predictor_factory, settings.show_identifiers,
                           housekeeping=lambda: purge_expired(app),
                           housekeeping_seconds=settings.housekeeping_seconds)
        worker.start()
        app.extensions["strokescan"]["worker"] = worker
    return app
