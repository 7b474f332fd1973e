"""The audit trail: who logged in (or failed to), viewed a study, an image, a mask or a result, uploaded,
exported, gave feedback, deleted, or used an API token, with the time and the study. Rows are only ever added
(the database refuses UPDATE and DELETE on the table); ``strokescan web audit`` reads them.

Image views are recorded once per user, study and kind of image within :data:`IMAGE_REPEAT_SECONDS` (scrolling
a series asks for one PNG per slice and class); every other event is one row.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from strokescan.app.web.db import AuditEvent

ACTIONS = (
    "login", "login_failed", "lockout", "logout", "password_changed", "session_ended",
    "view_worklist", "view_study", "view_image", "view_mask", "view_result", "upload", "export", "feedback",
    "delete", "token_use", "token_refused", "token_issued", "token_revoked", "user_created", "user_changed",
    "settings_changed", "retention_purge", "analysed",
)
IMAGE_REPEAT_SECONDS = 60.0


class _Repeats:
    """Remembers recent (user, action, study, detail) keys so that repeated image requests make one row."""

    def __init__(self) -> None:
        self._lock, self._seen = threading.Lock(), {}

    def first(self, key: tuple, window: float) -> bool:
        now = time.monotonic()
        with self._lock:
            if len(self._seen) > 50_000:
                self._seen = {k: t for k, t in self._seen.items() if now - t < window}
            last = self._seen.get(key)
            if last is not None and now - last < window:
                return False
            self._seen[key] = now
            return True


REPEATS = _Repeats()


def record(sessions: sessionmaker, action: str, *, user_id: int | None = None, username: str | None = None,
           study_id: int | None = None, via: str = "web", token_id: int | None = None, remote_addr: str | None = None,
           detail: str | None = None, once_per: float | None = None) -> None:
    """Append one event (in its own transaction, so a refused request is recorded too). With ``once_per``
    seconds, an identical event within that time adds no row."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    if once_per and not REPEATS.first((id(sessions), user_id, token_id, action, study_id, detail), once_per):
        return
    with sessions.begin() as session:
        session.add(AuditEvent(action=action, user_id=user_id, username=username, study_id=study_id, via=via,
                               token_id=token_id, remote_addr=(remote_addr or None) and remote_addr[:45],
                               detail=detail[:200] if detail else None))


def query_events(session: Session, user: str | None = None, study_id: int | None = None,
                 since: datetime | None = None, action: str | None = None) -> Iterator[AuditEvent]:
    """Events in time order, filtered by user name, study, start time (UTC) and action."""
    query = select(AuditEvent).order_by(AuditEvent.at, AuditEvent.id)
    if user:
        query = query.where(AuditEvent.username == user)
    if study_id is not None:
        query = query.where(AuditEvent.study_id == study_id)
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    if action:
        query = query.where(AuditEvent.action == action)
    yield from session.scalars(query)


def format_event(event: AuditEvent) -> str:
    """One tab-separated line: time (UTC), user, action, study, via (with the token), address, detail."""
    via = event.via + (f":token{event.token_id}" if event.token_id else "")
    return "\t".join([event.at.isoformat(timespec="seconds") + "Z", event.username or "-", event.action,
                      str(event.study_id) if event.study_id is not None else "-", via, event.remote_addr or "-",
                      event.detail or ""])


def record_request(action: str, study_id: int | None = None, detail: str | None = None,
                   once_per: float | None = None, username: str | None = None, user_id: int | None = None) -> None:
    """Append an event for the current request: the API's token user (``g.api_user``) or the logged-in user."""
    from flask import current_app, g, request
    from flask_login import current_user

    api_user = g.get("api_user")
    if api_user is not None:
        user_id, username, via, token_id = api_user.id, api_user.username, "api", g.get("api_token_id")
    else:
        via, token_id = "web", None
        if user_id is None and current_user and current_user.is_authenticated:
            user_id, username = current_user.id, current_user.username
    record(current_app.extensions["strokescan"]["sessions"], action, user_id=user_id, username=username,
           study_id=study_id, via=via, token_id=token_id, remote_addr=request.remote_addr, detail=detail,
           once_per=once_per)
