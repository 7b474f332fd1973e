"""Real peers on loopback: DCMTK storescu as the scanner, the listener as a process, Orthanc as the PACS.

All of it runs in a private network namespace that holds only ``lo`` (Orthanc binds every address; there that
means loopback only). Skipped, with the reason, without Orthanc, DCMTK or root.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from conftest import save_untrained_classifier, wait_for
from pydicom.uid import generate_uid

from strokescan.app.integration.loopback import missing_tools, private_loopback, start_orthanc
from strokescan.config import SAMPLES_DIR

pytestmark = pytest.mark.skipif(missing_tools() is not None, reason=f"real DICOM peers unavailable: {missing_tools()}")

LISTEN_PORT = 11112


@pytest.fixture(scope="module")
def namespace():
    with private_loopback():
        yield


@pytest.fixture(scope="module")
def ge_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ge")
    with zipfile.ZipFile(SAMPLES_DIR / "ge-hispeed-head-series.zip") as z:
        z.extractall(folder)
    return folder


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_untrained_classifier(tmp_path_factory.mktemp("clf"))


@pytest.fixture
def orthanc(namespace, tmp_path: Path):
    server = start_orthanc(tmp_path / "orthanc")
    yield server
    server.stop(kill=True)  # its storage is thrown away


class ListenerProcess:
    def __init__(self, instance: Path, model: Path, orthanc, quiet: float) -> None:
        self.log = open(instance.parent / f"listener-{time.monotonic_ns()}.log", "w")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "strokescan.app.integration.listener", "--instance-dir", str(instance),
             "--port", str(LISTEN_PORT), "--quiet-seconds", str(quiet), "--allow", "SCANNER",
             "--dest", f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}", "--model", str(model)],
            stdout=subprocess.PIPE, stderr=self.log, text=True, env={**os.environ, "STROKESCAN_TORCH_THREADS": "2"})
        line = self.process.stdout.readline()
        assert line.startswith("strokescan listen:"), f"listener did not start: {line!r}"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process.stdout.close()
        self.log.close()


@pytest.fixture
def listeners(namespace, tmp_path: Path, model: Path):
    started: list[ListenerProcess] = []

    def start(orthanc, quiet: float = 1.0) -> ListenerProcess:
        proc = ListenerProcess(tmp_path / "instance", model, orthanc, quiet)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def storescu(files: list[Path], calling: str = "SCANNER", background: bool = False):
    args = ["storescu", "-v", "-aet", calling, "-aec", "STROKESCAN", "127.0.0.1", str(LISTEN_PORT), *map(str, files)]
    if background:
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def acknowledged(output: str) -> int:
    return len(re.findall(r"Received Store Response \(Success\)", output))


def inbox_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "instance" / "dicom-inbox").glob("*/instances/*.dcm"))


def received(orthanc) -> dict[str, pydicom.Dataset]:
    out = {}
    for instance in orthanc.instances():
        ds = pydicom.dcmread(io.BytesIO(orthanc.get(f"/instances/{instance}/file")))
        out[str(ds.Modality)] = ds
    return out


def check_echo():
    run = subprocess.run(["echoscu", "-aet", "SCANNER", "-aec", "STROKESCAN", "127.0.0.1", str(LISTEN_PORT)],
                         capture_output=True, text=True, timeout=20)
    assert run.returncode == 0, run.stdout + run.stderr
    refused = subprocess.run(["echoscu", "-aet", "INTRUDER", "-aec", "STROKESCAN", "127.0.0.1", str(LISTEN_PORT)],
                             capture_output=True, text=True, timeout=20)
    assert refused.returncode != 0


def test_ge_series_to_orthanc(orthanc, listeners, ge_folder: Path, tmp_path: Path):
    listeners(orthanc)
    check_echo()
    files = sorted(ge_folder.glob("*.dcm"))
    run = storescu(files)
    assert run.returncode == 0 and acknowledged(run.stdout + run.stderr) == 28, run.stdout + run.stderr
    assert len(inbox_files(tmp_path)) == 28
    wait_for(lambda: len(orthanc.instances()) >= 3, 120, "SEG, SR and key image in Orthanc")
    objects = received(orthanc)
    assert sorted(objects) == ["OT", "SEG", "SR"]
    sources = {ds.SOPInstanceUID: ds for ds in (pydicom.dcmread(f) for f in files)}
    study = next(iter(sources.values())).StudyInstanceUID
    assert {ds.StudyInstanceUID for ds in objects.values()} == {study}
    seg = hd.seg.Segmentation.from_dataset(objects["SEG"])
    iop = seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    assert np.allclose([float(v) for v in iop], [float(v) for v in next(iter(sources.values())).ImageOrientationPatient])
    for item in seg.PerFrameFunctionalGroupsSequence:
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert np.allclose([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient],
                           [float(v) for v in sources[uid].ImagePositionPatient], atol=1e-4)
    sr = hd.sr.Comprehensive3DSR.from_dataset(objects["SR"])
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    volumes = {g.finding_type.meaning for g in sr.content.get_volumetric_roi_measurement_groups()}
    assert volumes <= {"Hemorrhage", "Edema", "Infarct"}
    assert objects["OT"].BurnedInAnnotation == "YES"


def test_sigkill_mid_series_loses_nothing_and_sends_once(orthanc, listeners, ge_folder: Path, tmp_path: Path):
    files = sorted(ge_folder.glob("*.dcm"))
    first = listeners(orthanc, quiet=2.0)
    sender = storescu(files, background=True)
    wait_for(lambda: len(inbox_files(tmp_path)) >= 10, 30, "10 instances in the inbox")
    first.stop(signal.SIGKILL)
    output, _ = sender.communicate(timeout=30)
    acked = acknowledged(output)
    on_disk = inbox_files(tmp_path)
    assert 9 <= acked <= 28 and len(on_disk) >= acked  # every acknowledged one is on disk
    for path in on_disk:
        pydicom.dcmread(path)  # and complete
    assert not [p for p in (tmp_path / "instance" / "dicom-inbox").glob("*/instances/*") if p.suffix != ".dcm"]
    listeners(orthanc, quiet=2.0)
    run = storescu(files)  # the scanner sends the series again
    assert run.returncode == 0
    wait_for(lambda: len(orthanc.instances()) >= 3, 120, "the results in Orthanc")
    time.sleep(2.5)  # a duplicate would come now
    assert len(inbox_files(tmp_path)) == 28
    assert sorted(received(orthanc)) == ["OT", "SEG", "SR"]
    assert orthanc.get("/statistics")["CountInstances"] == 3
    sent = list((tmp_path / "instance" / "dicom-inbox").glob("*/sent.json"))
    assert len(sent) == 1
    logs = "".join(p.read_text() for p in tmp_path.glob("listener-*.log"))
    assert logs.count("results sent to ORTHANC") == 1


def test_four_concurrent_associations(orthanc, listeners, ge_folder: Path, tmp_path: Path):
    listeners(orthanc)
    series_files = []
    for k in range(4):
        folder = tmp_path / f"series{k}"
        folder.mkdir()
        series = generate_uid()
        for f in sorted(ge_folder.glob("*.dcm"))[8:14]:
            ds = pydicom.dcmread(f)
            ds.SeriesInstanceUID, ds.SOPInstanceUID = series, generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.save_as(folder / f.name)
        series_files.append(sorted(folder.glob("*.dcm")))
    senders = [storescu(files, background=True) for files in series_files]
    outputs = [s.communicate(timeout=60)[0] for s in senders]
    assert [acknowledged(o) for o in outputs] == [6] * 4 and all(s.returncode == 0 for s in senders)
    assert len(inbox_files(tmp_path)) == 24
    wait_for(lambda: len(orthanc.instances()) >= 12, 150, "four results in Orthanc")
    time.sleep(1.5)
    assert orthanc.get("/statistics")["CountInstances"] == 12
    assert len(list((tmp_path / "instance" / "dicom-inbox").glob("*/sent.json"))) == 4
