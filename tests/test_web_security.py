"""The web app as a hospital's security officer checks it (issue 31): sessions that end on the server (logout,
password change, idle and absolute limits), revocable and expiring API tokens, login lockout, roles, the
append-only audit trail and ``strokescan web audit``, identifiers by policy with the MR files that carry them,
file names that never leak, and hardening (huge ids, no-store, formula-safe CSV, the body limit before reading,
file modes, timestamps, partial uploads, the modality in the reason, paging, retention)."""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import stat
import threading
import time
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import DatabaseError

from conftest import save_untrained_classifier
from strokescan.app.cli import main
from strokescan.app.web.accounts import AccessPolicy, create_user, issue_token, set_password
from strokescan.app.web.commands import ensure_admin
from strokescan.app.web.db import ApiToken, AuditEvent, Study, StudyStatus, UserSession, utcnow
from strokescan.app.web.server import WebSettings, create_app, purge_expired
from strokescan.app.web.views import csv_safe
from strokescan.app.web.uploads import UploadLimits
from strokescan.config import SAMPLES_DIR
from strokescan.inference import Predictor

PASSWORD = "correct-horse-battery"
READER_PASSWORD = "reader-password-long"
BLEED = SAMPLES_DIR / "phe-sich_0021_13.png"
GE_ZIP = SAMPLES_DIR / "ge-hispeed-head-series.zip"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_untrained_classifier(tmp_path_factory.mktemp("web_security_model"), size=96)


class SlowPredictor:
    """The one Predictor, taking at least 0.3 s per study (so that finished_at can be told from started_at)."""

    def __init__(self, model_dir: Path) -> None:
        self.inner = Predictor(model_dir, segment=True)

    def analyse(self, scan, **kw):
        time.sleep(0.3)
        return self.inner.analyse(scan, **kw)


def _make(tmp_path, model_dir, monkeypatch, **kw):
    instance = tmp_path / "instance"
    monkeypatch.setenv("STROKESCAN_ADMIN_PASSWORD", PASSWORD)
    monkeypatch.setenv("STROKESCAN_WEB_DIR", str(instance))  # the CLI commands open the same instance
    kw.setdefault("show_identifiers", False)
    kw.setdefault("limits", UploadLimits(max_total_bytes=20 << 20))
    kw.setdefault("policy", AccessPolicy(max_failures=5, lockout=timedelta(minutes=15)))
    app = create_app(WebSettings(instance_dir=instance, predictor_factory=lambda: SlowPredictor(model_dir), **kw))
    ensure_admin(app)
    with app.extensions["strokescan"]["sessions"].begin() as session:
        create_user(session, "reader", READER_PASSWORD)
    return app


@pytest.fixture()
def app(tmp_path, model_dir, monkeypatch):
    app = _make(tmp_path, model_dir, monkeypatch)
    yield app
    app.extensions["strokescan"]["worker"].stop()


def _sessions(app):
    return app.extensions["strokescan"]["sessions"]


def _wait(app, timeout: float = 120) -> None:
    assert app.extensions["strokescan"]["worker"].wait_until_idle(timeout), "the job worker did not finish in time"


def _csrf(client, url: str = "/login") -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(url).text).group(1)


def _login(app, username: str = "admin", password: str = PASSWORD):
    client = app.test_client()
    r = client.post("/login", data={"username": username, "password": password, "csrf_token": _csrf(client)})
    return client, r


def _logged_in(app, username: str = "admin", password: str = PASSWORD):
    client, r = _login(app, username, password)
    assert r.status_code == 302, r.text
    return client


def _copy(client, app):
    """A second browser holding a copy of ``client``'s session cookie."""
    thief = app.test_client()
    thief.set_cookie("session", client.get_cookie("session").value)
    return thief


def _token(app, username: str = "reader", days: int | None = 90) -> str:
    with _sessions(app).begin() as session:
        from strokescan.app.web.accounts import find_user

        return issue_token(session, find_user(session, username), "test", days)


def _auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def _upload(client, token: str, files: list[tuple[str, bytes]]):
    return client.post("/api/v1/studies", data={"files": [(io.BytesIO(c), n) for n, c in files]},
                       headers=_auth(token), content_type="multipart/form-data")


def _cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(["web", *argv])
    return code, capsys.readouterr().out


