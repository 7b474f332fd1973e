"""Last instance received -> SR stored in Orthanc, for the bundled 28-slice GE series, beside storescu's own
transfer time, all on loopback in a private network namespace (see strokescan.app.integration.loopback).

    sudo .venv/bin/python benchmarks/listener_latency.py [--quiet-seconds 2] [--model DIR] [--runs 2] [--count-header]

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quiet-seconds", type=float, default=2.0)
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
                   "--port", str(PORT), "--quiet-seconds", str(args.quiet_seconds),
                   "--dest", f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}"]
        if args.model:
            command += ["--model", str(args.model)]
        with open(root / "listener.log", "w") as log:
            listener = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            print(listener.stdout.readline().strip())
            print(f"{'run':>4} {'storescu transfer s':>20} {'last instance -> SR in Orthanc s':>34}")
            for run in range(1, args.runs + 1):
                files = series_copy(root / f"series{run}", names_data, fresh=run > 1,
                                    count=len(names_data) if args.count_header else None)
                before = count_sr(orthanc)
                t0 = time.monotonic()
                done = subprocess.run(["storescu", "-aet", "SCANNER", "-aec", "STROKESCAN", "127.0.0.1", str(PORT),
                                       *map(str, files)], capture_output=True, text=True)
                t1 = time.monotonic()
                if done.returncode != 0:
                    print(done.stdout + done.stderr, file=sys.stderr)
                    return 1
                while count_sr(orthanc) == before:
                    if time.monotonic() - t1 > 300:
                        print("no SR after 300 s; see the listener log", file=sys.stderr)
                        return 1
                    time.sleep(0.05)
                t2 = time.monotonic()
                note = "cold: models load" if run == 1 else "warm"
                completion = "count header" if args.count_header else f"quiet time {args.quiet_seconds:g} s"
                print(f"{run:>4} {t1 - t0:>20.2f} {t2 - t1:>34.2f}   ({note}; {completion})")
        finally:
            listener.terminate()
            listener.wait(30)
            orthanc.stop(kill=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
