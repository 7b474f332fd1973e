"""``strokescan serve`` (the web app under waitress) and ``strokescan web`` (accounts, tokens, the audit trail,
retention): argument parsing and start-up. The web stack is imported when these commands run, never by ``predict``."""

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
    from strokescan.app.web.server import WebSettings, create_app
    from strokescan.app.web.serving import make_server

    os.umask(0o077)  # everything the server writes (database, uploads, PNGs) is for its own user only
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(WebSettings(start_worker=not args.no_worker))
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
    make_server(app, args.host, args.port, args.threads).run()
    return 0


def _worker(args: argparse.Namespace) -> int:
    """Analyse queued studies until SIGTERM or SIGINT: one of several workers over one database."""
    import signal
    from pathlib import Path

    from strokescan.app.web.db import make_engine, session_factory, upgrade_database
    from strokescan.app.web.jobs import JobWorker, default_worker_id
    from strokescan.config import database_url, show_identifiers, web_root
    from strokescan.inference import Predictor

    os.umask(0o077)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    url = database_url()
    upgrade_database(url)
    model = Path(args.model) if args.model else None
    worker = JobWorker(session_factory(make_engine(url)), web_root(),
                       lambda: Predictor(model, segment=True) if model else Predictor(segment=True),
                       show_identifiers(), poll_seconds=args.poll, worker_id=args.id or default_worker_id(),
                       lease_seconds=args.lease)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop())
    print(f"strokescan worker {worker.worker_id}: analysing queued studies (lease {args.lease:g} s)", flush=True)
    worker.run()  # in this thread: returns after stop()
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


def _cli_audit(app, action: str, username: str | None, detail: str, user_id: int | None = None) -> None:
    from strokescan.app.web.audit import record

    record(app.extensions["strokescan"]["sessions"], action, user_id=user_id, username=username, via="cli",
           detail=f"{detail} (by {getpass.getuser()})"[:200])


def _add_user(args: argparse.Namespace) -> int:
    from strokescan.app.web.accounts import create_user

    app = _settings_app()
    is_admin = args.admin or args.role == "admin"
    with app.extensions["strokescan"]["sessions"].begin() as session:
        user = create_user(session, args.username, _password(args), is_admin=is_admin)
        user_id = user.id
    _cli_audit(app, "user_created", args.username, f"created {args.username} ({'admin' if is_admin else 'reader'})",
               user_id)
    print(f"user {args.username} created ({'admin' if is_admin else 'reader'})")
    return 0


def _passwd(args: argparse.Namespace) -> int:
    from strokescan.app.web.accounts import find_user, set_password

    app = _settings_app()
    password = _password(args)
    with app.extensions["strokescan"]["sessions"].begin() as session:
        user = find_user(session, args.username)
        ended, tokens = set_password(session, user, password)
        user_id = user.id
    _cli_audit(app, "password_changed", args.username, f"{ended} sessions ended, {tokens} tokens revoked", user_id)
    print(f"password of {args.username} changed: {ended} sessions ended, {tokens} API tokens revoked")
    return 0


def _token(args: argparse.Namespace) -> int:
    from strokescan.app.web.accounts import find_user, issue_token

    app = _settings_app()
    days = app.extensions["strokescan"]["settings"].policy.token_days if args.days is None else args.days
    with app.extensions["strokescan"]["sessions"].begin() as session:
        user = find_user(session, args.username)
        token, user_id = issue_token(session, user, args.name, days), user.id
    _cli_audit(app, "token_issued", args.username, f"token {args.name!r}, "
               + (f"expires in {days} days" if days else "no expiry"), user_id)
    print(token)
    return 0


def _tokens(args: argparse.Namespace) -> int:
    from strokescan.app.web.accounts import find_user, list_tokens
    from strokescan.app.web.db import utcnow

    app = _settings_app()
    now = utcnow()
    with app.extensions["strokescan"]["sessions"]() as session:
        user_id = find_user(session, args.username).id if args.username else None
        print("id\tuser\tname\tcreated\texpires\tlast_used\tstate")
        for t in list_tokens(session, user_id):
            when = [d.isoformat(timespec="seconds") + "Z" if d else "-" for d in (t.created_at, t.expires_at, t.last_used_at)]
            print("\t".join([str(t.id), t.user.username, t.name, *when, t.state(now)]))
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from strokescan.app.web.accounts import find_user, revoke_tokens

    app = _settings_app()
    with app.extensions["strokescan"]["sessions"].begin() as session:
        user = find_user(session, args.username)
        n, user_id = revoke_tokens(session, user.id, args.token), user.id
    what = f"token {args.token}" if args.token is not None else "every token"
    _cli_audit(app, "token_revoked", args.username, f"{what} of {args.username}: {n} revoked", user_id)
    print(f"{n} token(s) of {args.username} revoked")
    return 0 if n or args.token is None else 1


