"""Accounts: users with hashed passwords (werkzeug's scrypt) and a role (admin or reader), server-side login
sessions and API bearer tokens (both stored as sha256 only), login throttling with a lockout, password changes
that end every session and token of the user."""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from strokescan.app.web.db import ApiToken, User, UserSession, utcnow
from strokescan.errors import StrokescanError

log = logging.getLogger(__name__)

MIN_PASSWORD_LENGTH = 10
_DUMMY_HASH = generate_password_hash("not a password of anyone")


class AccountError(StrokescanError):
    """A user or token that cannot be made or found."""


@dataclass(frozen=True)
class AccessPolicy:
    """How long sessions and tokens live and when logins are throttled (defaults: :func:`strokescan.config.web_access`)."""

    session_idle: timedelta = timedelta(minutes=30)
    session_max: timedelta = timedelta(hours=12)
    token_days: int = 90  # 0: tokens do not expire
    max_failures: int = 5  # wrong passwords in a row before a lockout (0: never)
    lockout: timedelta = timedelta(minutes=15)

    @classmethod
    def from_config(cls, values: dict[str, int]) -> AccessPolicy:
        return cls(session_idle=timedelta(minutes=values["session_idle_minutes"]),
                   session_max=timedelta(hours=values["session_max_hours"]), token_days=values["token_days"],
                   max_failures=values["login_max_failures"],
                   lockout=timedelta(minutes=values["login_lockout_minutes"]))


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")


