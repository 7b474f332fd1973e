"""Real peers on loopback: DCMTK storescu as the scanner, the listener as a process, Orthanc as the PACS.

Covered here: results in Orthanc, SIGKILL mid-series (files and database rows agree), concurrent associations,
completion by the ImagesInAcquisition count, JPEG lossless and RLE transfer syntaxes (DCMTK-compressed copies).

All of it runs in a private network namespace that holds only ``lo`` (Orthanc binds every address; there that
means loopback only). Skipped, with the reason, without Orthanc, DCMTK or root.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
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
from pydicom.uid import JPEGLosslessSV1, RLELossless, generate_uid
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from strokescan.app.integration.listener import hashed
from strokescan.app.integration.loopback import missing_tools, private_loopback, start_orthanc
from strokescan.app.web.db import ReceivedInstance, Study, StudyStatus, make_engine, session_factory
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
    def __init__(self, instance: Path, model: Path, orthanc, quiet: float, extra: tuple[str, ...] = ()) -> None:
        self.path = instance.parent / f"listener-{time.monotonic_ns()}.log"
        self.log = open(self.path, "w")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "strokescan.app.integration.listener", "--instance-dir", str(instance),
             "--port", str(LISTEN_PORT), "--quiet-seconds", str(quiet), "--allow", "SCANNER",
             "--dest", f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}", "--model", str(model), *extra],
            stdout=subprocess.PIPE, stderr=self.log, text=True, env={"STROKESCAN_TORCH_THREADS": "2", **os.environ})
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

    def start(orthanc, quiet: float = 1.0, extra: tuple[str, ...] = ()) -> ListenerProcess:
        proc = ListenerProcess(tmp_path / "instance", model, orthanc, quiet, extra)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def storescu(files: list[Path], calling: str = "SCANNER", background: bool = False, options: tuple[str, ...] = (),
             called: str = "STROKESCAN"):
    """DCMTK's storescu sending ``files`` to the listener; ``options``: e.g. ``("-xs",)`` (propose JPEG lossless)."""
    args = ["storescu", "-v", *options, "-aet", calling, "-aec", called, "127.0.0.1", str(LISTEN_PORT),
            *map(str, files)]
    if background:
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def acknowledged(output: str) -> int:
    return len(re.findall(r"Received Store Response \(Success\)", output))


def inbox_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "instance" / "dicom-inbox").glob("*/instances/*.dcm"))


def series_copies(files: list[Path], folder: Path, **attributes) -> list[Path]:
    """Copies of ``files`` in ``folder`` as a new series (fresh series and instance UIDs), ``attributes`` set."""
    folder.mkdir()
    series = generate_uid()
    for f in files:
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)
        ds.save_as(folder / f.name)
    return sorted(folder.glob("*.dcm"))


def listener_db(tmp_path: Path) -> sessionmaker:
    """Sessions on the listener process's database (the one of its instance folder)."""
    return session_factory(make_engine(f"sqlite:///{tmp_path / 'instance' / 'strokescan.db'}"))


def instance_rows(sessions: sessionmaker) -> list[ReceivedInstance]:
    with sessions() as session:
        return list(session.scalars(select(ReceivedInstance)))


def rows_match_files(sessions: sessionmaker, tmp_path: Path) -> None:
    """One row per inbox file and one file per row, no SOP Instance UID twice."""
    rows = instance_rows(sessions)
    inbox = tmp_path / "instance" / "dicom-inbox"
    assert sorted(r.inbox_path for r in rows) == sorted(str(p.relative_to(inbox)) for p in inbox_files(tmp_path))
    assert len({r.sop_instance_sha256 for r in rows}) == len(rows)


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
    db = listener_db(tmp_path)
    assert acked <= len(instance_rows(db)) <= len(on_disk)  # every acknowledged one has its row
    listeners(orthanc, quiet=2.0)
    rows_match_files(db, tmp_path)  # the restart recorded files the kill left without a row
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
    rows_match_files(db, tmp_path)
    assert len(instance_rows(db)) == 28


