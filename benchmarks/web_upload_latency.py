"""Upload of the 28-slice GE series to its result in the web app, beside the bare ``Predictor.analyse`` time of
the same series measured in the same run (warm: the models are loaded and one series was analysed first).

    .venv/bin/python benchmarks/web_upload_latency.py [--repeats 3] [--threads 2]

The app runs in-process (Flask's test client, the job worker thread, SQLite in a temporary folder); the clock
runs from the upload request to the first status poll (every 50 ms) that reads ``done``, so it includes storing
the upload, the queue, the analysis with segmentation, the viewer's PNG cache and the database writes.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import torch

from strokescan.app.web.accounts import create_user, issue_token
from strokescan.app.web.server import WebSettings, create_app
from strokescan.config import SAMPLES_DIR
from strokescan.inference import Predictor
from strokescan.io import load_scan

GE_ZIP = SAMPLES_DIR / "ge-hispeed-head-series.zip"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    predictor = Predictor(segment=True, threads=args.threads)
    predictor.analyse(load_scan(GE_ZIP))  # warm
    bare = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        predictor.analyse(load_scan(GE_ZIP))
        bare.append(time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(WebSettings(instance_dir=Path(tmp), predictor_factory=lambda: predictor))
        with app.extensions["strokescan"]["sessions"].begin() as session:
            token = issue_token(session, create_user(session, "bench", "benchmark-password"))
        client, auth = app.test_client(), {"Authorization": f"Bearer {token}"}
        web = []
        data = GE_ZIP.read_bytes()
        for _ in range(args.repeats):
            start = time.perf_counter()
            r = client.post("/api/v1/studies", data={"files": [(io.BytesIO(data), "series.zip")]}, headers=auth,
                            content_type="multipart/form-data")
            study = r.get_json()["id"]
            while client.get(f"/api/v1/studies/{study}", headers=auth).get_json()["status"] not in ("done", "failed"):
                time.sleep(0.05)
            web.append(time.perf_counter() - start)
        app.extensions["strokescan"]["worker"].stop()
    print(f"{'workload (28-slice GE series, warm)':<58}{'median s':>9}{'max s':>8}   limit  ({args.threads} threads, {args.repeats} repeats)")
    print(f"{'web app: upload (API) -> result stored, status done':<58}{statistics.median(web):>9.2f}{max(web):>8.2f}   <= 10 s")
    print(f"{'  baseline: bare Predictor.analyse (with segmentation)':<58}{statistics.median(bare):>9.2f}{max(bare):>8.2f}")


if __name__ == "__main__":
    main()
