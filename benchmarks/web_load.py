"""The web app under concurrent REST clients, served for real (waitress on 127.0.0.1, a free port).

    .venv/bin/python benchmarks/web_load.py [--clients 8] [--uploads-per-client 3] [--timeout 120] [--untrained]

Each client (a thread, ``http.client`` on one keep-alive connection) uploads the bundled slice
``phe-sich_0021_13.png`` with ``POST /api/v1/studies`` (multipart built by hand), then polls
``GET /api/v1/studies/<id>`` until the study is ``done`` or ``failed``, then uploads the next one. Printed:
requests sent, errors (an unexpected HTTP status, a connection error, a failed study, a study not finished by
--timeout), p50/p95/max latency of the uploads and of the status polls, upload-to-done time (p50/p95), and as the
baseline measured in the same run the latency of ``GET /api/v1/openapi.json`` (a request that does no work), once
with the server idle and once sampled while the clients run.

The bundled models are used (loaded once before the clients start; the load time is printed apart). With
--untrained a small untrained classifier (plus the bundled segmenter) replaces the classifier: a quick run of
the wiring, its figures say nothing about the real models. The analyses run one at a time in the app's one job
worker, so upload-to-done grows with the queue: that is the queue's length, not a slow request.

The server, its job worker and the temporary instance folder are gone when the command ends. Figures from
these shared machines are noisy: compare the request latencies with the baseline of the same run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from strokescan.config import SAMPLES_DIR

SAMPLE = SAMPLES_DIR / "phe-sich_0021_13.png"
HOST = "127.0.0.1"
USER, PASSWORD = "load-client", "load-client-password"
POLL_SECONDS = 0.5


# --- the server ------------------------------------------------------------------------------------------------

@contextmanager
def serving(app, threads: int = 8):
    """The Flask ``app`` under waitress on 127.0.0.1 (a free port) in a daemon thread; yields the port. On exit
    the listening socket and the open connections are closed, the request threads and the job worker stopped."""
    from waitress import create_server, wasyncore

    server = create_server(app, host=HOST, port=0, threads=threads, ident="strokescan-load")
    thread = threading.Thread(target=server.run, name="waitress", daemon=True)
    thread.start()
    try:
        yield server.effective_port
    finally:
        # the request threads first (one still finishing a response pulls the trigger, which must be open), then
        # the sockets, closed from inside the server's loop (its trigger runs the call there): a socket closed
        # from this thread while the loop waits in select() ends that loop with EBADF
        server.task_dispatcher.shutdown(timeout=5)
        server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map, ignore_all=True))
        thread.join(10)
        worker = app.extensions["strokescan"].get("worker")
        if worker is not None:
            worker.stop()
            worker.join(60)  # a running analysis ends first
        app.extensions["strokescan"]["engine"].dispose()


def untrained_classifier(folder: Path, size: int = 96) -> Path:
    """An untrained classifier saved the real way (``ClassifierPlan.for_wiring_checks``): wiring runs only."""
    import torch

    from strokescan.models.classifier import ClassifierPlan, SliceClassifier, save_classifier
    from strokescan.preprocessing.pipeline import SlicePlan

    torch.manual_seed(0)
    save_classifier(SliceClassifier(pretrained=False),
                    ClassifierPlan.for_wiring_checks(SlicePlan(size=size, correct_rotation=False)), folder)
    return folder


# --- the clients -----------------------------------------------------------------------------------------------

def multipart(field: str, filename: str, content: bytes, content_type: str = "application/octet-stream"
              ) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body with one file part; returns (body, Content-Type header)."""
    boundary = "strokescan-" + uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode()
    return head + content + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class Client:
    """One keep-alive connection to the server (reopened after an error); every request timed."""

    def __init__(self, port: int, token: str | None = None, timeout: float = 30.0) -> None:
        self.port, self.timeout = port, timeout
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
                ) -> tuple[int, bytes, float]:
        """(status, body, seconds); raises OSError / http.client.HTTPException on a broken connection."""
        if self._conn is None:
            self._conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
        start = time.perf_counter()
        try:
            self._conn.request(method, path, body=body, headers={**self.headers, **(headers or {})})
            response = self._conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        seconds = time.perf_counter() - start
        if response.will_close:
            self.close()
        return response.status, data, seconds

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class Tally:
    """What all the threads measured (one lock: the clients add a few numbers a second)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.errors: list[str] = []
        self.upload_s: list[float] = []
        self.poll_s: list[float] = []
        self.to_done_s: list[float] = []
        self.baseline_load_s: list[float] = []
        self.outcomes: dict[str, int] = {}

    def sent(self, samples: list[float] | None, seconds: float | None, error: str | None = None) -> None:
        """One request sent: its time (when an answer came) and the error, if any."""
        with self.lock:
            self.requests += 1
            if samples is not None and seconds is not None:
                samples.append(seconds)
            if error:
                self.errors.append(error)

    def problem(self, error: str) -> None:
        """An error that is not one request's (a failed or unfinished study)."""
        with self.lock:
            self.errors.append(error)

    def outcome(self, status: str) -> None:
        with self.lock:
            self.outcomes[status] = self.outcomes.get(status, 0) + 1