def test_four_concurrent_associations(orthanc, listeners, ge_folder: Path, tmp_path: Path):
    listeners(orthanc)
    series_files = [series_copies(sorted(ge_folder.glob("*.dcm"))[8:14], tmp_path / f"series{k}") for k in range(4)]
    senders = [storescu(files, background=True) for files in series_files]
    outputs = [s.communicate(timeout=60)[0] for s in senders]
    assert [acknowledged(o) for o in outputs] == [6] * 4 and all(s.returncode == 0 for s in senders)
    assert len(inbox_files(tmp_path)) == 24
    wait_for(lambda: len(orthanc.instances()) >= 12, 150, "four results in Orthanc")
    time.sleep(1.5)
    assert orthanc.get("/statistics")["CountInstances"] == 12
    assert len(list((tmp_path / "instance" / "dicom-inbox").glob("*/sent.json"))) == 4


def test_count_in_header_completes_without_the_quiet_time(orthanc, listeners, ge_folder: Path, tmp_path: Path):
    """ImagesInAcquisition on every instance: the series is queued when the 28th arrives, not 60 s later."""
    quiet = 60.0
    listeners(orthanc, quiet=quiet)
    files = series_copies(sorted(ge_folder.glob("*.dcm")), tmp_path / "counted", ImagesInAcquisition=28)
    run = storescu(files)
    sent = time.monotonic()
    assert run.returncode == 0 and acknowledged(run.stdout + run.stderr) == 28, run.stdout + run.stderr
    db = listener_db(tmp_path)

    def queued() -> bool:
        with db() as session:
            return session.scalar(select(Study.id)) is not None

    wait_for(queued, 10, "the series to be queued by its count")
    queued_after = time.monotonic() - sent
    wait_for(lambda: len(orthanc.instances()) >= 3, 45, "SEG, SR and key image in Orthanc, before the quiet time")
    print(f"count completion: queued {queued_after:.2f} s and results in Orthanc {time.monotonic() - sent:.2f} s "
          f"after the last instance (quiet time {quiet:g} s)")
    assert sorted(received(orthanc)) == ["OT", "SEG", "SR"]
    rows_match_files(db, tmp_path)


@pytest.mark.skipif(not (shutil.which("dcmcjpeg") and shutil.which("dcmcrle")), reason="DCMTK dcmcjpeg/dcmcrle missing")
def test_compressed_transfer_syntaxes_give_the_same_result(orthanc, listeners, ge_folder: Path, tmp_path: Path):
    """JPEG lossless (dcmcjpeg) and RLE (dcmcrle) copies, sent compressed: accepted, stored as sent, and analysed
    to the same probability and the same segmentation as the uncompressed series."""
    listeners(orthanc)
    ge = sorted(ge_folder.glob("*.dcm"))
    plain = series_copies(ge, tmp_path / "plain")
    sent = {"1.2.840.10008.1.2.1": plain}  # the GE files' explicit VR little endian
    for syntax, tool in ((JPEGLosslessSV1, "dcmcjpeg"), (RLELossless, "dcmcrle")):
        folder = tmp_path / tool
        folder.mkdir()
        for f in series_copies(ge, tmp_path / f"{tool}-source"):
            subprocess.run([tool, str(f), str(folder / f.name)], check=True, capture_output=True, timeout=30)
        sent[syntax] = sorted(folder.glob("*.dcm"))
        compressed = {pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID for f in sent[syntax]}
        assert compressed == {syntax}
    for syntax, files in sent.items():
        options = {JPEGLosslessSV1: ("-xs",), RLELossless: ("-xr",)}.get(syntax, ())
        run = storescu(files, options=options)
        assert run.returncode == 0 and acknowledged(run.stdout + run.stderr) == 28, run.stdout + run.stderr
    wait_for(lambda: len(orthanc.instances()) >= 9, 240, "three results in Orthanc")
    db = listener_db(tmp_path)
    rows = instance_rows(db)
    inbox = tmp_path / "instance" / "dicom-inbox"
    with db() as session:
        done = {s.upload_dir.split("/")[-1]: s for s in session.scalars(select(Study))}
    segs = {}
    for instance in orthanc.instances():
        ds = pydicom.dcmread(io.BytesIO(orthanc.get(f"/instances/{instance}/file")))
        if ds.Modality == "SEG":
            segs[str(ds.ReferencedSeriesSequence[0].SeriesInstanceUID)] = ds.pixel_array
    probabilities = {}
    for syntax, files in sent.items():
        first = pydicom.dcmread(files[0], stop_before_pixels=True)
        key = hashed(first.StudyInstanceUID, first.SeriesInstanceUID)
        stored = sorted((inbox / key / "instances").glob("*.dcm"))
        assert len(stored) == 28
        assert {pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID for p in stored} == {syntax}
        assert {r.transfer_syntax_uid for r in rows if r.series_key == key} == {syntax}
        assert done[key].status == StudyStatus.DONE and done[key].n_slices == 28
        probabilities[syntax] = done[key].probability
        assert np.array_equal(segs[first.SeriesInstanceUID], segs[pydicom.dcmread(plain[0]).SeriesInstanceUID])
    reference = probabilities.pop("1.2.840.10008.1.2.1")
    assert all(abs(p - reference) <= 1e-6 for p in probabilities.values()), (reference, probabilities)
    rows_match_files(db, tmp_path)


