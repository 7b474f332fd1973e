"""Accounts: users with hashed passwords (werkzeug's scrypt), API bearer tokens stored as sha256 only."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from strokescan.app.web.db import ApiToken, User
from strokescan.errors import StrokescanError

MIN_PASSWORD_LENGTH = 10


class AccountError(StrokescanError):
    """A user or token that cannot be made or found."""


def create_user(session: Session, username: str, password: str, is_admin: bool = False) -> User:
    if not username or len(username) > 80 or not username.replace("_", "").replace("-", "").replace(".", "").isalnum():
        raise AccountError("a user name is 1-80 letters, digits, '.', '-' or '_'")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if session.scalar(select(User).where(User.username == username)) is not None:
        raise AccountError(f"user {username!r} exists already")
    user = User(username=username, password_hash=generate_password_hash(password), is_admin=is_admin)
    session.add(user)
    session.flush()
    return user


def authenticate(session: Session, username: str, password: str) -> User | None:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        check_password_hash(generate_password_hash("x"), password)  # same time whether or not the user exists
        return None
    return user if check_password_hash(user.password_hash, password) else None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(session: Session, user: User, name: str = "api") -> str:
    """A new bearer token for ``user``; the plain token is returned once and never stored."""
    token = "sst_" + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, name=name[:80], token_sha256=_digest(token)))
    session.flush()
    return token


def user_for_token(session: Session, token: str) -> User | None:
    row = session.scalar(select(ApiToken).where(ApiToken.token_sha256 == _digest(token)))
    return row.user if row is not None else None