def find_user(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise AccountError(f"no user {username!r}")
    return user


def create_user(session: Session, username: str, password: str, is_admin: bool = False) -> User:
    if not username or len(username) > 80 or not username.replace("_", "").replace("-", "").replace(".", "").isalnum():
        raise AccountError("a user name is 1-80 letters, digits, '.', '-' or '_'")
    _check_password(password)
    if session.scalar(select(User).where(User.username == username)) is not None:
        raise AccountError(f"user {username!r} exists already")
    user = User(username=username, password_hash=generate_password_hash(password), is_admin=is_admin)
    session.add(user)
    session.flush()
    return user


def set_password(session: Session, user: User, password: str) -> tuple[int, int]:
    """Change ``user``'s password and end every session and token of theirs; returns (sessions, tokens) ended."""
    _check_password(password)
    now = utcnow()
    user.password_hash = generate_password_hash(password)
    user.password_changed_at, user.failed_logins, user.locked_until = now, 0, None
    ended = end_sessions(session, user.id, "password")
    tokens = revoke_tokens(session, user.id)
    return ended, tokens


def authenticate(session: Session, username: str, password: str) -> User | None:
    """The user whose name and password these are, else None (no throttling: see :func:`attempt_login`)."""
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        check_password_hash(_DUMMY_HASH, password)  # same time whether or not the user exists
        return None
    return user if check_password_hash(user.password_hash, password) else None


@dataclass(frozen=True)
class LoginOutcome:
    user: User | None  # the user logged in, else None
    known: User | None  # the account the name belongs to, whatever the outcome
    locked_until: datetime | None = None  # the account is locked (refused without checking the password)
    locked_now: bool = False  # this attempt started the lockout


class _UnknownNames:
    """Failed logins of names that are no account, counted in memory like those of accounts, so that a lockout
    does not tell which names exist."""

    def __init__(self, size: int = 10_000) -> None:
        self._lock, self._size, self._counts = threading.Lock(), size, {}

    def fail(self, name: str, policy: AccessPolicy, now: datetime) -> datetime | None:
        with self._lock:
            if len(self._counts) >= self._size:
                self._counts.clear()
            count, until = self._counts.get(name, (0, None))
            if until is not None and until > now:
                return until
            count += 1
            if policy.max_failures and count >= policy.max_failures:
                self._counts[name] = (0, now + policy.lockout)
                return now + policy.lockout
            self._counts[name] = (count, None)
            return None

    def locked(self, name: str, now: datetime) -> datetime | None:
        until = self._counts.get(name, (0, None))[1]
        return until if until is not None and until > now else None


UNKNOWN_NAMES = _UnknownNames()


def attempt_login(session: Session, username: str, password: str, policy: AccessPolicy) -> LoginOutcome:
    """Check a login with throttling: after ``policy.max_failures`` wrong passwords in a row the name is locked
    for ``policy.lockout`` (even the right password is refused meanwhile)."""
    now = utcnow()
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        check_password_hash(_DUMMY_HASH, password)
        until = UNKNOWN_NAMES.locked(username, now)
        if until is not None:
            return LoginOutcome(None, None, until)
        until = UNKNOWN_NAMES.fail(username, policy, now)
        return LoginOutcome(None, None, until, locked_now=until is not None)
    if user.locked_until is not None and user.locked_until > now:
        check_password_hash(_DUMMY_HASH, password)
        return LoginOutcome(None, user, user.locked_until)
    if check_password_hash(user.password_hash, password):
        user.failed_logins, user.locked_until = 0, None
        return LoginOutcome(user, user)
    user.failed_logins = (user.failed_logins or 0) + 1
    if policy.max_failures and user.failed_logins >= policy.max_failures:
        user.failed_logins, user.locked_until = 0, now + policy.lockout
        log.warning("login: user %s locked for %d minutes after %d wrong passwords in a row", user.username,
                    policy.lockout.total_seconds() // 60, policy.max_failures)
        return LoginOutcome(None, user, user.locked_until, locked_now=True)
    return LoginOutcome(None, user)


def unlock(session: Session, user: User) -> None:
    user.failed_logins, user.locked_until = 0, None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# ------------------------------------------------------------------------------------------- sessions


def start_session(session: Session, user: User) -> str:
    """A new server-side session for ``user``; returns the secret for the cookie (stored as sha256 only)."""
    secret = "ses_" + secrets.token_urlsafe(32)
    session.add(UserSession(secret_sha256=_digest(secret), user_id=user.id))
    session.flush()
    user.session_secret = secret
    return secret


def user_for_session(session: Session, secret: str, policy: AccessPolicy) -> User | None:
    """The user of a live session; ends (and refuses) one past its idle or absolute limit."""
    row = session.scalar(select(UserSession).where(UserSession.secret_sha256 == _digest(secret)))
    if row is None or row.ended_at is not None:
        return None
    now = utcnow()
    reason = ("expired" if now - row.created_at > policy.session_max
              else "idle" if now - row.last_seen_at > policy.session_idle else None)
    if reason:
        row.ended_at, row.ended_reason = now, reason
        session.commit()
        return None
    if (now - row.last_seen_at).total_seconds() > 5:
        row.last_seen_at = now
        session.commit()
    user = session.get(User, row.user_id)
    if user is not None:
        user.session_secret = secret
    return user


def end_session(session: Session, secret: str, reason: str = "logout") -> None:
    session.execute(update(UserSession).where(UserSession.secret_sha256 == _digest(secret),
                                              UserSession.ended_at.is_(None))
                    .values(ended_at=utcnow(), ended_reason=reason))


def end_sessions(session: Session, user_id: int, reason: str) -> int:
    """End every live session of a user; returns how many."""
    return session.execute(update(UserSession).where(UserSession.user_id == user_id, UserSession.ended_at.is_(None))
                           .values(ended_at=utcnow(), ended_reason=reason)).rowcount


# ------------------------------------------------------------------------------------------- API tokens


def issue_token(session: Session, user: User, name: str = "api", days: int | None = 90) -> str:
    """A new bearer token for ``user`` valid ``days`` (None or 0: no expiry); the plain token is returned once
    and never stored."""
    token = "sst_" + secrets.token_urlsafe(32)
    expires = utcnow() + timedelta(days=days) if days else None
    session.add(ApiToken(user_id=user.id, name=name[:80], token_sha256=_digest(token), expires_at=expires))
    session.flush()
    return token


def token_row(session: Session, token: str) -> ApiToken | None:
    """The stored token, whatever its state."""
    return session.scalar(select(ApiToken).where(ApiToken.token_sha256 == _digest(token)))


def user_for_token(session: Session, token: str) -> User | None:
    """The user of an active token (neither revoked nor expired), else None."""
    row = token_row(session, token)
    return row.user if row is not None and row.state(utcnow()) == "active" else None


def revoke_tokens(session: Session, user_id: int, token_id: int | None = None) -> int:
    """Revoke every live token of a user, or only ``token_id``; returns how many."""
    query = update(ApiToken).where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
    if token_id is not None:
        query = query.where(ApiToken.id == token_id)
    return session.execute(query.values(revoked_at=utcnow())).rowcount


def list_tokens(session: Session, user_id: int | None = None) -> list[ApiToken]:
    query = select(ApiToken).order_by(ApiToken.id)
    if user_id is not None:
        query = query.where(ApiToken.user_id == user_id)
    return list(session.scalars(query))