def _client_run(port: int, token: str, body: bytes, content_type: str, uploads: int, deadline: float,
                max_polls: int, tally: Tally) -> None:
    client = Client(port, token)
    try:
        for _ in range(uploads):
            if time.monotonic() > deadline:
                tally.problem("timeout before the upload was sent")
                tally.outcome("not sent")
                continue
            started = time.perf_counter()
            try:
                status, data, seconds = client.request("POST", "/api/v1/studies", body, {"Content-Type": content_type})
            except (OSError, http.client.HTTPException) as error:
                tally.sent(None, None, f"upload: {type(error).__name__}: {error}")
                tally.outcome("upload error")
                continue
            tally.sent(tally.upload_s, seconds, None if status == 202 else f"upload: HTTP {status}: {data[:200]!r}")
            if status != 202:
                tally.outcome("upload refused")
                continue
            study_id = json.loads(data)["id"]
            final = None
            for _ in range(max_polls):
                if time.monotonic() > deadline:
                    break
                time.sleep(POLL_SECONDS)
                try:
                    status, data, seconds = client.request("GET", f"/api/v1/studies/{study_id}")
                except (OSError, http.client.HTTPException) as error:
                    tally.sent(None, None, f"poll: {type(error).__name__}: {error}")
                    continue
                if status != 200:
                    tally.sent(tally.poll_s, seconds, f"poll: HTTP {status}: {data[:200]!r}")
                    continue
                tally.sent(tally.poll_s, seconds)
                doc = json.loads(data)
                if doc["status"] in ("done", "failed"):
                    final = doc
                    break
            if final is None:
                tally.problem(f"study {study_id}: not finished in time")
                tally.outcome("unfinished")
                continue
            tally.outcome(final["status"])
            if final["status"] == "done":
                with tally.lock:
                    tally.to_done_s.append(time.perf_counter() - started)
            else:
                tally.problem(f"study {study_id}: failed: {final.get('error')}")
    finally:
        client.close()


def _baseline(port: int, n: int) -> list[float]:
    client, seconds = Client(port), []
    try:
        for _ in range(n):
            status, _data, s = client.request("GET", "/api/v1/openapi.json")
            if status != 200:
                raise RuntimeError(f"openapi.json answered HTTP {status}")
            seconds.append(s)
    finally:
        client.close()
    return seconds


def _baseline_while(port: int, stop: threading.Event, tally: Tally) -> None:
    client = Client(port)
    try:
        while not stop.wait(0.25):
            try:
                status, data, seconds = client.request("GET", "/api/v1/openapi.json")
            except (OSError, http.client.HTTPException) as error:
                tally.sent(None, None, f"baseline: {type(error).__name__}: {error}")
                continue
            tally.sent(tally.baseline_load_s, seconds, None if status == 200 else f"baseline: HTTP {status}")
    finally:
        client.close()


# --- the run ---------------------------------------------------------------------------------------------------

def stats(values: list[float], scale: float = 1000.0) -> dict:
    """n, p50, p95, max (nearest rank) of ``values`` times ``scale`` (ms by default)."""
    if not values:
        return {"n": 0, "p50": None, "p95": None, "max": None}
    v = sorted(values)

    def rank(q: float) -> float:
        return v[min(len(v) - 1, max(0, math.ceil(q * len(v)) - 1))] * scale

    return {"n": len(v), "p50": rank(0.50), "p95": rank(0.95), "max": v[-1] * scale}


