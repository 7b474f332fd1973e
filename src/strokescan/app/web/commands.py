"""``strokescan serve`` (the web app under waitress) and ``strokescan web`` (accounts and tokens): argument
parsing and start-up. The web stack is imported when these commands run, never by ``predict``."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import secrets
import sys

from strokescan.config import SAMPLES_DIR, WEB_DEFAULT_HOST, WEB_DEFAULT_PORT

log = logging.getLogger("strokescan")

#: the bundled samples the worklist starts with (file, label)
SAMPLE_STUDIES = [
    ("ge-hispeed-head-series.zip", "Sample: GE HiSpeed head series (28 slices, HU)"),
    ("phe-sich_0021_13.png", "Sample: PHE-SICH 0021 slice 13 (large hematoma)"),
    ("phe-sich_0004_18.png", "Sample: PHE-SICH 0004 slice 18 (hematoma)"),
    ("phe-sich_0002_17.png", "Sample: PHE-SICH 0002 slice 17 (small hematoma)"),
    ("phe-sich_0011_18.png", "Sample: PHE-SICH 0011 slice 18 (no lesion labelled)"),
]


def seed_samples(app) -> int:
    """Queue the bundled sample scans when the worklist is empty; returns how many were added."""
    from sqlalchemy import func, select

    from strokescan.app.web.db import Study
    from strokescan.app.web.studies import create_study

    ctx = app.extensions["strokescan"]
    with ctx["sessions"].begin() as session:
        if session.scalar(select(func.count()).select_from(Study)):
            return 0
        for name, label in SAMPLE_STUDIES:
            with open(SAMPLES_DIR / name, "rb") as stream:
                create_study(session, ctx["settings"].instance_dir, [(name, stream)], ctx["settings"].limits, None, label)
    return len(SAMPLE_STUDIES)


def ensure_admin(app) -> str | None:
    """Make user ``admin`` when there is no user yet: password from ``$STROKESCAN_ADMIN_PASSWORD`` or random.
    Returns the password when it was generated (to print once), else None."""
    from sqlalchemy import func, select

    from strokescan.app.web.accounts import create_user
    from strokescan.app.web.db import User

    with app.extensions["strokescan"]["sessions"].begin() as session:
        if session.scalar(select(func.count()).select_from(User)):
            return None
        given = os.environ.get("STROKESCAN_ADMIN_PASSWORD")
        password = given or secrets.token_urlsafe(12)
        create_user(session, "admin", password, is_admin=True)
    return None if given else password


def _serve(args: argparse.Namespace) -> int:
    from waitress import serve

    from strokescan.app.web.server import WebSettings, create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(WebSettings())
    password = ensure_admin(app)
    added = 0 if args.no_samples else seed_samples(app)
    url = f"http://{args.host}:{args.port}/"
    print(f"strokescan web app: {url}", flush=True)
    if password:
        print(f"first start: log in as 'admin' with password {password} (shown once; change it with "
              "'strokescan web passwd admin')", flush=True)
    if added:
        print(f"{added} sample studies queued: their results appear in the worklist within a minute", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}, not only this machine: put it behind HTTPS", file=sys.stderr)
    serve(app, host=args.host, port=args.port, threads=args.threads, ident="strokescan")
    return 0


def _settings_app():
    from strokescan.app.web.server import WebSettings, create_app

    return create_app(WebSettings(start_worker=False))


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("new password: ")
    if first != getpass.getpass("again: "):
        raise SystemExit("strokescan: error: the passwords differ")
    return first


def _add_user(args: argparse.Namespace) -> int:
    from strokescan.app.web.accounts import create_user

    app = _settings_app()
    with app.extensions["strokescan"]["sessions"].begin() as session:
        create_user(session, args.username, _password(args), is_admin=args.admin)
    print(f"user {args.username} created")
    return 0


def _passwd(args: argparse.Namespace) -> int:
    from sqlalchemy import select
    from werkzeug.security import generate_password_hash

    from strokescan.app.web.accounts import MIN_PASSWORD_LENGTH, AccountError
    from strokescan.app.web.db import User

    app = _settings_app()
    password = _password(args)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    with app.extensions["strokescan"]["sessions"].begin() as session:
        user = session.scalar(select(User).where(User.username == args.username))
        if user is None:
            raise AccountError(f"no user {args.username!r}")
        user.password_hash = generate_password_hash(password)
    print(f"password of {args.username} changed")
    return 0


def _token(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from strokescan.app.web.accounts import AccountError, issue_token
    from strokescan.app.web.db import User

    app = _settings_app()
    with app.extensions["strokescan"]["sessions"].begin() as session:
        user = session.scalar(select(User).where(User.username == args.username))
        if user is None:
            raise AccountError(f"no user {args.username!r}")
        print(issue_token(session, user, args.name))
    return 0


def add_web_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="start the web app (worklist, viewer, upload, REST API) on this machine",
        description="Serve the web app with waitress on HOST:PORT (127.0.0.1:8765: this machine only). Data "
        "(database, uploads, results) live in $STROKESCAN_WEB_DIR (default ~/.local/share/strokescan/web); the "
        "database is SQLite there unless $STROKESCAN_DATABASE_URL names another (e.g. postgresql://...). On the "
        "first start user 'admin' is made (password printed once, or $STROKESCAN_ADMIN_PASSWORD) and the bundled "
        "sample scans are queued. Patient identifiers never reach pages, logs or the database unless "
        "$STROKESCAN_SHOW_IDENTIFIERS=1.")
    p.add_argument("--host", default=WEB_DEFAULT_HOST, help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=WEB_DEFAULT_PORT)
    p.add_argument("--threads", type=int, default=8, help="request threads (analysis runs in its own worker)")
    p.add_argument("--no-samples", action="store_true", help="do not queue the sample scans on an empty worklist")
    p.set_defaults(func=_serve)

    web = sub.add_parser("web", help="web app accounts: add users, change passwords, make API tokens")
    which = web.add_subparsers(dest="web_command", metavar="ACTION", required=True)
    p = which.add_parser("add-user", help="make a user (asks for the password)")
    p.add_argument("username")
    p.add_argument("--admin", action="store_true")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.set_defaults(func=_add_user)
    p = which.add_parser("passwd", help="change a user's password")
    p.add_argument("username")
    p.add_argument("--password-stdin", action="store_true")
    p.set_defaults(func=_passwd)
    p = which.add_parser("token", help="print a new REST API token for a user (shown once)")
    p.add_argument("username")
    p.add_argument("--name", default="api", help="what the token is for")
    p.set_defaults(func=_token)
