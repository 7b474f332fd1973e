"""Real DICOM peers on loopback only, for tests and benchmarks: a private network namespace, Orthanc in it.

Orthanc binds every address (it has no option to bind one), so it runs inside a network namespace that has
nothing but ``lo``: nothing outside the machine, and nothing outside the namespace, can reach it. The calling
thread joins that namespace (``setns``) for the duration of :func:`private_loopback`; sockets it opens and the
processes it starts meanwhile (Orthanc, the listener, ``storescu``) all live there. Needs root (or
CAP_SYS_ADMIN), ``unshare``, ``ip``, ``Orthanc`` and DCMTK; :func:`missing_tools` says what is absent.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CLONE_NEWNET = 0x40000000


def missing_tools() -> str | None:
    """Why the peers cannot run here (a missing program, not root), or None."""
    for tool in ("Orthanc", "storescu", "echoscu", "unshare", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install orthanc dcmtk iproute2 util-linux)"
    if os.geteuid() != 0:
        return "a private network namespace needs root"
    return None


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns failed")


@contextlib.contextmanager
def private_loopback() -> Iterator[None]:
    """Run the calling thread (and what it starts) in a new network namespace holding only ``lo`` (up)."""
    holder = subprocess.Popen(["unshare", "-n", "sh", "-c", "ip link set lo up && echo up && exec sleep 3600"],
                              stdout=subprocess.PIPE, text=True)
    try:
        if holder.stdout.readline().strip() != "up":
            raise RuntimeError("could not make a private network namespace (unshare -n)")
        original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        private = os.open(f"/proc/{holder.pid}/ns/net", os.O_RDONLY)
        try:
            _setns(private)
            try:
                yield
            finally:
                _setns(original)
        finally:
            os.close(private)
            os.close(original)
    finally:
        holder.kill()
        holder.wait(10)


@dataclass
class Orthanc:
    """An Orthanc started by :func:`start_orthanc`: its DICOM port, its REST API on 127.0.0.1."""

    process: subprocess.Popen
    aet: str
    dicom_port: int
    http_port: int

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def get(self, path: str):
        with urllib.request.urlopen(self.url(path), timeout=10) as response:
            data = response.read()
        return json.loads(data) if response.headers.get_content_type() == "application/json" else data

    def instances(self) -> list[str]:
        return self.get("/instances")

    def stop(self, kill: bool = False) -> None:
        """Stop Orthanc: SIGTERM (it takes seconds), or with ``kill`` SIGKILL (for throw-away storage)."""
        if self.process.poll() is None:
            if kill:
                self.process.kill()
                self.process.wait(10)
                return
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_orthanc(folder: Path, aet: str = "ORTHANC", dicom_port: int = 4242, http_port: int = 8042,
                  timeout_s: float = 20.0) -> Orthanc:
    """Start Orthanc with its storage in ``folder``; returns once its REST API answers."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "strokescan-test", "StorageDirectory": str(folder / "storage"), "IndexDirectory": str(folder / "index"),
        "DicomAet": aet, "DicomPort": dicom_port, "HttpPort": http_port, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True,
        "HttpServerEnabled": True, "Plugins": [], "StorageCompression": False, "ConcurrentJobs": 2,
        "HttpThreadsCount": 4, "DicomThreadsCount": 4, "LogLevel": "default",
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = open(folder / "orthanc.log", "wb")  # noqa: SIM115 - handed to the process
    process = subprocess.Popen(["Orthanc", str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    orthanc = Orthanc(process, aet, dicom_port, http_port)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited ({process.returncode}); see {folder / 'orthanc.log'}")
        try:
            orthanc.get("/system")
            return orthanc
        except OSError:
            time.sleep(0.05)
    orthanc.stop()
    raise RuntimeError("Orthanc did not answer in time")
