"""The Flask application factory: settings, database, login, CSRF, security headers, the job worker, and the
two blueprints (pages in :mod:`~strokescan.app.web.views`, the REST API in :mod:`~strokescan.app.web.api`)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from flask import Flask, jsonify, request
from flask_login import LoginManager
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy.orm import sessionmaker

from strokescan import __version__
from strokescan.app.web import api, views
from strokescan.app.web.db import User, make_engine, session_factory, upgrade_database
from strokescan.app.web.jobs import JobWorker, requeue_interrupted
from strokescan.app.web.uploads import UploadLimits
from strokescan.config import database_url, show_identifiers, web_root
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


def create_app(settings: WebSettings | None = None) -> Flask:
    """The web app: database upgraded to the newest schema, studies left running requeued, worker started."""
    settings = settings or WebSettings()
    settings.instance_dir.mkdir(parents=True, exist_ok=True)
    url = settings.url()
    upgrade_database(url)
    engine = make_engine(url)
    sessions: sessionmaker = session_factory(engine)
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=_secret_key(settings.instance_dir),
        MAX_CONTENT_LENGTH=settings.limits.max_total_bytes + (1 << 20),
        SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax", SESSION_COOKIE_SECURE=settings.secure_cookies,
        REMEMBER_COOKIE_HTTPONLY=True, WTF_CSRF_TIME_LIMIT=None,
    )
    app.extensions["strokescan"] = {"settings": settings, "sessions": sessions, "engine": engine}
    CSRFProtect(app)
    login = LoginManager(app)
    login.login_view = "ui.login"
    login.login_message = "Please log in."

    @login.user_loader
    def _load_user(user_id: str) -> User | None:
        with sessions() as session:
            return session.get(User, int(user_id))

    app.register_blueprint(views.bp)
    app.register_blueprint(api.bp, url_prefix="/api/v1")

    @app.after_request
    def _headers(response):
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        if request.path.startswith(("/api/", "/studies/")) and not response.cache_control.private:
            response.headers["Cache-Control"] = "private, no-store"
        return response

    @app.errorhandler(CSRFError)
    def _csrf(error):
        return views.error_page(400, f"the form expired or came from elsewhere ({error.description}); reload the page")

    @app.errorhandler(413)
    def _too_large(_error):
        message = f"the upload is over the {settings.limits.max_total_bytes >> 20} MiB limit"
        wants_json = request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"
        return (jsonify(error=message), 413) if wants_json else views.error_page(413, message)

    @app.context_processor
    def _version() -> dict:
        return {"strokescan_version": __version__}

    requeued = requeue_interrupted(sessions)
    if requeued:
        log.info("%d interrupted analyses queued again", requeued)
    if settings.start_worker:
        worker = JobWorker(sessions, settings.instance_dir, settings.predictor_factory, settings.show_identifiers)
        worker.start()
        app.extensions["strokescan"]["worker"] = worker
    return app
