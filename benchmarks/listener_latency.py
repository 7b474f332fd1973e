"""Last instance received -> SR stored in Orthanc, for the bundled 28-slice GE series, beside storescu's own
transfer time, all on loopback in a private network namespace (see strokescan.app.integration.loopback).

    sudo .venv/bin/python benchmarks/listener_latency.py [--quiet-seconds S] [--model DIR] [--runs 2] [--count-header]

Without ``--quiet-seconds`` the listener runs with its documented defaults (quiet time, torch threads). Each
run prints, beside the latency (last instance -> SEG, SR and key image all in Orthanc), the analysis time alone
(the study's started_at -> finished_at in the listener's database).

Run 1 is cold (the listener loads its models on the first series); later runs send the same pixels as new
series (fresh UIDs), as a warm listener sees them. The quiet time (no instance for N seconds = series complete)
is part of the latency: the GE headers do not say how many images the series has. With ``--count-header`` the
copies carry ImagesInAcquisition, so the series completes when its 28th instance is in, without the quiet time.
storescu's transfer time includes the listener's durable write and database row of every instance.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from strokescan.app.integration.loopback import missing_tools, private_loopback, start_orthanc
from strokescan.config import SAMPLES_DIR

PORT = 11112


def series_copy(folder: Path, names_data: list[tuple[str, bytes]], fresh: bool, count: int | None) -> list[Path]:
    """The series in ``folder``: with fresh UIDs (``fresh``) and ImagesInAcquisition (``count``) when asked."""
    folder.mkdir(parents=True)
    series, study = generate_uid(), generate_uid()
    for name, data in names_data:
        path = folder / name
        if not fresh and count is None:
            path.write_bytes(data)
            continue
        ds = pydicom.dcmread(io.BytesIO(data))
        if fresh:
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if count is not None:
            ds.ImagesInAcquisition = count
        ds.save_as(path)
    return sorted(folder.glob("*.dcm"))


def count_sr(orthanc) -> int:
    return sum(1 for s in orthanc.get("/series?expand") if s["MainDicomTags"].get("Modality") == "SR")


def count_instances(orthanc) -> int:
    return len(orthanc.instances())


def analysis_seconds(database: Path) -> float | None:
    """The latest study's analysis time (finished_at - started_at) in the listener's database."""
    import sqlite3

    with sqlite3.connect(database) as db:
        row = db.execute("SELECT started_at, finished_at FROM studies WHERE finished_at IS NOT NULL "
                         "ORDER BY finished_at DESC LIMIT 1").fetchone()
    if not row or not row[0]:
        return None
    from datetime import datetime

    return (datetime.fromisoformat(row[1]) - datetime.fromisoformat(row[0])).total_seconds()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quiet-seconds", type=float, help="default: the listener's own default")
    parser.add_argument("--model", type=Path, help="classifier folder (default: the bundled model)")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--count-header", action="store_true",
                        help="set ImagesInAcquisition on the copies: completion by count, not by the quiet time")
    args = parser.parse_args()
    problem = missing_tools()
    if problem:
        print(f"cannot run: {problem}", file=sys.stderr)
        return 2
    with zipfile.ZipFile(SAMPLES_DIR / "ge-hispeed-head-series.zip") as z:
        names_data = [(n, z.read(n)) for n in sorted(z.namelist()) if n.endswith(".dcm")]
    with tempfile.TemporaryDirectory() as tmp, private_loopback():
        root = Path(tmp)
        orthanc = start_orthanc(root / "orthanc")
        command = [sys.executable, "-m", "strokescan.app.integration.listener", "--instance-dir", str(root / "inst"),
                   "--port", str(PORT), "--dest", f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}"]
        if args.quiet_seconds is not None:
            command += ["--quiet-seconds", str(args.quiet_seconds)]
        if args.model:
            command += ["--model", str(args.model)]
        with open(root / "listener.log", "w") as log:
            listener = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            print(listener.stdout.readline().strip())
            print(f"{'run':>4} {'storescu transfer s':>20} {'last instance -> SEG+SR+key image in Orthanc s':>48}"
                  f" {'analysis alone s':>17}")
            for run in range(1, args.runs + 1):
                files = series_copy(root / f"series{run}", names_data, fresh=run > 1,
                                    count=len(names_data) if args.count_header else None)
                before = count_instances(orthanc)
                t0 = time.monotonic()
                done = subprocess.run(["storescu", "-aet", "SCANNER", "-aec", "STROKESCAN", "127.0.0.1", str(PORT),
                                       *map(str, files)], capture_output=True, text=True)
                t1 = time.monotonic()
                if done.returncode != 0:
                    print(done.stdout + done.stderr, file=sys.stderr)
                    return 1
                while count_instances(orthanc) < before + 3:
                    if time.monotonic() - t1 > 300:
                        print("no SR after 300 s; see the listener log", file=sys.stderr)
                        return 1
                    time.sleep(0.05)
                t2 = time.monotonic()
                note = "cold: models load" if run == 1 else "warm"
                completion = ("count header" if args.count_header else
                              f"quiet time {args.quiet_seconds:g} s" if args.quiet_seconds is not None
                              else "default quiet time")
                time.sleep(0.2)  # the database row is written before the objects are built
                alone = analysis_seconds(root / "inst" / "strokescan.db")
                alone_text = f"{alone:.2f}" if alone is not None else "?"
                print(f"{run:>4} {t1 - t0:>20.2f} {t2 - t1:>48.2f} {alone_text:>17}   ({note}; {completion})")
        finally:
            listener.terminate()
            listener.wait(30)
            orthanc.stop(kill=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
