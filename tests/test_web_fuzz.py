"""A bounded fuzz of every operation in the REST API's OpenAPI document (Hypothesis): path parameters from
small to far past 64 bits and as arbitrary text, declared and undeclared query parameters, JSON and multipart
bodies of any shape, with an admin's, a reader's, a garbage or no token. Target (issue 31): zero 5xx and no
traceback in any answer or log line."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path
from urllib.parse import quote

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from conftest import save_untrained_classifier  # noqa: E402
from strokescan.app.web.accounts import create_user, issue_token  # noqa: E402
from strokescan.app.web.openapi import OPENAPI  # noqa: E402
from strokescan.app.web.server import WebSettings, create_app  # noqa: E402
from strokescan.app.web.uploads import UploadLimits  # noqa: E402
from strokescan.config import SAMPLES_DIR  # noqa: E402
from strokescan.inference import Predictor  # noqa: E402

EXAMPLES_PER_OPERATION = 40
PNG = (SAMPLES_DIR / "phe-sich_0021_13.png").read_bytes()
OPERATIONS = sorted(((path, method, op) for path, item in OPENAPI["paths"].items() for method, op in item.items()),
                    key=lambda o: (o[1] == "delete", o[0], o[1]))  # deletions last: the others see study 1


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory):
    model_dir = save_untrained_classifier(tmp_path_factory.mktemp("fuzz_model"), size=96)
    app = create_app(WebSettings(instance_dir=tmp_path_factory.mktemp("fuzz") / "instance",
                                 predictor_factory=lambda: Predictor(model_dir, segment=True), show_identifiers=False,
                                 limits=UploadLimits(max_total_bytes=4 << 20, max_files=20)))
    with app.extensions["strokescan"]["sessions"].begin() as session:
        tokens = {"admin": issue_token(session, create_user(session, "admin", "admin-password-1", is_admin=True)),
                  "reader": issue_token(session, create_user(session, "reader", "reader-password-1"))}
    client = app.test_client()
    r = client.post("/api/v1/studies", data={"files": [(io.BytesIO(PNG), "a.png")]},
                    headers={"Authorization": f"Bearer {tokens['reader']}"}, content_type="multipart/form-data")
    assert r.status_code == 202
    worker = app.extensions["strokescan"]["worker"]
    assert worker.wait_until_idle(120)
    worker.stop()  # fuzzed uploads stay queued: the fuzz tests the API, not the models
    worker.join(30)
    return app, tokens


_ids = st.one_of(st.integers(-5, 5), st.integers(-(2**70), 2**70), st.just(1), st.just(2**63),
                 st.text(max_size=30).map(lambda t: quote(t, safe="")))
_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=50),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                     max_leaves=10)
_feedback = st.fixed_dictionaries({"agrees": st.one_of(st.booleans(), _json)},
                                  optional={"note": st.one_of(st.text(max_size=2100), _json)})
_file_bytes = st.one_of(st.binary(max_size=600), st.just(PNG), st.just(b"PK\x03\x04" + bytes(100)),
                        st.just(b"\x00" * 128 + b"DICM" + bytes(50)))
_files = st.lists(st.tuples(st.text(max_size=40), _file_bytes), max_size=3)


def _value(schema: dict):
    if "enum" in schema:
        return st.one_of(st.sampled_from([v for v in schema["enum"] if v is not None]), st.text(max_size=12))
    if schema.get("type") == "integer":
        return st.one_of(st.integers(-3, 2000), st.integers(-(2**70), 2**70).map(str), st.text(max_size=12))
    return st.text(max_size=20)


@st.composite
def _requests(draw, path: str, method: str, op: dict):
    url = path
    for param in re.findall(r"{(\w+)}", path):
        url = url.replace("{" + param + "}", str(draw(_ids)))
    query = {}
    for param in op.get("parameters", []):
        if param["in"] == "query" and draw(st.booleans()):
            query[param["name"]] = draw(_value(param["schema"]))
    if draw(st.booleans()):
        query[draw(st.text(min_size=1, max_size=8))] = draw(st.text(max_size=10))
    who = draw(st.sampled_from(["admin", "reader", "garbage", "none", "malformed"]))
    kwargs: dict = {}
    content = (op.get("requestBody") or {}).get("content", {})
    if "application/json" in content:
        kind = draw(st.sampled_from(["schema", "json", "bytes"]))
        if kind == "bytes":
            kwargs = {"data": draw(st.binary(max_size=200)), "content_type": "application/json"}
        else:
            kwargs = {"json": draw(_feedback if kind == "schema" else _json)}
    elif "multipart/form-data" in content:
        files = draw(_files)
        kwargs = {"data": {"files": [(io.BytesIO(b), n) for n, b in files],
                           draw(st.text(min_size=1, max_size=5)): draw(st.text(max_size=5))},
                  "content_type": "multipart/form-data"}
    return "/api/v1" + url, method, query, who, kwargs


@pytest.mark.parametrize("path, method, op", OPERATIONS, ids=[f"{m.upper()} {p}" for p, m, _ in OPERATIONS])
def test_no_api_operation_answers_5xx_or_a_traceback(fuzz_app, path, method, op, caplog):
    app, tokens = fuzz_app
    client = app.test_client()
    caplog.set_level(logging.INFO)
    statuses: set[int] = set()

    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(_requests(path, method, op))
    def run(request):
        url, verb, query, who, kwargs = request
        headers = {"admin": {"Authorization": f"Bearer {tokens['admin']}"},
                   "reader": {"Authorization": f"Bearer {tokens['reader']}"},
                   "garbage": {"Authorization": "Bearer sst_" + "x" * 43},
                   "malformed": {"Authorization": "Basic Zm9vOmJhcg=="}, "none": {}}[who]
        r = client.open(url, method=verb.upper(), query_string=query, headers=headers, **kwargs)
        statuses.add(r.status_code)
        body = r.get_data()
        assert r.status_code < 500, (verb, url, query, who, r.status_code, body[:300])
        assert b"Traceback" not in body
        if r.status_code >= 400 and r.is_json:
            assert isinstance(r.json.get("error"), str)

    run()
    assert "Traceback" not in caplog.text and not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert statuses  # the operation was exercised


_WEB_SKIP = {"/logout", "/static/<path:filename>"}
WEB_RULES = None


def _web_rules(app) -> list[tuple[str, str]]:
    return sorted((rule.rule, method) for rule in app.url_map.iter_rules()
                  if not rule.rule.startswith("/api/") and rule.rule not in _WEB_SKIP
                  for method in rule.methods - {"HEAD", "OPTIONS"})


_form_fields = ["username", "password", "verdict", "note", "gcs", "age", "ivh", "infratentorial", "volume_ml",
                "current", "new", "again", "action", "role", "retention_days"]


def test_no_page_or_form_answers_5xx(fuzz_app, caplog):
    """Every page and form of the web app, logged in as admin (with a valid CSRF token), with fuzzed path
    parameters, query strings and form fields: no 5xx."""
    app, _tokens = fuzz_app
    client = app.test_client()
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    assert client.post("/login", data={"username": "admin", "password": "admin-password-1",
                                       "csrf_token": csrf}).status_code == 302
    rules = [(r, m) for r, m in _web_rules(app) if r != "/login"]
    caplog.set_level(logging.INFO)

    @settings(max_examples=150, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(rules), st.data())
    def run(rule_method, data):
        rule, method = rule_method
        url = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(data.draw(_ids if "id" in m.group(1) or "index" in m.group(1)
                                                                   else st.text(min_size=1, max_size=12).map(
                                                                       lambda t: quote(t, safe="")))), rule)
        query = data.draw(st.dictionaries(st.sampled_from(["status", "flagged", "q", "page", "rows", "next"]),
                                          st.text(max_size=30), max_size=3))
        form = data.draw(st.dictionaries(st.sampled_from(_form_fields), st.text(max_size=40), max_size=6))
        if method == "POST":
            form["csrf_token"] = csrf
        if "delete" in url and form.get("csrf_token"):
            url = url.replace("/studies/1/", "/studies/2/")  # keep study 1 for the other pages
        r = client.open(url, method=method, query_string=query, data=form if method == "POST" else None)
        assert r.status_code < 500, (method, url, query, form, r.status_code)
        assert b"Traceback" not in r.get_data()

    run()
    assert "Traceback" not in caplog.text and not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