# ---- issue 30: poison series, pauses, growth, thickness, AE titles --------------------------------------------------
CQ500 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "head-ct-dicom" / "cq500-ct-0_thin_jpeg-lossless"


def by_modality(orthanc) -> dict[str, list[pydicom.Dataset]]:
    out: dict[str, list[pydicom.Dataset]] = {}
    for instance in orthanc.instances():
        ds = pydicom.dcmread(io.BytesIO(orthanc.get(f"/instances/{instance}/file")))
        out.setdefault(str(ds.Modality), []).append(ds)
    return out


def seg_volumes_ml(seg: pydicom.Dataset) -> dict[str, float]:
    """Each segment's pixels x its frame's own pixel area and SliceThickness (per-frame Pixel Measures)."""
    pixels = seg.pixel_array.reshape(int(seg.NumberOfFrames), seg.Rows, seg.Columns)
    labels = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    out: dict[str, float] = {}
    for f, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        m = item.PixelMeasuresSequence[0]
        label = labels[int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)]
        out[label] = out.get(label, 0.0) + int(pixels[f].sum()) * float(m.PixelSpacing[0]) * float(
            m.PixelSpacing[1]) * float(m.SliceThickness) / 1000
    return out


@pytest.mark.skipif(not CQ500.is_dir(), reason="shared head-ct-dicom data absent")
def test_series_without_frame_of_reference_gets_sr_and_key_image_and_never_blocks_the_next(
        orthanc, listeners, ge_folder: Path, tmp_path: Path):
    """CQ500-CT-0 (no FrameOfReferenceUID, JPEG lossless) then the GE series: SR + key image for the first, all
    three objects for the second, no traceback; the GE SR's volumes are the SEG's pixels x each slice's thickness."""
    proc = listeners(orthanc)
    cq500 = sorted(CQ500.glob("*.dcm"))
    run = storescu(cq500, options=("-xs",))
    assert run.returncode == 0 and acknowledged(run.stdout + run.stderr) == 48, run.stdout + run.stderr
    ge = sorted(ge_folder.glob("*.dcm"))
    assert storescu(ge).returncode == 0
    wait_for(lambda: len(orthanc.instances()) >= 5, 240, "SR + key image of CQ500 and SEG + SR + key image of GE")
    time.sleep(2.0)  # nothing more comes
    objects = by_modality(orthanc)
    assert sorted((k, len(v)) for k, v in objects.items()) == [("OT", 2), ("SEG", 1), ("SR", 2)]
    cq_study = pydicom.dcmread(cq500[0], stop_before_pixels=True).StudyInstanceUID
    cq_sr = next(ds for ds in objects["SR"] if ds.StudyInstanceUID == cq_study)
    ge_sr = next(ds for ds in objects["SR"] if ds.StudyInstanceUID != cq_study)
    assert cq_sr.CompletionFlag == "PARTIAL"  # every 5th slice of the thin series: instance numbers missing
    assert ge_sr.CompletionFlag == "COMPLETE"
    (seg,) = objects["SEG"]
    assert "PixelMeasuresSequence" not in seg.SharedFunctionalGroupsSequence[0]  # 4 mm and 7 mm frames
    seg_ml = seg_volumes_ml(seg)
    report = hd.sr.Comprehensive3DSR.from_dataset(ge_sr).content
    for group in report.get_volumetric_roi_measurement_groups():
        (measurement,) = group.get_measurements()
        label = next(k for k in seg_ml if k.lower() == group.finding_type.meaning.lower())
        assert measurement.value == pytest.approx(seg_ml[label], rel=0.01)
    inbox = tmp_path / "instance" / "dicom-inbox"
    key = hashed(cq_study, pydicom.dcmread(cq500[0], stop_before_pixels=True).SeriesInstanceUID)
    notes = json.loads((inbox / key / "results" / "notes.json").read_text())
    assert "FrameOfReferenceUID" in notes["seg_problem"] and (inbox / key / "sent.json").exists()
    text = proc.path.read_text()
    assert "Traceback" not in text and "no SEG" in text
    assert len(list(inbox.glob("*/sent.json"))) == 2


