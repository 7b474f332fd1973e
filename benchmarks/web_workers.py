"""``strokescan worker`` processes over one PostgreSQL database: throughput with two workers beside one, measured
in one run, and that every study is analysed exactly once.

    .venv/bin/python benchmarks/web_workers.py [--studies 20] [--workers 1,2] [--untrained] [--series]

For each worker count: a fresh database on a throwaway PostgreSQL server (this machine's, started in a temporary
folder on a Unix socket only, stopped and removed at the end), ``--studies`` uploads of the bundled slice
``phe-sich_0021_13.png`` (or, with ``--series``, of the bundled 28-slice GE series) queued through the web app's
own code, then that many ``strokescan worker`` processes started at once (``STROKESCAN_TORCH_THREADS=1`` each, so
that two workers use two cores). Printed per count: studies done, failed, the times each study was analysed (the
audit trail's ``analysed`` events: 1 each is the target), studies per worker, the wall time from the first
claim to the last result (model loading excluded) and studies per minute.

With --untrained a small untrained classifier (plus the bundled segmenter) replaces the classifier: the wiring
and the queue, not the models, are measured. Figures from these shared machines are noisy: compare the counts
of one run with each other.
"""

from __future__ import annotations

import argparse
import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from strokescan.config import SAMPLES_DIR

SLICE = SAMPLES_DIR / "phe-sich_0021_13.png"
SERIES = SAMPLES_DIR / "ge-hispeed-head-series.zip"