def _to_login(response) -> bool:
    return response.status_code == 302 and "/login" in response.headers["Location"]


# ---------------------------------------------------------------------------------------------- sessions


def test_a_copied_session_cookie_dies_at_logout(app):
    client = _logged_in(app)
    thief = _copy(client, app)
    assert thief.get("/").status_code == 200  # the copy works while the session lives
    client.post("/logout", data={"csrf_token": _csrf(client, "/")})
    assert _to_login(thief.get("/")) and _to_login(thief.get("/feedback.csv"))
    with _sessions(app)() as session:
        assert session.scalar(select(UserSession.ended_reason)) == "logout"


def test_a_copied_session_cookie_dies_at_a_password_change_in_the_app(app):
    client = _logged_in(app, "reader", READER_PASSWORD)
    other = _logged_in(app, "reader", READER_PASSWORD)
    thief = _copy(other, app)
    token = _token(app)
    r = client.post("/account/password", data={"current": READER_PASSWORD, "new": "a-new-long-password",
                                                 "again": "a-new-long-password",
                                                 "csrf_token": _csrf(client, "/account/password")})
    assert r.status_code == 302
    assert _to_login(thief.get("/")) and _to_login(other.get("/"))
    assert client.get("/").status_code == 200  # the one who changed it stays logged in, on a new session
    assert app.test_client().get("/api/v1/studies", headers=_auth(token)).status_code == 401  # tokens die too
    _, old = _login(app, "reader", READER_PASSWORD)
    assert old.status_code == 401


def test_a_copied_session_cookie_dies_at_a_password_change_by_the_cli(app, capsys, monkeypatch):
    client = _logged_in(app, "reader", READER_PASSWORD)
    token = _token(app)
    monkeypatch.setattr("sys.stdin", io.StringIO("yet-another-password\n"))
    code, out = _cli(capsys, "passwd", "reader", "--password-stdin")
    assert code == 0 and "1 sessions ended, 1 API tokens revoked" in out
    assert _to_login(client.get("/"))
    assert app.test_client().get("/api/v1/studies", headers=_auth(token)).status_code == 401


def test_sessions_end_when_idle_and_at_the_absolute_limit(app):
    idle, old = _logged_in(app), _logged_in(app)
    assert idle.get("/").status_code == 200 and old.get("/").status_code == 200
    with _sessions(app).begin() as session:
        rows = session.scalars(select(UserSession).order_by(UserSession.id)).all()
        rows[0].last_seen_at = utcnow() - timedelta(minutes=31)  # idle limit 30 min
        rows[1].created_at = utcnow() - timedelta(hours=12, minutes=1)  # absolute limit 12 h, active all along
    assert _to_login(idle.get("/")) and _to_login(old.get("/"))
    with _sessions(app)() as session:
        assert [r.ended_reason for r in session.scalars(select(UserSession).order_by(UserSession.id))] == ["idle", "expired"]


def test_the_limits_are_configurable(tmp_path, model_dir, monkeypatch):
    monkeypatch.setenv("STROKESCAN_SESSION_IDLE_MINUTES", "5")
    monkeypatch.setenv("STROKESCAN_SESSION_MAX_HOURS", "2")
    monkeypatch.setenv("STROKESCAN_TOKEN_DAYS", "7")
    monkeypatch.setenv("STROKESCAN_LOGIN_MAX_FAILURES", "3")
    settings = WebSettings(instance_dir=tmp_path / "i", start_worker=False)
    assert settings.policy == AccessPolicy(session_idle=timedelta(minutes=5), session_max=timedelta(hours=2),
                                           token_days=7, max_failures=3, lockout=timedelta(minutes=15))