def test_a_pause_inside_one_association_does_not_complete_the_series(orthanc, listeners, ge_folder: Path,
                                                                     tmp_path: Path):
    """28 C-STOREs on one association with a pause longer than the quiet time after the 20th: one result, of 28
    slices, COMPLETE."""
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage

    listeners(orthanc, quiet=1.0)
    datasets = [pydicom.dcmread(f) for f in sorted(ge_folder.glob("*.dcm"))]
    ae = AE(ae_title="SCANNER")
    ae.add_requested_context(CTImageStorage, [str(datasets[0].file_meta.TransferSyntaxUID)])
    assoc = ae.associate("127.0.0.1", LISTEN_PORT, ae_title="STROKESCAN")
    assert assoc.is_established
    statuses = [int(assoc.send_c_store(ds).Status) for ds in datasets[:20]]
    time.sleep(4.0)  # four quiet times, the association still open
    statuses += [int(assoc.send_c_store(ds).Status) for ds in datasets[20:]]
    assoc.release()
    assert statuses == [0] * 28
    wait_for(lambda: len(orthanc.instances()) >= 3, 120, "the results in Orthanc")
    time.sleep(2.0)
    objects = by_modality(orthanc)
    assert sorted(objects) == ["OT", "SEG", "SR"] and all(len(v) == 1 for v in objects.values())
    assert objects["SR"][0].CompletionFlag == "COMPLETE"
    with listener_db(tmp_path)() as session:
        (study,) = session.scalars(select(Study))
    assert study.n_slices == 28


def test_a_gap_says_partial_and_the_grown_series_is_sent_again_as_a_new_version(orthanc, listeners, ge_folder: Path,
                                                                                tmp_path: Path):
    """The GE series without its 6th slice: SR PARTIAL; the slice sent later: analysed again, a new SEG, SR and
    key image (new UIDs), the new SR naming the old one as its predecessor, COMPLETE."""
    proc = listeners(orthanc, quiet=1.0)
    files = sorted(ge_folder.glob("*.dcm"))
    assert storescu(files[:5] + files[6:]).returncode == 0
    wait_for(lambda: len(orthanc.instances()) >= 3, 120, "version 1 in Orthanc")
    first = by_modality(orthanc)
    assert first["SR"][0].CompletionFlag == "PARTIAL"
    assert "missing" in first["SR"][0].CompletionFlagDescription
    assert storescu(files[5:6]).returncode == 0
    wait_for(lambda: len(orthanc.instances()) >= 6, 120, "version 2 in Orthanc")
    time.sleep(2.0)
    objects = by_modality(orthanc)
    assert sorted((k, len(v)) for k, v in objects.items()) == [("OT", 2), ("SEG", 2), ("SR", 2)]
    old_uid = first["SR"][0].SOPInstanceUID
    new_sr = next(ds for ds in objects["SR"] if ds.SOPInstanceUID != old_uid)
    assert new_sr.CompletionFlag == "COMPLETE" and "version 2" in new_sr.SeriesDescription
    ref = new_sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == old_uid
    new_seg = next(ds for ds in objects["SEG"] if ds.SOPInstanceUID != first["SEG"][0].SOPInstanceUID)
    assert len({item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
                for item in new_seg.PerFrameFunctionalGroupsSequence}) <= 28
    folder = next(p for p in (tmp_path / "instance" / "dicom-inbox").iterdir() if p.is_dir())
    assert (folder / "results-v1" / "sent.json").exists() and (folder / "sent.json").exists()
    text = proc.path.read_text()
    assert "analysing it again (version 2)" in text and "Traceback" not in text
    assert text.count("results sent to ORTHANC") == 2