def run_load(settings=None, *, clients: int = 8, uploads_per_client: int = 3, timeout: float = 120.0,
             max_polls: int | None = None, sample: Path = SAMPLE, untrained: bool = False,
             log: Callable[[str], None] = lambda _m: None) -> dict:
    """Serve the app, run ``clients`` concurrent clients of ``uploads_per_client`` uploads each, stop.

    ``settings``: a :class:`~strokescan.app.web.server.WebSettings` (its instance folder is the caller's to
    remove) or None: a temporary instance folder (removed at the end) and the bundled models, or with
    ``untrained`` a small untrained classifier. The Predictor is built once before the clients start.
    ``timeout`` bounds the whole load phase; each study is polled at most ``max_polls`` times (default: as many
    as fit in ``timeout``). Returns the counts and the latency statistics (ms; upload-to-done in s)."""
    from strokescan.app.web.accounts import create_user, issue_token
    from strokescan.app.web.server import WebSettings, create_app
    from strokescan.inference import Predictor

    temp = None
    if settings is None:
        temp = Path(tempfile.mkdtemp(prefix="strokescan-load-"))
        if untrained:
            model = untrained_classifier(temp / "model")
            settings = WebSettings(instance_dir=temp / "instance", predictor_factory=lambda: Predictor(model, segment=True))
        else:
            settings = WebSettings(instance_dir=temp / "instance")
    try:
        t0 = time.perf_counter()
        predictor = settings.predictor_factory()  # a model that cannot load fails here, not as failed studies
        model_load_s = time.perf_counter() - t0
        settings = replace(settings, predictor_factory=lambda: predictor, start_worker=True)
        app = create_app(settings)
        with app.extensions["strokescan"]["sessions"].begin() as session:
            token = issue_token(session, create_user(session, USER, PASSWORD))
        body, content_type = multipart("files", sample.name, sample.read_bytes(), "image/png")
        with serving(app, threads=max(4, min(clients, 16))) as port:
            log(f"serving on http://{HOST}:{port}/ ({clients} clients x {uploads_per_client} uploads)")
            idle = _baseline(port, 20)
            tally = Tally()
            tally.requests += len(idle)
            stop = threading.Event()
            sampler = threading.Thread(target=_baseline_while, args=(port, stop, tally), daemon=True)
            start = time.monotonic()
            deadline = start + timeout
            polls = max_polls or int(timeout / POLL_SECONDS) + 1
            threads = [threading.Thread(target=_client_run, daemon=True, name=f"client-{i}",
                                        args=(port, token, body, content_type, uploads_per_client, deadline, polls,
                                              tally)) for i in range(clients)]
            sampler.start()
            for t in threads:
                t.start()
            for t in threads:
                t.join(max(1.0, deadline - time.monotonic() + 30))
            stop.set()
            sampler.join(10)
            wall_s = time.monotonic() - start
            hung = sum(t.is_alive() for t in threads)
            if hung:
                tally.problem(f"{hung} client thread(s) still running at the end")
        worker = app.extensions["strokescan"].get("worker")
        worker_stopped = worker is None or not worker.is_alive()
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    return {
        "port": port, "worker_stopped": worker_stopped,
        "clients": clients, "uploads_per_client": uploads_per_client, "uploads": clients * uploads_per_client,
        "requests": tally.requests, "errors": len(tally.errors), "error_messages": tally.errors[:20],
        "outcomes": dict(tally.outcomes), "wall_s": wall_s, "model_load_s": model_load_s,
        "upload_ms": stats(tally.upload_s), "poll_ms": stats(tally.poll_s), "to_done_s": stats(tally.to_done_s, 1.0),
        "baseline_idle_ms": stats(idle), "baseline_load_ms": stats(tally.baseline_load_s),
    }


def table(result: dict) -> str:
    """The result as a short text table."""
    def row(name: str, s: dict, unit: str) -> str:
        cell = lambda v: "-" if v is None else f"{v:8.1f}"  # noqa: E731
        return f"{name:<34} {s['n']:>5} {cell(s['p50'])} {cell(s['p95'])} {cell(s['max'])}  {unit}"

    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(result["outcomes"].items())) or "none"
    lines = [
        f"clients {result['clients']} x uploads {result['uploads_per_client']}: {result['uploads']} studies, "
        f"{result['requests']} requests, {result['errors']} errors; studies: {outcomes}",
        f"load phase {result['wall_s']:.1f} s; model loaded in {result['model_load_s']:.1f} s before it",
        f"{'':<34} {'n':>5} {'p50':>8} {'p95':>8} {'max':>8}",
        row("POST /api/v1/studies", result["upload_ms"], "ms"),
        row("GET /api/v1/studies/<id> (poll)", result["poll_ms"], "ms"),
        row("upload -> done", result["to_done_s"], "s"),
        row("baseline openapi.json, idle", result["baseline_idle_ms"], "ms"),
        row("baseline openapi.json, under load", result["baseline_load_ms"], "ms"),
    ]
    lines += [f"error: {m}" for m in result["error_messages"][:5]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--uploads-per-client", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds the load phase may last")
    parser.add_argument("--untrained", action="store_true",
                        help="a small untrained classifier instead of the bundled one (a quick wiring run)")
    args = parser.parse_args(argv)
    try:
        result = run_load(clients=args.clients, uploads_per_client=args.uploads_per_client, timeout=args.timeout,
                          untrained=args.untrained, log=print)
    except Exception as error:  # noqa: BLE001 - the models are loaded first: say so in one line
        print(f"web_load: the models did not load ({type(error).__name__}: {error}); try --untrained")
        return 2
    print(table(result))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
