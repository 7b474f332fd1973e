"""`strokescan predict --workers N / --scheduler ADDRESS` (strokescan.app.distributed): the serial run's lines in
the serial run's order, the same file names, one error line per bad input, a local-only cluster that goes away,
and one line (no traceback) when the cluster cannot be reached."""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import dask
import psutil
import pytest
from distributed import Client, LocalCluster

from conftest import save_hemorrhage_everywhere_segmenter
from strokescan.app import distributed
from strokescan.app.batch import BatchItem, PredictorOptions
from strokescan.app.cli import main
from strokescan.config import SAMPLES_DIR
from strokescan.errors import MultipleSeriesError

GE_ZIP = SAMPLES_DIR / "ge-hispeed-head-series.zip"
BLEED = SAMPLES_DIR / "phe-sich_0021_13.png"
NORMAL = SAMPLES_DIR / "phe-sich_0011_18.png"
PROBABILITY_TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def model_args(untrained_classifier: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Small models saved the real way (cheap for every worker to load): an untrained detector and a U-Net that
    says "hemorrhage" everywhere, so that masks and overlays are written."""
    segmenter = save_hemorrhage_everywhere_segmenter(tmp_path_factory.mktemp("segmenter"))
    return ["--model", str(untrained_classifier), "--segmenter", str(segmenter)]


@pytest.fixture(scope="module")
def scheduler_address() -> str:
    """One local cluster shared by the tests that use --scheduler (starting one costs seconds)."""
    with distributed.local_cluster(2) as cluster:
        yield cluster.scheduler_address


def _lines(capsys: pytest.CaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def _same(a: Any, b: Any) -> bool:
    """Equal, floats to PROBABILITY_TOLERANCE."""
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= PROBABILITY_TOLERANCE
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _listening(pids: set[int]) -> list[tuple[str, int]]:
    return [(c.laddr.ip, c.laddr.port) for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.pid in pids]


def test_workers_2_prints_the_serial_lines_in_order_and_the_cluster_is_local_and_gone(
        model_args, tmp_path, capsys, monkeypatch):
    started: dict[str, Any] = {}

    def recorded_cluster(*args: Any) -> LocalCluster:
        before = set(psutil.Process().children(recursive=True))
        cluster = local_cluster(*args)
        workers = [p for p in set(psutil.Process().children(recursive=True)) - before
                   if "resource_tracker" not in " ".join(p.cmdline())]  # multiprocessing's: it lives with us
        started["workers"] = workers
        started["listening"] = _listening({os.getpid(), *(p.pid for p in workers)})
        return cluster

    local_cluster = distributed.local_cluster
    monkeypatch.setattr(distributed, "local_cluster", recorded_cluster)
    runs = {}
    for engine, extra in (("serial", []), ("dask", ["--workers", "2"])):
        out = tmp_path / engine
        rc = main(["predict", str(SAMPLES_DIR), "--json", *model_args, "--masks-dir", str(out / "masks"),
                   "--overlays-dir", str(out / "overlays"), *extra])
        assert rc == 0
        runs[engine] = _lines(capsys)
    serial = [json.loads(json.dumps(x).replace(str(tmp_path / "serial"), str(tmp_path / "dask"))) for x in runs["serial"]]
    assert [(x["path"], x["slice_index"]) for x in runs["dask"]] == [(x["path"], x["slice_index"]) for x in serial]
    assert len(serial) == 33 and all(_same(a, b) for a, b in zip(runs["dask"], serial))
    for kind in ("masks", "overlays"):
        names = sorted(p.name for p in (tmp_path / "serial" / kind).iterdir())
        assert len(names) == 32 and names == sorted(p.name for p in (tmp_path / "dask" / kind).iterdir())

    assert len(started["workers"]) >= 2 and started["listening"]
    assert {ip for ip, _ in started["listening"]} == {"127.0.0.1"}
    assert 8787 not in {port for _, port in started["listening"]}  # no dashboard on its usual port
    gone, alive = psutil.wait_procs(started["workers"], timeout=10)
    assert not alive
    ports = {port for _, port in started["listening"]}
    assert not [c for c in psutil.net_connections(kind="inet")
                if c.status == psutil.CONN_LISTEN and c.laddr.port in ports and c.pid == os.getpid()]


def test_a_bad_input_gets_its_error_line_and_the_others_are_analysed(scheduler_address, model_args, tmp_path,
                                                                     capsys):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    inputs = [str(empty), str(BLEED), str(text), str(tmp_path / "missing.dcm"), str(NORMAL)]
    rc = main(["predict", *inputs, "--json", "--scheduler", scheduler_address, *model_args])
    assert rc == 2
    lines = _lines(capsys)
    assert [x["path"] for x in lines] == inputs
    assert {Path(x["path"]).name: x["error_type"] for x in lines if "error" in x} == {
        "empty.png": "EmptyInputError", "notes.txt": "UnsupportedFormatError", "missing.dcm": "PathNotFoundError"}
    assert all(0.0 <= x["probability"] <= 1.0 and x["mask"] is None for x in lines if "probability" in x)


def test_the_runner_yields_items_in_order_without_arrays_and_names_outputs_like_serial(
        scheduler_address, untrained_classifier, model_args, tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(BLEED, tmp_path / folder / BLEED.name)
    runner = distributed.DaskBatchRunner(
        PredictorOptions(untrained_classifier, segmenter_dir=Path(model_args[-1])), masks_dir=tmp_path / "masks",
        scheduler=scheduler_address)
    items = list(runner.run([str(tmp_path / "a"), str(NORMAL), str(tmp_path / "b")]))
    assert [item.path for item in items] == [str(tmp_path / "a" / BLEED.name), str(NORMAL),
                                             str(tmp_path / "b" / BLEED.name)]
    assert all(item.error is None and item.result.masks is None for item in items)
    assert [Path(p).name for item in items for p in item.mask_paths] == [
        "phe-sich_0021_13.png", "phe-sich_0011_18.png", "phe-sich_0021_13-2.png"]
    assert all(Path(p).is_file() for item in items for p in item.mask_paths)


def test_when_dask_gives_up_on_a_scan_the_finished_items_come_first_then_one_error(untrained_classifier):
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), distributed.local_cluster(
            2, logging.CRITICAL) as cluster, Client(cluster, set_as_default=False) as client:
        worker_pids = list(client.run(os.getpid).values())
        runner = distributed.DaskBatchRunner(PredictorOptions(untrained_classifier), scheduler=cluster.scheduler_address)
        inputs = [str(NORMAL)] + [str(GE_ZIP)] * 6
        items = []
        with pytest.raises(distributed.ClusterError) as failure:
            for item in runner.run(inputs):
                if not items:  # the scans still running die with their workers, and Dask may not retry them
                    for pid in worker_pids:
                        psutil.Process(pid).kill()
                items.append(item)
    assert items[0].path == str(NORMAL) and all(item.error is None for item in items)
    assert str(failure.value).count("\n") == 0 and "Dask gave up" in str(failure.value)
    assert f"{len(items)} of 7 inputs finished" in str(failure.value)


def test_an_item_pickles_with_an_error_whose_constructor_takes_more_than_a_message():
    item = BatchItem("folder", error=MultipleSeriesError("folder: 2 series", [{"index": 0}, {"index": 1}]))
    back = pickle.loads(pickle.dumps(item))
    assert type(back.error) is MultipleSeriesError and str(back.error) == "folder: 2 series"
    assert back.error.series == [{"index": 0}, {"index": 1}] and back.json_lines() == item.json_lines()


def test_an_unreachable_scheduler_is_one_line_and_exit_2(untrained_classifier):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free, and nothing listens there once closed
    proc = subprocess.run([sys.executable, "-m", "strokescan.app.cli", "predict", str(NORMAL), "--json",
                           "--model", str(untrained_classifier), "--scheduler", f"tcp://127.0.0.1:{port}"],
                          capture_output=True, text=True, timeout=distributed.SCHEDULER_CONNECT_TIMEOUT_S + 50)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"strokescan: error: cannot reach the Dask scheduler at tcp://127.0.0.1:{port}")


@pytest.mark.parametrize("engine", [["--workers", "2", "--scheduler", "tcp://127.0.0.1:8786"], ["--workers", "0"],
                                    ["--workers", "two"], ["--scheduler", "127.0.0.1"]])
def test_bad_engine_options_are_refused_with_exit_2(engine, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["predict", str(NORMAL), *engine])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("strokescan predict: error: argument --")


def test_workers_1_is_the_serial_run(untrained_classifier, capsys, monkeypatch):
    monkeypatch.setattr(distributed, "DaskBatchRunner", None)  # would fail if it were used
    assert main(["predict", str(NORMAL), "--json", "--model", str(untrained_classifier), "--workers", "1"]) == 0
    assert [x["path"] for x in _lines(capsys)] == [str(NORMAL)]