def test_wrong_called_ae_and_unknown_calling_ae_are_refused_and_logged(orthanc, listeners, ge_folder: Path,
                                                                       tmp_path: Path):
    proc = listeners(orthanc)
    files = sorted(ge_folder.glob("*.dcm"))[:2]
    wrong_called = storescu(files, called="OTHERPACS")
    assert wrong_called.returncode != 0 and acknowledged(wrong_called.stdout + wrong_called.stderr) == 0
    unknown = storescu(files, calling="INTRUDER")
    assert unknown.returncode != 0
    assert not inbox_files(tmp_path)
    wait_for(lambda: proc.path.read_text().count("refused") >= 2, 10, "two refusal lines")
    lines = [line for line in proc.path.read_text().splitlines() if "refused" in line]
    assert len(lines) == 2
    assert "called AE title 'OTHERPACS'" in lines[0] and "'SCANNER'" in lines[0]
    assert "'INTRUDER'" in lines[1] and "not in --allow" in lines[1]
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", lines[0])  # timestamped, at INFO by default
    assert "listening as STROKESCAN" in proc.path.read_text()


def test_destination_down_backs_off_and_gives_up_after_the_limit(orthanc, listeners, ge_folder: Path,
                                                                 tmp_path: Path):
    """Orthanc stopped: a few tries with a doubling wait, one warning, then the series is given up (failed.json);
    a resend logs one line, not one per instance."""
    orthanc.stop(kill=True)
    proc = listeners(orthanc, extra=("--retry-seconds", "0.5", "--max-attempts", "3"))
    files = series_copies(sorted(ge_folder.glob("*.dcm"))[8:14], tmp_path / "down")
    assert storescu(files).returncode == 0
    inbox = tmp_path / "instance" / "dicom-inbox"
    wait_for(lambda: len(list(inbox.glob("*/failed.json"))) == 1, 120, "the series to be given up")
    assert storescu(files).returncode == 0  # sent again by the scanner
    time.sleep(2.0)
    text = proc.path.read_text()
    assert text.count("delivery failed") == 1 and text.count("failed again") == 1 and text.count("given up") == 1
    assert text.count("sent again (already received") == 1 and "Traceback" not in text
    state = json.loads(next(inbox.glob("*/delivery.json")).read_text())
    assert state["attempts"] == 3 and "no association" in state["reason"]


def test_keep_days_0_purges_after_delivery_and_a_host_allow_list(orthanc, listeners, ge_folder: Path,
                                                                  tmp_path: Path):
    """`--keep-days 0` with the process as run from the command line: SEG/SR/key image in Orthanc, then the
    received copies gone, one retention line; `--allow AET@HOST`: storescu from 127.0.0.1 accepted for CT1, refused
    for CT2 (allowed only from another host), one line."""
    proc = listeners(orthanc, extra=("--keep-days", "0", "--allow", "CT1@127.0.0.1", "--allow", "CT2@192.0.2.1"))
    files = series_copies(sorted(ge_folder.glob("*.dcm"))[8:14], tmp_path / "copies")
    refused = storescu(files[:1], calling="CT2")
    assert refused.returncode != 0 and acknowledged(refused.stdout + refused.stderr) == 0
    run = storescu(files, calling="CT1")
    assert run.returncode == 0 and acknowledged(run.stdout + run.stderr) == 6, run.stdout + run.stderr
    wait_for(lambda: len(orthanc.instances()) >= 3, 120, "SEG, SR and key image in Orthanc")
    wait_for(lambda: "retention:" in proc.path.read_text(), 20, "the retention line")
    (folder,) = [p for p in (tmp_path / "instance" / "dicom-inbox").iterdir() if p.is_dir()]
    assert not inbox_files(tmp_path) and (folder / "sent.json").exists() and (folder / "purged.json").exists()
    assert not list(folder.glob("results*/*.dcm"))
    text = proc.path.read_text()
    assert "'CT2' at 127.0.0.1 refused: host not allowed for this calling AE title by --allow" in text
    assert text.count("refused") == 1 and text.count("retention:") == 1 and "Traceback" not in text
    assert "6 received instance(s) and 3 result object(s) deleted" in text
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    for value in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, str(ds.get("PatientID", ""))):
        assert not value or value not in text