def test_login_is_locked_after_five_wrong_passwords_and_the_lockout_is_logged(app, caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    # a library's logging.config call earlier in the session can disable existing loggers; the lockout must log
    for name in ("strokescan.app.web.views", "strokescan.app.web.accounts"):
        monkeypatch.setattr(logging.getLogger(name), "disabled", False)
    codes = [_login(app, "reader", "wrong-password!")[1].status_code for _ in range(6)]
    assert codes == [401, 401, 401, 401, 429, 429]
    client, r = _login(app, "reader", READER_PASSWORD)  # even the right password, during the lockout
    assert r.status_code == 429 and "try again in 15 minutes" in r.text
    assert "locked for 15 minutes" in caplog.text
    unknown = [_login(app, "nobody", "wrong-password!")[1].status_code for _ in range(6)]
    assert unknown == codes  # a name that is no account behaves the same: the lockout tells no names
    with _sessions(app).begin() as session:
        events = [(e.username, e.action) for e in session.scalars(select(AuditEvent).where(
            AuditEvent.action.in_(["lockout", "login_failed", "login"])))]
        assert events.count(("reader", "login_failed")) == 6 and events.count(("reader", "lockout")) == 1
        assert (None, "lockout") in events and ("reader", "login") not in events
        session.execute(text("update users set locked_until = :t where username = 'reader'"),
                        {"t": utcnow() - timedelta(seconds=1)})
    assert _login(app, "reader", READER_PASSWORD)[1].status_code == 302  # the lockout ends


# ---------------------------------------------------------------------------------------------- tokens


def test_tokens_are_listed_with_expiry_revoked_one_or_all_and_expire(app, capsys):
    first, second, admin = _token(app), _token(app), _token(app, "admin")
    client = app.test_client()
    assert client.get("/api/v1/studies", headers=_auth(first)).status_code == 200
    code, out = _cli(capsys, "tokens", "reader")
    lines = out.strip().splitlines()
    assert code == 0 and lines[0].startswith("id\tuser\tname\tcreated\texpires") and len(lines) == 3
    expires = lines[1].split("\t")[4]
    assert expires.startswith(str((utcnow() + timedelta(days=90)).date())) and lines[1].endswith("\tactive")
    assert lines[1].split("\t")[5] != "-"  # last use recorded
    first_id = int(lines[1].split("\t")[0])
    code, out = _cli(capsys, "revoke", "reader", "--token", str(first_id))
    assert code == 0 and "1 token(s)" in out
    r = client.get("/api/v1/studies", headers=_auth(first))
    assert r.status_code == 401 and r.json["error"] == "unknown or revoked token"
    assert client.get("/api/v1/studies", headers=_auth(second)).status_code == 200
    code, out = _cli(capsys, "revoke", "reader")
    assert code == 0 and "1 token(s) of reader revoked" in out
    assert client.get("/api/v1/studies", headers=_auth(second)).status_code == 401
    assert client.get("/api/v1/studies", headers=_auth(admin)).status_code == 200  # another user's: untouched
    assert _cli(capsys, "tokens")[1].count("\trevoked") == 2
    with _sessions(app).begin() as session:
        session.execute(update(ApiToken).where(ApiToken.user_id == 1).values(expires_at=utcnow()))
    r = client.get("/api/v1/studies", headers=_auth(admin))
    assert r.status_code == 401 and "expired" in r.json["error"]
    code, out = _cli(capsys, "audit", "--action", "token_refused")
    assert out.count("token_refused") == 3 and "revoked token" in out and "expired token" in out


# ---------------------------------------------------------------------------------------------- roles


def test_a_reader_cannot_manage_accounts_settings_or_delete(app):
    reader, admin = _logged_in(app, "reader", READER_PASSWORD), _logged_in(app)
    with _sessions(app).begin() as session:
        session.add(Study(label="x", kind="image", upload_dir="uploads/none", analyse_path="uploads/none/x.png",
                          status=StudyStatus.DONE))
    csrf = _csrf(reader, "/")
    assert reader.get("/admin/users").status_code == 403
    assert reader.post("/admin/users", data={"action": "create", "username": "mallory", "password": "x" * 12,
                                             "role": "admin", "csrf_token": csrf}).status_code == 403
    assert reader.post("/admin/settings", data={"retention_days": "1", "csrf_token": csrf}).status_code == 403
    assert reader.post("/studies/1/delete", data={"csrf_token": csrf}).status_code == 403
    assert "Admin</a>" not in reader.get("/").text and "Delete this study" not in reader.get("/studies/1").text
    r = app.test_client().delete("/api/v1/studies/1", headers=_auth(_token(app)))
    assert r.status_code == 403 and "admin" in r.json["error"]
    acsrf = _csrf(admin, "/admin/users")
    r = admin.post("/admin/users", data={"action": "create", "username": "carol", "password": "carol-password-1",
                                         "role": "reader", "csrf_token": acsrf})
    assert r.status_code == 302 and "carol" in admin.get("/admin/users").text
    assert admin.post("/admin/users", data={"action": "role", "username": "carol", "role": "admin",
                                            "csrf_token": acsrf}).status_code == 302
    assert _logged_in(app, "carol", "carol-password-1").get("/admin/users").status_code == 200
    assert admin.post("/studies/1/delete", data={"csrf_token": acsrf}).status_code == 302
    with _sessions(app)() as session:
        assert session.get(Study, 1) is None
        assert session.scalar(select(AuditEvent).where(AuditEvent.action == "delete")).username == "admin"


# ---------------------------------------------------------------------------------------------- audit trail


def test_every_view_upload_export_feedback_and_token_use_is_audited(app, capsys):
    token = _token(app)
    api = app.test_client()
    r = _upload(api, token, [("slice.png", BLEED.read_bytes())])
    assert r.status_code == 202
    study_id = r.json["id"]
    _wait(app)
    browser = _logged_in(app)
    _login(app, "admin", "wrong-password!")
    assert browser.get(f"/studies/{study_id}").status_code == 200
    assert browser.get(f"/studies/{study_id}/slices/stored/0.png").status_code == 200
    assert browser.get(f"/studies/{study_id}/overlays/hemorrhage/0.png").status_code == 200
    browser.post(f"/studies/{study_id}/feedback", data={"verdict": "agree", "csrf_token": _csrf(browser, "/")})
    assert browser.get("/feedback.csv").status_code == 200
    for url in (f"/api/v1/studies/{study_id}", f"/api/v1/studies/{study_id}/result",
                f"/api/v1/studies/{study_id}/masks/0.png", f"/api/v1/studies/{study_id}/masks.nii.gz"):
        assert api.get(url, headers=_auth(token)).status_code == 200, url
    code, out = _cli(capsys, "audit", "--study", str(study_id))
    rows = [line.split("\t") for line in out.strip().splitlines()[1:]]
    assert code == 0
    seen = {(user, action, via.split(":")[0]) for _time, user, action, _study, via, _addr, _detail in rows}
    for user, action, via in [("reader", "upload", "api"), ("admin", "view_study", "web"),
                              ("admin", "view_image", "web"), ("admin", "feedback", "web"),
                              ("reader", "view_study", "api"), ("reader", "view_result", "api"),
                              ("reader", "view_mask", "api"), ("reader", "export", "api"),
                              ("reader", "token_use", "api")]:
        assert (user, action, via) in seen, (user, action, via)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r[0]) for r in rows)
    assert all(r[4].startswith("api:token") for r in rows if r[4].startswith("api"))
    _, out = _cli(capsys, "audit", "--user", "admin", "--since", "1h")
    actions = [line.split("\t")[2] for line in out.strip().splitlines()[1:]]
    assert {"login", "login_failed", "view_study", "export"} <= set(actions) and "upload" not in actions
    _, out = _cli(capsys, "audit", "--since", (utcnow() + timedelta(hours=1)).isoformat())
    assert out.strip().splitlines()[1:] == []
    with pytest.raises(SystemExit):
        main(["web", "audit", "--since", "yesterday"])