def _pg_binary(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """A PostgreSQL server (Debian's ``postgresql`` package) in a temporary folder, listening on a Unix socket only
    (no TCP port), with trust authentication for its one user; yields a SQLAlchemy URL of database ``postgres``.
    As root it runs as user ``postgres`` (initdb refuses root). Stopped and removed on exit."""
    initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
    if not initdb or not pg_ctl:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="strokescan-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data = root / "data"
    try:
        subprocess.run([*prefix, initdb, "-D", str(data), "-A", "trust", "-U", "strokescan", "-E", "UTF8",
                        "--no-instructions"], check=True, capture_output=True, timeout=120)
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "-o",
                        f"-k {root} -c listen_addresses='' -c fsync=off -c max_connections=60", "start"],
                       check=True, capture_output=True, timeout=120)
        try:
            yield f"postgresql+psycopg://strokescan@/postgres?host={root}"
        finally:
            subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True,
                           timeout=60)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def fresh_database(server_url: str, name: str) -> str:
    """A new, empty database ``name`` on the server; returns its URL."""
    import psycopg

    with psycopg.connect(server_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return server_url.replace("/postgres?", f"/{name}?")


def untrained_classifier(folder: Path, size: int = 96) -> Path:
    """An untrained classifier saved the real way (``ClassifierPlan.for_wiring_checks``): wiring runs only."""
    import torch

    from strokescan.models.classifier import ClassifierPlan, SliceClassifier, save_classifier
    from strokescan.preprocessing.pipeline import SlicePlan

    torch.manual_seed(0)
    save_classifier(SliceClassifier(pretrained=False),
                    ClassifierPlan.for_wiring_checks(SlicePlan(size=size, correct_rotation=False)), folder)
    return folder


def queue_studies(url: str, instance: Path, n: int, sample: Path) -> list[int]:
    """``n`` uploads of ``sample`` queued in the database at ``url`` (the web app's own upload code)."""
    from strokescan.app.web.db import make_engine, session_factory, upgrade_database
    from strokescan.app.web.studies import create_study
    from strokescan.app.web.uploads import UploadLimits

    upgrade_database(url)
    engine = make_engine(url)
    ids = []
    with session_factory(engine).begin() as session:
        for _ in range(n):
            with sample.open("rb") as stream:
                ids.append(create_study(session, instance, [(sample.name, stream)], UploadLimits(), None).id)
    engine.dispose()
    return ids


def start_worker(url: str, instance: Path, name: str, model: Path | None, lease: float = 10.0,
                 log: Path | None = None) -> subprocess.Popen:
    """A ``strokescan worker`` process (its own session: a signal to its group reaches it alone)."""
    env = {**os.environ, "STROKESCAN_DATABASE_URL": url, "STROKESCAN_WEB_DIR": str(instance),
           "STROKESCAN_TORCH_THREADS": "1", "STROKESCAN_SHOW_IDENTIFIERS": "0"}
    cmd = [sys.executable, "-m", "strokescan.app.cli", "worker", "--id", name, "--poll", "0.2", "--lease", str(lease)]
    if model:
        cmd += ["--model", str(model)]
    out = log.open("w") if log else subprocess.DEVNULL
    return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop_workers(workers: list[subprocess.Popen]) -> None:
    for p in workers:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in workers:
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def outcome(url: str) -> dict:
    """Statuses, analyses per study (audit ``analysed`` events), studies per worker, first claim to last result."""
    from sqlalchemy import func, select

    from strokescan.app.web.db import AuditEvent, Study, make_engine, session_factory

    engine = make_engine(url)
    with session_factory(engine)() as session:
        studies = session.scalars(select(Study)).all()
        analysed = Counter(session.scalars(select(AuditEvent.study_id).where(AuditEvent.action == "analysed")))
        first = session.scalar(select(func.min(Study.started_at)))
        last = session.scalar(select(func.max(Study.finished_at)))
    engine.dispose()
    return {"n": len(studies), "status": Counter(s.status.value for s in studies),
            "analysed": Counter(analysed[s.id] for s in studies), "by_worker": Counter(s.claimed_by for s in studies),
            "seconds": (last - first).total_seconds() if first and last else None}


def wait_done(url: str, n: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = outcome(url)
        if result["status"]["done"] + result["status"]["failed"] >= n:
            return True
        time.sleep(0.5)
    return False


def run(counts: list[int], n_studies: int, untrained: bool, series: bool, timeout: float) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="strokescan-workers-") as temp, throwaway_postgres() as server:
        temp = Path(temp)
        model = untrained_classifier(temp / "model") if untrained else None
        for k in counts:
            url = fresh_database(server, f"workers_{k}")
            instance = temp / f"instance-{k}"
            queue_studies(url, instance, n_studies, SERIES if series else SLICE)
            workers = [start_worker(url, instance, f"w{i + 1}", model, log=temp / f"w{k}-{i + 1}.log")
                       for i in range(k)]
            try:
                finished = wait_done(url, n_studies, timeout)
            finally:
                stop_workers(workers)
            row = {"workers": k, "finished": finished, **outcome(url)}
            rows.append(row)
            per_min = 60 * row["n"] / row["seconds"] if row["seconds"] else float("nan")
            print(f"{k} worker(s): {row['status']['done']} done, {row['status']['failed']} failed of {row['n']}; "
                  f"analysed per study {dict(row['analysed'])}; per worker {dict(row['by_worker'])}; "
                  f"first claim to last result {row['seconds']:.1f} s = {per_min:.1f} studies/min", flush=True)
    if len(rows) > 1 and all(r["seconds"] for r in rows):
        print(f"speed-up {rows[-1]['workers']} vs {rows[0]['workers']} worker(s): "
              f"{rows[0]['seconds'] / rows[-1]['seconds']:.2f}x")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--workers", default="1,2", help="worker counts to measure, comma-separated")
    parser.add_argument("--untrained", action="store_true", help="a small untrained classifier (a wiring run)")
    parser.add_argument("--series", action="store_true", help="the 28-slice GE series instead of one slice")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    rows = run([int(k) for k in args.workers.split(",")], args.studies, args.untrained, args.series, args.timeout)
    ok = all(r["finished"] and r["analysed"] == Counter({1: r["n"]}) for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
