"""The web app served for real (waitress on 127.0.0.1) under 8 concurrent REST clients, through the load
benchmark's own function (benchmarks/web_load.py): every upload accepted, every poll answered, every study
analysed to ``done``, no error of any kind. The latencies are printed, never asserted (shared machines)."""

from __future__ import annotations

import importlib.util
import socket
import sys
from pathlib import Path

import pytest

from conftest import save_untrained_classifier
from strokescan.app.web.server import WebSettings
from strokescan.inference import Predictor

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "web_load.py"


@pytest.fixture(scope="module")
def web_load():
    spec = importlib.util.spec_from_file_location("web_load_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and threads look modules up by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_concurrent_uploads_all_analysed(web_load, tmp_path):
    model = save_untrained_classifier(tmp_path / "model", size=96)
    settings = WebSettings(instance_dir=tmp_path / "instance", show_identifiers=False,
                           predictor_factory=lambda: Predictor(model, segment=True))
    result = web_load.run_load(settings, clients=8, uploads_per_client=1, timeout=90)
    print("\n" + web_load.table(result))
    assert result["errors"] == 0, result["error_messages"]
    assert result["outcomes"] == {"done": 8}
    assert result["upload_ms"]["n"] == 8
    assert result["poll_ms"]["n"] >= 8 and result["to_done_s"]["n"] == 8
    assert result["baseline_idle_ms"]["n"] == 20
    assert result["requests"] >= 8 + 8 + 20
    # the run stopped by itself: the job worker ended, nothing listens on the port any more
    assert result["worker_stopped"]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", result["port"]), timeout=2).close()