def test_the_audit_trail_is_append_only(app):
    _logged_in(app)
    with pytest.raises(DatabaseError, match="append-only"):
        with _sessions(app).begin() as session:
            session.execute(update(AuditEvent).values(username="someone else"))
    with pytest.raises(DatabaseError, match="append-only"):
        with _sessions(app).begin() as session:
            session.execute(text("delete from audit_events"))
    with _sessions(app)() as session:
        assert session.scalar(select(AuditEvent).where(AuditEvent.action == "login")).username == "admin"


# ---------------------------------------------------------------------------------------------- identifiers


def _db_text(app) -> str:
    parts = []
    with app.extensions["strokescan"]["engine"].connect() as conn:
        for table in ("users", "api_tokens", "studies", "feedback", "audit_events", "user_sessions", "settings"):
            parts.append(json.dumps([list(map(str, row)) for row in conn.execute(text(f"select * from {table}"))]))
    return "\n".join(parts)


def _files_text(app) -> str:
    instance = app.extensions["strokescan"]["settings"].instance_dir
    return "\n".join(str(p.relative_to(instance)) for p in instance.rglob("*"))


def test_file_names_never_leak_with_identifiers_off(app, caplog):
    caplog.set_level(logging.DEBUG)
    token = _token(app)
    api = app.test_client()
    raw = zipfile.ZipFile(GE_ZIP).read("01.dcm")
    failed = _upload(api, token, [("Doe_Jane_19800707.dcm", raw[: len(raw) // 2])]).json["id"]  # analysis fails
    done = _upload(api, token, [("Doe_Jane_19800707.png", BLEED.read_bytes())]).json["id"]
    series = io.BytesIO()
    with zipfile.ZipFile(series, "w") as z:
        z.writestr("Doe_Jane/01.dcm", raw)
    _upload(api, token, [("Doe_Jane.zip", series.getvalue())])
    _wait(app)
    browser = _logged_in(app)
    with _sessions(app)() as session:
        assert session.get(Study, failed).status == StudyStatus.FAILED and session.get(Study, failed).error
    texts = [browser.get("/").text, browser.get(f"/studies/{failed}").text, browser.get(f"/studies/{done}").text,
             api.get("/api/v1/studies", headers=_auth(token)).text,
             api.get(f"/api/v1/studies/{done}/result", headers=_auth(token)).text, _db_text(app), _files_text(app),
             caplog.text, browser.get("/feedback.csv").text]
    for t in texts:
        assert "Doe" not in t and "19800707" not in t


@pytest.fixture()
def mr_files(mr_dir: Path) -> list[Path]:
    files = sorted(mr_dir.glob("*.dcm"))
    assert len(files) == 5
    return files


def test_identifiers_on_show_the_patient_on_the_worklist_and_viewer_and_every_view_is_audited(
        tmp_path, model_dir, monkeypatch, mr_files, capsys):
    import pydicom

    app = _make(tmp_path, model_dir, monkeypatch, show_identifiers=True)
    try:
        ds = pydicom.dcmread(mr_files[0], stop_before_pixels=True)
        name, pid = str(ds.PatientName), str(ds.PatientID)
        assert name and pid  # the files carry them: the test can fail
        token = _token(app)
        api = app.test_client()
        r = _upload(api, token, [(p.name, p.read_bytes()) for p in mr_files])
        assert r.status_code == 202 and r.json["identifiers"]["patient_name"] == name
        study_id = r.json["id"]
        _wait(app)
        browser = _logged_in(app)
        worklist, page = browser.get("/").text, browser.get(f"/studies/{study_id}").text
        for shown in (name, pid):
            assert shown in worklist and shown in page
        if ds.get("AccessionNumber"):
            assert str(ds.AccessionNumber) in worklist
        if ds.get("StudyDate"):
            d = str(ds.StudyDate)
            assert f"{d[:4]}-{d[4:6]}-{d[6:]}" in page
        assert "Accession" in worklist and 'id="patient"' in page
        assert api.get(f"/api/v1/studies/{study_id}", headers=_auth(token)).json["identifiers"]["patient_id"] == pid
        assert "modality MR" in browser.get(f"/studies/{study_id}").text  # five MR files: refused as MR
        _, out = _cli(capsys, "audit", "--study", str(study_id))
        assert "admin\tview_study\t" in out and "reader\tview_study\t" in out
        _, out = _cli(capsys, "audit", "--action", "view_worklist")
        assert "admin\tview_worklist" in out
    finally:
        app.extensions["strokescan"]["worker"].stop()


def test_identifiers_off_keep_the_mr_tags_out_and_five_mr_files_fail_as_mr(app, mr_files, caplog):
    from test_cli_inspect import _identifying_values, _leaks

    caplog.set_level(logging.DEBUG)
    values = _identifying_values(mr_files)
    values["StudyID"] = {v for v in values.get("StudyID", set()) if not (v.isdigit() and len(v) < 3)}
    token = _token(app)
    api = app.test_client()
    r = _upload(api, token, [(p.name, p.read_bytes()) for p in mr_files])
    assert r.status_code == 202 and "identifiers" not in r.json
    study_id = r.json["id"]
    _wait(app)
    status = api.get(f"/api/v1/studies/{study_id}", headers=_auth(token)).json
    assert status["status"] == "failed" and "modality MR" in status["error"], status["error"]
    assert "share one slice position" not in status["error"]
    browser = _logged_in(app)
    texts = [browser.get("/").text, browser.get(f"/studies/{study_id}").text, json.dumps(status), _db_text(app),
             _files_text(app), caplog.text]
    assert not _leaks("\n".join(texts), values)


# ---------------------------------------------------------------------------------------------- hardening


def test_huge_ids_are_404_not_500(app):
    token = _token(app)
    client = _logged_in(app)
    for url in ("/api/v1/studies/99999999999999999999", "/api/v1/studies/99999999999999999999/result",
                "/api/v1/studies/9223372036854775808/masks/99999999999999999999.png"):
        r = client.get(url, headers=_auth(token))
        assert r.status_code == 404 and r.is_json, (url, r.status_code)
    assert client.get("/studies/99999999999999999999").status_code == 404
    assert client.get("/studies/1/slices/brain/99999999999999999999.png").status_code == 404
    assert client.get("/?page=99999999999999999999").status_code == 200


def test_patient_content_is_never_cached_and_the_csv_is_formula_safe(app):
    token = _token(app)
    api = app.test_client()
    study_id = _upload(api, token, [("slice.png", BLEED.read_bytes())]).json["id"]
    _wait(app)
    browser = _logged_in(app)
    browser.post(f"/studies/{study_id}/feedback", data={"verdict": "agree", "note": '=HYPERLINK("http://x","y")',
                                                       "csrf_token": _csrf(browser, "/")})
    api.post(f"/api/v1/studies/{study_id}/feedback", json={"agrees": False, "note": "@SUM(A1)"}, headers=_auth(token))
    for r in (browser.get("/"), browser.get(f"/studies/{study_id}"), browser.get("/feedback.csv"),
              browser.get(f"/studies/{study_id}/slices/stored/0.png"),
              browser.get(f"/studies/{study_id}/overlays/hemorrhage/0.png"),
              api.get(f"/api/v1/studies/{study_id}/masks/0.png", headers=_auth(token)),
              api.get("/api/v1/studies", headers=_auth(token)), browser.get("/worklist/state")):
        directives = {d.strip() for d in r.headers["Cache-Control"].split(",")}
        assert r.status_code == 200 and directives == {"private", "no-store"}, r.request.path
        assert "Expires" not in r.headers
    notes = [row.split(",")[6] for row in browser.get("/feedback.csv").text.strip().splitlines()[1:]]
    assert notes[0].startswith("\"'=HYPERLINK") and notes[1] == "'@SUM(A1)"
    assert [csv_safe(v) for v in ("+1", "-2", "\tx", "plain", 3)] == ["'+1", "'-2", "'\tx", "plain", 3]


class _Unreadable(io.RawIOBase):
    def readable(self) -> bool:
        return True

    def readinto(self, _b):
        raise AssertionError("the body was read")


def test_a_body_over_the_limit_is_refused_as_json_before_it_is_read(app):
    token = _token(app)
    for path, headers in (("/api/v1/studies", {"HTTP_AUTHORIZATION": f"Bearer {token}"}),
                          ("/upload", {"HTTP_ACCEPT": "application/json"})):
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
                   "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
                   "wsgi.url_scheme": "http", "wsgi.input": _Unreadable(), "wsgi.errors": io.StringIO(),
                   "CONTENT_LENGTH": str(1 << 30), "CONTENT_TYPE": "multipart/form-data; boundary=x", **headers}
        answer = {}
        body = b"".join(app.wsgi_app(environ, lambda status, hdrs, exc=None: answer.update(status=status,
                                                                                          headers=dict(hdrs))))
        assert answer["status"].startswith("413") and answer["headers"]["Content-Type"] == "application/json", path
        assert "limit" in json.loads(body)["error"]


def test_waitress_refuses_a_declared_oversize_body_after_the_headers(app):
    from strokescan.app.web.serving import make_server

    server = make_server(app, "127.0.0.1", 0, threads=2)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", server.effective_port), timeout=10) as sock:
            sock.sendall(b"POST /api/v1/studies HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1073741824\r\n"
                         b"Content-Type: multipart/form-data; boundary=x\r\n\r\n")  # and not one byte of body
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413") and b"application/json" in head
        assert "limit" in json.loads(body)["error"]
    finally:
        server.close()
        thread.join(5)


def test_files_are_private_and_finished_at_is_when_the_analysis_ended(app):
    token = _token(app)
    study_id = _upload(app.test_client(), token, [("slice.png", BLEED.read_bytes())]).json["id"]
    _wait(app)
    instance = app.extensions["strokescan"]["settings"].instance_dir
    assert stat.S_IMODE(instance.stat().st_mode) == 0o700
    for p in [instance / "strokescan.db", instance / "secret_key"]:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    uploads = list((instance / "uploads").rglob("*"))
    assert uploads and all(stat.S_IMODE(p.stat().st_mode) == (0o700 if p.is_dir() else 0o600) for p in uploads)
    with _sessions(app)() as session:
        study = session.get(Study, study_id)
        assert study.finished_at - study.started_at >= timedelta(seconds=0.3)


def test_a_zipped_series_with_a_readme_is_taken_and_the_readme_listed_as_ignored(app):
    buf = io.BytesIO()
    with zipfile.ZipFile(GE_ZIP) as src, zipfile.ZipFile(buf, "w") as out:
        for name in src.namelist()[:3]:
            out.writestr(f"series/{name}", src.read(name))
        out.writestr("series/README.txt", "exported by the PACS\n")
    r = _upload(app.test_client(), _token(app), [("series.zip", buf.getvalue())])
    assert r.status_code == 202 and r.json["ignored"] == ["series.zip!series/README.txt"] and r.json["kind"] == "dicom"
    client = _logged_in(app)
    r = client.post("/upload", data={"files": [(io.BytesIO(buf.getvalue()), "series.zip")],
                                     "csrf_token": _csrf(client, "/upload")}, content_type="multipart/form-data")
    assert r.status_code == 302 and "left out: series.zip!series/README.txt" in client.get(r.headers["Location"]).text


def test_the_worklist_pages_and_the_api_pages(tmp_path, model_dir, monkeypatch):
    app = _make(tmp_path, model_dir, monkeypatch, page_size=2, start_worker=False)
    with _sessions(app).begin() as session:
        for i in range(5):
            session.add(Study(label=f"study {i}", kind="image", upload_dir="uploads/x", analyse_path="uploads/x/y",
                              status=StudyStatus.QUEUED))
    client = _logged_in(app)
    pages = [re.findall(r'data-study="(\d+)"', client.get(f"/?page={p}").text) for p in (1, 2, 3)]
    assert pages == [["1", "2"], ["3", "4"], ["5"]]
    assert "page 1 / 3" in client.get("/").text and 'rel="next"' in client.get("/").text
    r = app.test_client().get("/api/v1/studies?limit=2&offset=4", headers=_auth(_token(app)))
    assert [s["id"] for s in r.json["studies"]] == [5] and r.json["total"] == 5
    assert app.test_client().get("/api/v1/studies?limit=0", headers=_auth(_token(app))).status_code == 400


def test_the_retention_setting_deletes_old_studies_and_audits_it(app, capsys):
    token = _token(app)
    study_id = _upload(app.test_client(), token, [("slice.png", BLEED.read_bytes())]).json["id"]
    _wait(app)
    assert purge_expired(app) == 0  # default: keep
    admin = _logged_in(app)
    assert admin.post("/admin/settings", data={"retention_days": "30", "csrf_token": _csrf(admin, "/admin/users")}
                      ).status_code == 302
    with _sessions(app).begin() as session:
        upload = app.extensions["strokescan"]["settings"].instance_dir / session.get(Study, study_id).upload_dir
        session.get(Study, study_id).created_at = utcnow() - timedelta(days=31)
    assert upload.is_dir()
    code, out = _cli(capsys, "purge")
    assert code == 0 and "1 studies older than 30 days deleted" in out
    assert not upload.exists()
    _, out = _cli(capsys, "audit", "--study", str(study_id))
    assert "\tretention_purge\t" in out and "\tsettings_changed\t" not in out
    _, out = _cli(capsys, "audit", "--action", "settings_changed")
    assert "retention_days=30" in out


def test_the_worklist_state_reports_new_flagged_studies(app):
    client = _logged_in(app)
    before = client.get("/worklist/state").json
    with _sessions(app).begin() as session:
        session.add(Study(label="x", kind="image", upload_dir="uploads/x", analyse_path="uploads/x/y",
                          status=StudyStatus.DONE, positive=True))
    after = client.get("/worklist/state").json
    assert before["flagged"] == [] and [s["id"] for s in after["flagged"]] == [1]
    assert after["fingerprint"] != before["fingerprint"]
    assert _to_login(app.test_client().get("/worklist/state"))