def _since(text: str):
    """A start time: ISO date or date-time (UTC), or a span back from now: 30m, 12h, 7d."""
    from datetime import datetime, timedelta

    from strokescan.app.web.db import utcnow

    units = {"m": "minutes", "h": "hours", "d": "days"}
    if text[:-1].isdigit() and text[-1:] in units:
        return utcnow() - timedelta(**{units[text[-1]]: int(text[:-1])})
    try:
        parsed = datetime.fromisoformat(text.removesuffix("Z"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (2026-03-01, 2026-03-01T08:00, 12h, 7d)") from None
    return parsed.replace(tzinfo=None)


def _audit(args: argparse.Namespace) -> int:
    from strokescan.app.web.audit import format_event, query_events

    app = _settings_app()
    with app.extensions["strokescan"]["sessions"]() as session:
        print("time\tuser\taction\tstudy\tvia\taddress\tdetail")
        for event in query_events(session, args.user, args.study, args.since, args.action):
            print(format_event(event))
    return 0


def _purge(_args: argparse.Namespace) -> int:
    from strokescan.app.web.server import purge_expired, retention_days

    app = _settings_app()
    n = purge_expired(app)
    print(f"{n} studies older than {retention_days(app)} days deleted" if retention_days(app)
          else "retention is 0: studies are kept until an admin deletes them")
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
    p.add_argument("--no-worker", action="store_true",
                   help="analyse nothing here: 'strokescan worker' processes do (several machines, one database)")
    p.set_defaults(func=_serve)

    p = sub.add_parser(
        "worker", help="analyse queued web studies (one of several workers over one database)",
        description="Claim queued studies from the web app's database ($STROKESCAN_DATABASE_URL, e.g. "
        "postgresql+psycopg://user@host/db) and analyse them with the one Predictor; the uploads folder "
        "($STROKESCAN_WEB_DIR) must be the same storage on every machine. A worker renews a lease on the study it "
        "analyses; a study whose worker stopped renewing it for --lease seconds (killed, machine lost) is taken "
        "over by another. Stops after the current study on SIGTERM or Ctrl-C. Run the web app with "
        "'serve --no-worker' beside workers.")
    p.add_argument("--lease", type=float, default=60.0, help="seconds without a heartbeat before a study is "
                   "taken over (default 60)")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between looks at an empty queue")
    p.add_argument("--model", help="classifier folder (default: the bundled models)")
    p.add_argument("--id", help="this worker's name in the database and the audit trail (default host:pid)")
    p.set_defaults(func=_worker)

    web = sub.add_parser("web", help="web app accounts, API tokens, the audit trail, retention")
    which = web.add_subparsers(dest="web_command", metavar="ACTION", required=True)
    p = which.add_parser("add-user", help="make a user (asks for the password)")
    p.add_argument("username")
    p.add_argument("--admin", action="store_true", help="same as --role admin")
    p.add_argument("--role", choices=["admin", "reader"], default="reader",
                   help="admin: users, deletion, settings; reader (default): worklist, viewer, upload, feedback")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.set_defaults(func=_add_user)
    p = which.add_parser("passwd", help="change a user's password (ends their sessions, revokes their tokens)")
    p.add_argument("username")
    p.add_argument("--password-stdin", action="store_true")
    p.set_defaults(func=_passwd)
    p = which.add_parser("token", help="print a new REST API token for a user (shown once)")
    p.add_argument("username")
    p.add_argument("--name", default="api", help="what the token is for")
    p.add_argument("--days", type=int, default=None,
                   help="valid this many days (default $STROKESCAN_TOKEN_DAYS, 90; 0: no expiry)")
    p.set_defaults(func=_token)
    p = which.add_parser("tokens", help="list API tokens (id, user, name, created, expires, last used, state)")
    p.add_argument("username", nargs="?", help="only this user's")
    p.set_defaults(func=_tokens)
    p = which.add_parser("revoke", help="revoke every API token of a user, or one with --token ID")
    p.add_argument("username")
    p.add_argument("--token", type=int, default=None, metavar="ID", help="only this token (ids: 'strokescan web tokens')")
    p.set_defaults(func=_revoke)
    p = which.add_parser("audit", help="print the audit trail (tab-separated, UTC), oldest first")
    p.add_argument("--user", help="only this user's events")
    p.add_argument("--study", type=int, help="only this study's events")
    p.add_argument("--since", type=_since, help="from this time: 2026-03-01, 2026-03-01T08:00 (UTC), or 12h, 7d back")
    p.add_argument("--action", help="only this action (view_study, login_failed, ...)")
    p.set_defaults(func=_audit)
    p = which.add_parser("purge", help="delete finished studies past the retention setting now (the worker does it hourly)")
    p.set_defaults(func=_purge)
