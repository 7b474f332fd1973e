"""``strokescan listen``: a DICOM Storage SCP that analyses the head CT series a scanner or PACS pushes and
sends the results back (DICOM SEG, TID 1500 SR, key image; FHIR optionally).

Design (docs/integration.md):

* **The inbox on disk is the truth.** Every instance is written to ``<instance>/dicom-inbox/<series>/instances/
  <sop>.dcm`` (names are hashes of the UIDs, never patient data): a temporary file, ``fsync``, rename, ``fsync``
  of the folder, then a :class:`~strokescan.app.web.db.ReceivedInstance` row in the web app's database (hashes,
  the calling AE, SOP class, transfer syntax, size, status), all BEFORE the C-STORE success status goes back. A
  SIGKILL loses nothing that was acknowledged; at start-up, files a crash left without a row get one.
* **Completion.** A series is complete when no association that sent it is still open and none has been
  released (or aborted), nor an instance arrived, for ``quiet_seconds`` (or, when the header says how many
  images the acquisition has (ImagesInAcquisition), as soon as that many are in): a pause inside one
  association never completes a series. It then becomes
  a ``Study`` row of the web app's database (kind ``dicom``, label ``DICOM from <calling AE> <id>``), so the web app's
  :class:`~strokescan.app.web.jobs.JobWorker` analyses it exactly like an upload and its worklist lists it.
  Whether a series is queued is looked up in that table (by its folder), so a restart never queues it twice.
* **Results.** The worker's ``on_done`` hook builds SEG/SR/key image (deterministic UIDs per series), keeps them
  in ``<series>/results/`` and C-STOREs them to the destination; ``<series>/sent.json`` then records the
  delivery, and a series with that file is never sent again. A periodic sweep sends what a crash or an
  unreachable destination left unsent (studies analysed by another worker, e.g. the web app's, included).
  A series the models were not made for (not CT, not head...) fails its job with the reason; the sweep
  records that in ``<series>/skipped.json`` and sends nothing. The instances' rows say ``analysed`` (a slice
  of the analysed volume) or ``skipped`` with the reason.
* **Failures.** Building or sending the results of one series can fail (a geometry the SEG cannot carry, the
  destination down): what can be built is built (the SR and key image without a SEG), the failure is
  recorded once in ``<series>/delivery.json`` with its reason and retried with a doubling backoff
  (``retry_seconds`` up to ``max_retry_seconds``), at most ``max_attempts`` times; then ``<series>/failed.json``
  stops it (delete that file to try again). One failing series never holds up another: the sweep handles each
  folder on its own.
* **Versions.** An instance new to a series that was already queued is kept and marks the series grown
  (``<series>/grown``); once it is quiet again it is analysed again and its results are sent as a new version
  (new UIDs; the SR lists the earlier SRs as predecessors; the earlier objects stay in ``results-v<n>/``).
  An SR says PARTIAL when slices are known to be missing (gaps in position or instance number).
* **Retention.** The received copies (and the result objects kept for a resend) carry patient identifiers:
  ``keep_days`` after a series was delivered (``sent.json``), the sweep deletes them and writes
  ``<series>/purged.json`` (0: at the first sweep after delivery). Series not delivered (pending, failed,
  skipped) are never purged.
* **Who may call.** ``--allow`` entries are ``AET``, ``AET@HOST`` or ``*@HOST`` (HOST: an address, a network
  in CIDR notation, or a name resolved at start); an association matching none is rejected with one log line.
* **TLS** (optional): the server's certificate and key (``--tls-cert``, ``--tls-key``), client certificates
  required when ``--tls-ca`` is given; ``--dest-tls-ca`` makes the outgoing association TLS too.
* **Log lines** name a series by its hash and the calling AE title, never a patient identifier or a UID.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import re
import shutil
import socket
import ssl
import sys
import warnings
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, StoragePresentationContexts, evt
from pynetdicom.sop_class import Verification
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from strokescan.app.integration.dicom_results import build_result_objects
from strokescan.app.integration.fhir import FhirSettings, deliver
from strokescan.app.web.db import (
    InstanceStatus,
    ReceivedInstance,
    Study,
    StudyStatus,
    make_engine,
    session_factory,
    upgrade_database,
    utcnow,
)
from strokescan.app.web.jobs import JobWorker, requeue_interrupted
from strokescan.inference import Predictor, ScanResult

log = logging.getLogger(__name__)

INBOX = "dicom-inbox"
SUCCESS = 0x0000
CANNOT_UNDERSTAND = 0xC210  # the dataset cannot be decoded (pynetdicom's own code in the 0xCxxx "cannot understand")
MISSING_ATTRIBUTES = 0xA900  # "dataset does not match SOP class": a required UID is missing or disagrees
OUT_OF_RESOURCES = 0xA700  # the instance could not be written to disk
LATE = "arrived after its series was queued"  # the reason of an instance's row
#: C-STORE statuses of the destination that mean "stored" (success and the warnings)
STORED = {0x0000, 0xB000, 0xB006, 0xB007}


_UID = re.compile(r"(?=.{1,64}$)[0-9]+(\.[0-9]+)*")


def hashed(*uids: str) -> str:
    """A neutral name for a UID (or a tuple of them): 24 hex digits of their sha256."""
    return hashlib.sha256("\\".join(uids).encode()).hexdigest()[:24]


def images_in_acquisition(value: object) -> int | None:
    """The ImagesInAcquisition count of a header value, when it is a usable one (more than one image)."""
    with contextlib.suppress(TypeError, ValueError):
        if value not in (None, "") and int(value) > 1:
            return int(value)
    return None


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes, tmp_dir: Path | None = None) -> None:
    """Write ``data`` to ``path`` so that it survives a crash: temporary file, fsync, rename, fsync the folder.

    ``tmp_dir`` (same file system) keeps the temporary file out of ``path``'s folder: a crash then leaves
    no stray file among the instances a reader would take for a slice."""
    tmp = (tmp_dir or path.parent) / f".{path.name}.{threading.get_ident()}.part"
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Destination:
    """Where results go by C-STORE."""

    host: str
    port: int
    ae_title: str = "PACS"

    @classmethod
    def parse(cls, text: str) -> Destination:
        """``AET@host:port``."""
        aet, _, address = text.rpartition("@")
        host, _, port = address.rpartition(":")
        if not (aet and host and port.isdigit()):
            raise ValueError(f"destination {text!r}: expected AET@host:port")
        return cls(host, int(port), aet)


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(host: str) -> tuple[IPNetwork, ...]:
    """The networks ``host`` names: an address, a CIDR network, or a host name (resolved now, every address)."""
    with contextlib.suppress(ValueError):
        return (ipaddress.ip_network(host, strict=False),)
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        raise ValueError(f"--allow: cannot resolve host {host!r}") from None
    return tuple(sorted({ipaddress.ip_network(info[4][0]) for info in infos}, key=str))


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A peer's address (an IPv4-mapped IPv6 one as IPv4), or None when it is not an IP address."""
    try:
        address = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class AllowRule:
    """One ``--allow`` entry: ``AET`` (from any host), ``AET@HOST`` or ``*@HOST`` (any AE title from HOST)."""

    ae_title: str | None  # None: any calling AE title
    networks: tuple[IPNetwork, ...] | None = None  # None: any host

    @classmethod
    def parse(cls, text: str) -> AllowRule:
        aet, at, host = text.strip().partition("@")
        aet = aet.strip()
        if not aet or (at and not host.strip()) or len(aet) > 16:
            raise ValueError(f"--allow {text!r}: expected AET, AET@HOST or *@HOST")
        return cls(None if aet == "*" else aet, _networks(host.strip()) if at else None)

    def accepts_ae(self, calling: str) -> bool:
        return self.ae_title is None or self.ae_title == calling

    def accepts_host(self, address: str) -> bool:
        if self.networks is None:
            return True
        peer = _address(address)
        return peer is not None and any(peer.version == n.version and peer in n for n in self.networks)


def allow_refusal(rules: Sequence[AllowRule], calling: str, address: str) -> str | None:
    """Why an association from ``calling`` at ``address`` is refused by ``rules`` (None: accepted; no rules:
    anyone)."""
    if not rules or any(r.accepts_ae(calling) and r.accepts_host(address) for r in rules):
        return None
    if any(r.ae_title == calling for r in rules):
        return "host not allowed for this calling AE title by --allow"
    return "calling AE title not in --allow" + (" (nor its host)" if any(r.ae_title is None for r in rules) else "")


class _ServerTLSContext(ssl.SSLContext):
    """The server's TLS context: the handshake is done at once with a time limit, and a failed one is logged in
    one line (pynetdicom wraps each accepted socket in its accept loop and drops a failure silently)."""

    handshake_timeout: float = 10.0

    def wrap_socket(self, sock, server_side=False, do_handshake_on_connect=True, suppress_ragged_eofs=True,
                    server_hostname=None, session=None):  # noqa: ANN001, ANN201 - ssl.SSLContext's signature
        try:
            peer = sock.getpeername()[0]
        except OSError:
            peer = "?"
        sock.settimeout(self.handshake_timeout)
        wrapped = super().wrap_socket(sock, server_side=server_side, do_handshake_on_connect=False,
                                      suppress_ragged_eofs=suppress_ragged_eofs, server_hostname=server_hostname,
                                      session=session)
        try:
            wrapped.do_handshake()
        except Exception as exc:  # noqa: BLE001 - logged, then an OSError: the server's loop drops the connection
            why = getattr(exc, "reason", None) or type(exc).__name__
            log.warning("TLS connection from %s refused: %s", peer, why)
            with contextlib.suppress(OSError):
                wrapped.close()
            if isinstance(exc, OSError):
                raise
            raise OSError(f"TLS handshake failed ({type(exc).__name__})") from exc
        wrapped.settimeout(None)
        return wrapped


def server_tls_context(cert: Path, key: Path, ca: Path | None = None) -> ssl.SSLContext:
    """TLS 1.2 or later with our certificate; with ``ca``, clients must present a certificate it signed."""
    ctx = _ServerTLSContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if ca is not None:
        ctx.load_verify_locations(cafile=str(ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_tls_context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """TLS 1.2 or later to a server whose certificate ``ca`` signed (its name or address checked); ``cert`` and
    ``key``: our certificate, for a server that requires one."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None and key is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


@dataclass
class ListenerSettings:
    instance_dir: Path  # the web app's instance folder: the inbox lives in it, study paths are relative to it
    database_url: str
    ae_title: str = "STROKESCAN"
    host: str = "127.0.0.1"
    port: int = 11112
    allowed_calling_aets: tuple[str, ...] = ()  # AET, AET@HOST or *@HOST (AllowRule); empty: anyone
    quiet_seconds: float = 3.0
    destination: Destination | None = None
    fhir: FhirSettings | None = None
    poll_seconds: float = 0.25
    retry_seconds: float = 5.0  # first wait before a failed delivery is tried again (doubling each time)
    max_retry_seconds: float = 600.0
    max_attempts: int = 10  # then the series is given up (failed.json)
    run_worker: bool = True  # run a JobWorker here (with the result hook); else another process analyses
    keep_days: float = 7.0  # received copies are deleted this long after their series was delivered (0: at once)
    tls_cert: Path | None = None  # with tls_key: the server speaks TLS only
    tls_key: Path | None = None
    tls_ca: Path | None = None  # clients must present a certificate this CA signed
    dest_tls_ca: Path | None = None  # TLS to the destination, whose certificate this CA signed
    predictor_factory: Callable[[], Predictor] = field(default=lambda: Predictor(segment=True))


class Inbox:
    """The received instances, one folder per series, named by hashes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def series_dir(self, study_uid: str, series_uid: str) -> Path:
        return self.root / hashed(study_uid, series_uid)

    def store(self, data: bytes, study_uid: str, series_uid: str, sop_uid: str, calling_ae: str) -> Path:
        folder = self.series_dir(study_uid, series_uid)
        instances = folder / "instances"
        if not instances.is_dir():
            instances.mkdir(parents=True, exist_ok=True)
            _fsync_dir(folder)
            _fsync_dir(self.root)
        meta = folder / "series.json"
        if not meta.exists():
            write_durably(meta, json.dumps({"calling_ae": calling_ae, "first_received": _now()}).encode())
        path = instances / f"{hashed(sop_uid)}.dcm"
        incoming = folder / "incoming"
        incoming.mkdir(exist_ok=True)
        write_durably(path, data, tmp_dir=incoming)
        return path

    def series(self) -> list[Path]:
        return sorted(p for p in self.root.iterdir() if (p / "instances").is_dir())

    @staticmethod
    def instances(folder: Path) -> list[Path]:
        return sorted((folder / "instances").glob("*.dcm"))

    @staticmethod
    def last_arrival(folder: Path) -> float:
        """When the newest instance arrived (the folder's mtime changes with every file renamed into it)."""
        return (folder / "instances").stat().st_mtime

    @staticmethod
    def calling_ae(folder: Path) -> str:
        try:
            return str(json.loads((folder / "series.json").read_text())["calling_ae"])
        except (OSError, ValueError, KeyError):
            return "unknown"


class Listener:
    """The Storage SCP, the completion monitor, the job worker and the result sender of one inbox."""

    def __init__(self, settings: ListenerSettings) -> None:
        self.settings = settings
        if settings.keep_days < 0:
            raise ValueError("--keep-days must be 0 or more")
        if (settings.tls_cert is None) != (settings.tls_key is None) or (settings.tls_ca and not settings.tls_cert):
            raise ValueError("TLS needs both --tls-cert and --tls-key (and --tls-ca only with them)")
        self.allow = [AllowRule.parse(text) for text in settings.allowed_calling_aets]
        self.instance_dir = settings.instance_dir.resolve()
        self.inbox = Inbox(self.instance_dir / INBOX)
        upgrade_database(settings.database_url)
        self.sessions = session_factory(make_engine(settings.database_url))
        self._queued: set[str] = set()  # series folders (relative) known to have a Study row
        self._expected: dict[Path, int | None] = {}  # series folder -> images in the acquisition (header)
        self._assoc_lock = threading.Lock()
        self._open: dict[Path, set[int]] = {}  # series folder -> ids of the open associations that sent to it
        self._released: dict[Path, float] = {}  # series folder -> when its last association ended
        self._per_assoc: dict[int, dict[Path, dict[str, int]]] = {}  # association -> folder -> counts to log
        self._send_lock = threading.Lock()
        self._stop = threading.Event()
        self._server = None
        self._monitor: threading.Thread | None = None
        self.worker: JobWorker | None = None
        self._lock_file = None
        self._sweep_predictor: Predictor | None = None
        self._purge_at: dict[Path, tuple[float, float]] = {}  # series folder -> (sent.json's mtime, purge time)
        self._dest_tls_context: ssl.SSLContext | None = None
        self._started = time.time()

    # ---- life cycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        # pydicom warns and logs with the offending value (a name, a UID) when a header is malformed
        warnings.filterwarnings("ignore", module=r"pydicom(\..*)?$")
        warnings.filterwarnings("ignore", module=r"highdicom(\..*)?$")
        logging.getLogger("pydicom").setLevel(logging.CRITICAL)
        self._lock_file = open(self.inbox.root / ".listener.lock", "w")  # noqa: SIM115 - held while running
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RuntimeError("another listener is using this inbox") from None
        requeue_interrupted(self.sessions)
        for leftover in self.inbox.root.glob("*/.purging-*"):  # a purge a crash interrupted
            shutil.rmtree(leftover, ignore_errors=True)
        self._dest_tls_context = self._dest_tls()  # a TLS file that cannot be loaded stops the start, not a delivery
        self.record_inbox()
        self._started = time.time()
        if self.settings.run_worker:
            self.worker = JobWorker(self.sessions, self.instance_dir, self.settings.predictor_factory,
                                    poll_seconds=0.2, on_done=self._on_done)
            self.worker.start()
        self.sweep()  # series complete on disk but not queued (a crash), results not sent
        self._monitor = threading.Thread(target=self._watch, name="strokescan-inbox", daemon=True)
        self._monitor.start()
        ae = AE(ae_title=self.settings.ae_title)
        ae.maximum_pdu_size = 0
        ae.add_supported_context(Verification)
        for context in StoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.require_called_aet = True  # an association addressed to another AE title is refused
        # the calling AE title and host are checked by _handle_requested (--allow), not by require_calling_aet
        handlers = [(evt.EVT_C_ECHO, lambda _event: SUCCESS), (evt.EVT_C_STORE, self._handle_store),
                    (evt.EVT_REQUESTED, self._handle_requested), (evt.EVT_REJECTED, self._handle_rejected),
                    (evt.EVT_RELEASED, self._handle_closed), (evt.EVT_ABORTED, self._handle_closed),
                    (evt.EVT_CONN_CLOSE, self._handle_closed)]
        tls = (server_tls_context(self.settings.tls_cert, self.settings.tls_key, self.settings.tls_ca)
               if self.settings.tls_cert else None)
        self._server = ae.start_server((self.settings.host, self.settings.port), block=False, evt_handlers=handlers,
                                       ssl_context=tls)
        self.port = self._server.server_address[1]
        log.info("listening as %s on %s:%d%s", self.settings.ae_title, self.settings.host, self.port,
                 "" if tls is None else " (TLS" + (", client certificates required)" if self.settings.tls_ca else ")"))

    def stop(self) -> None:
        """Stop receiving, then the monitor and the worker (idempotent)."""
        self._stop.set()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            monitor.join(10)
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.stop()
            worker.join(60)
        lock, self._lock_file = self._lock_file, None
        if lock is not None:
            lock.close()

    # ---- associations -----------------------------------------------------------------------------------------
    def _handle_requested(self, event) -> None:
        """Reject an association --allow does not accept (calling AE title and host), with one log line."""
        assoc = event.assoc
        primitive = assoc.requestor.primitive
        calling = str(getattr(primitive, "calling_ae_title", "") or "").strip()
        called = str(getattr(primitive, "called_ae_title", "") or "").strip()
        if called != self.settings.ae_title.strip():
            return  # pynetdicom rejects it (require_called_aet); _handle_rejected logs it
        why = allow_refusal(self.allow, calling, str(assoc.requestor.address))
        if why is None:
            return
        log.warning("association from %r at %s refused: %s", calling, assoc.requestor.address, why)
        assoc.acse.send_reject(0x01, 0x01, 0x03)  # rejected permanent, by the service user: calling AE not recognised
        assoc.kill()

    def _handle_rejected(self, event) -> None:
        """One log line per association pynetdicom refused: who called, from where, and why (AE titles, not patient
        data)."""
        assoc = event.assoc
        primitive = assoc.requestor.primitive
        calling = str(getattr(primitive, "calling_ae_title", "") or assoc.requestor.ae_title).strip()
        called = str(getattr(primitive, "called_ae_title", "") or "").strip()
        if called != self.settings.ae_title.strip():
            why = f"called AE title {called!r} is not {self.settings.ae_title!r}"
        else:
            why = allow_refusal(self.allow, calling, str(assoc.requestor.address)) or "too many associations"
        log.warning("association from %r at %s refused: %s", calling, assoc.requestor.address, why)

    def _handle_closed(self, event) -> None:
        """An association ended (released, aborted, or its connection closed): its series' quiet time starts now."""
        key = id(event.assoc)
        with self._assoc_lock:
            counts = self._per_assoc.pop(key, {})
            now = time.time()
            for folder in counts:
                open_ = self._open.get(folder)
                if open_ is not None:
                    open_.discard(key)
                    if not open_:
                        del self._open[folder]
                self._released[folder] = now
        calling = str(event.assoc.requestor.ae_title).strip()
        for folder, c in counts.items():
            if c.get("resent"):
                log.info("series %s: %d instance(s) from %s sent again (already received, kept once)",
                         folder.name[:8], c["resent"], calling)
            if c.get("grown"):
                log.info("series %s: %d new instance(s) from %s after the series was queued: it will be analysed "
                         "again", folder.name[:8], c["grown"], calling)

    def _note(self, event, folder: Path, what: str | None = None) -> None:
        """Record that ``event``'s association sends to ``folder`` (and count ``what`` for its closing line)."""
        key = id(event.assoc)
        with self._assoc_lock:
            self._open.setdefault(folder, set()).add(key)
            counts = self._per_assoc.setdefault(key, {}).setdefault(folder, {})
            if what:
                counts[what] = counts.get(what, 0) + 1

    # ---- receiving --------------------------------------------------------------------------------------------
    def _handle_store(self, event) -> int:
        calling = str(event.assoc.requestor.ae_title).strip()
        try:
            ds = event.dataset
            uids = [str(ds.get(k, "") or "").strip() for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")]
            expected = images_in_acquisition(ds.get("ImagesInAcquisition"))
        except Exception as exc:  # noqa: BLE001 - a malformed dataset can make the decoder raise anything
            log.warning("C-STORE from %s refused: the dataset cannot be decoded (%s)", calling, type(exc).__name__)
            return CANNOT_UNDERSTAND
        if not all(uids):
            log.warning("C-STORE from %s refused: the dataset lacks a study, series or instance UID", calling)
            return MISSING_ATTRIBUTES
        if not all(_UID.fullmatch(u) for u in uids):
            log.warning("C-STORE from %s refused: a study, series or instance UID is malformed", calling)
            return MISSING_ATTRIBUTES
        if uids[2] != str(event.request.AffectedSOPInstanceUID).strip():
            log.warning("C-STORE from %s refused: the SOP Instance UID differs from the request's", calling)
            return MISSING_ATTRIBUTES
        folder = self.inbox.series_dir(uids[0], uids[1])
        self._note(event, folder)
        # a series whose copies were purged after delivery and that is sent again is analysed again (a new version)
        queued = self._rel(folder) in self._queued or (folder / "purged.json").exists()
        resent = (folder / "instances" / f"{hashed(uids[2])}.dcm").exists()
        try:
            data = event.encoded_dataset(include_meta=True)
            path = self.inbox.store(data, *uids, calling_ae=calling)
            if queued and not resent and not (folder / "grown").exists():
                write_durably(folder / "grown", json.dumps({"at": time.time()}).encode())
        except OSError as exc:
            log.error("C-STORE from %s: cannot write the instance (%s)", calling, type(exc).__name__)
            return OUT_OF_RESOURCES
        status, reason = InstanceStatus.RECEIVED, None
        try:
            self._record(self._row(path, uids[2], calling, str(event.context.abstract_syntax),
                                   str(event.context.transfer_syntax), len(data), status, reason))
        except SQLAlchemyError as exc:  # the file is kept: a resend, or the next start, records it
            log.error("C-STORE from %s: cannot record the instance in the database (%s)", calling, type(exc).__name__)
            return OUT_OF_RESOURCES
        if expected is not None:
            self._expected[folder] = expected
        if resent:
            self._note(event, folder, "resent")
        elif queued:
            self._note(event, folder, "grown")
        return SUCCESS

    # ---- the database record of each instance -----------------------------------------------------------------
    def _row(self, path: Path, sop_uid: str, calling_ae: str, sop_class: str, transfer_syntax: str, n_bytes: int,
             status: InstanceStatus = InstanceStatus.RECEIVED, reason: str | None = None,
             received_at: datetime | None = None) -> ReceivedInstance:
        """The row of one instance file of the inbox."""
        return ReceivedInstance(
            series_key=path.parent.parent.name, sop_instance_sha256=hashlib.sha256(sop_uid.encode()).hexdigest(),
            calling_ae=calling_ae, sop_class_uid=sop_class, transfer_syntax_uid=transfer_syntax,
            inbox_path=str(path.relative_to(self.inbox.root)), n_bytes=n_bytes, received_at=received_at or utcnow(),
            status=status, reason=reason)

    def _record(self, row: ReceivedInstance, resend_updates: bool = True) -> None:
        """Insert ``row``. A resend of the instance (same SOP Instance UID hash) keeps the one row: with
        ``resend_updates`` its description of the file (size, transfer syntax...) is brought up to date."""
        try:
            with self.sessions.begin() as session:
                session.add(row)
        except IntegrityError:
            if not resend_updates:
                return
            fields = ("series_key", "calling_ae", "sop_class_uid", "transfer_syntax_uid", "inbox_path", "n_bytes")
            with self.sessions.begin() as session:
                changed = session.execute(update(ReceivedInstance).where(
                    ReceivedInstance.sop_instance_sha256 == row.sop_instance_sha256).values(
                    {f: getattr(row, f) for f in fields})).rowcount
            if changed != 1:  # not a duplicate: another constraint failed
                raise

    def record_inbox(self) -> None:
        """Give a row to every inbox file without one: a crash between a file's fsync and its row, or an inbox
        older than the table. The status follows the series: sent (analysed), skipped (with its reason) or not
        yet analysed (received)."""
        with self.sessions() as session:
            known = set(session.scalars(select(ReceivedInstance.inbox_path)))
        for folder in self.inbox.series():
            missing = [p for p in self.inbox.instances(folder) if str(p.relative_to(self.inbox.root)) not in known]
            if not missing:
                continue
            status, reason = InstanceStatus.RECEIVED, None
            if (folder / "skipped.json").exists():
                status, reason = InstanceStatus.SKIPPED, "skipped (see skipped.json)"
                with contextlib.suppress(OSError, ValueError, KeyError):
                    reason = str(json.loads((folder / "skipped.json").read_text())["reason"])
            elif (folder / "sent.json").exists():
                status = InstanceStatus.ANALYSED
            for path in missing:
                try:
                    ds = pydicom.dcmread(path, stop_before_pixels=True)
                    stat = path.stat()
                    row = self._row(path, str(ds.SOPInstanceUID), self.inbox.calling_ae(folder),
                                    str(ds.file_meta.MediaStorageSOPClassUID), str(ds.file_meta.TransferSyntaxUID),
                                    stat.st_size, status, reason,
                                    datetime.fromtimestamp(stat.st_mtime, UTC).replace(tzinfo=None))
                except Exception as exc:  # noqa: BLE001 - one unreadable file must not stop the listener
                    log.warning("series %s: an inbox file cannot be read for its record (%s)", folder.name[:8],
                                type(exc).__name__)
                    continue
                self._record(row, resend_updates=False)
            log.info("series %s: %d instance(s) recorded from the inbox", folder.name[:8], len(missing))

    def _mark_analysed(self, folder: Path, names: set[str]) -> None:
        """The rows of the files named ``names`` become analysed; the series' other rows still ``received``
        become skipped (files the reader left out of the volume)."""
        key = folder.name
        rows = update(ReceivedInstance).where(ReceivedInstance.series_key == key)
        with self.sessions.begin() as session:
            session.execute(rows.where(ReceivedInstance.inbox_path.in_([f"{key}/instances/{n}" for n in sorted(names)]))
                            .values(status=InstanceStatus.ANALYSED, reason=None))
            session.execute(rows.where(ReceivedInstance.status == InstanceStatus.RECEIVED)
                            .values(status=InstanceStatus.SKIPPED, reason="not a slice of the analysed volume"))

    def _mark_skipped(self, folder: Path, reason: str) -> None:
        """Every row of the series becomes skipped with ``reason``."""
        with self.sessions.begin() as session:
            session.execute(update(ReceivedInstance).where(ReceivedInstance.series_key == folder.name)
                            .values(status=InstanceStatus.SKIPPED, reason=reason))

    # ---- completion and results ---------------------------------------------------------------------------------
    def _watch(self) -> None:
        while not self._stop.wait(self.settings.poll_seconds):
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - the monitor must keep running
                log.exception("inbox sweep failed")

    def _rel(self, folder: Path) -> str:
        return str(folder.relative_to(self.instance_dir))

    def _study_of(self, folder: Path) -> Study | None:
        with self.sessions() as session:
            return session.scalar(select(Study).where(Study.upload_dir == self._rel(folder)).order_by(Study.id))

    def _complete(self, folder: Path) -> bool:
        if folder not in self._expected:  # after a restart: read the count again from one instance
            self._expected[folder] = self._count_on_disk(folder)
        expected = self._expected[folder]
        if expected and len(self.inbox.instances(folder)) >= expected:
            return True
        with self._assoc_lock:
            if self._open.get(folder):
                return False  # an association is still sending it (a pause inside it is not the end)
            released = self._released.get(folder, 0.0)
        # after a (re)start, senders cut off by it get a full quiet time to send again
        last = max(self.inbox.last_arrival(folder), released, self._started)
        return time.time() - last >= self.settings.quiet_seconds

    def _count_on_disk(self, folder: Path) -> int | None:
        """ImagesInAcquisition of the series' first instance on disk (None when absent or unreadable)."""
        files = self.inbox.instances(folder)
        try:
            ds = pydicom.dcmread(files[0], stop_before_pixels=True, specific_tags=["ImagesInAcquisition"])
        except Exception:  # noqa: BLE001 - no file, or one pydicom cannot read: completion by quiet time
            return None
        return images_in_acquisition(ds.get("ImagesInAcquisition"))

    def queue(self, folder: Path) -> int:
        """The series' Study row (created queued when there is none yet); returns its id."""
        rel = self._rel(folder)
        with self.sessions.begin() as session:
            existing = session.scalar(select(Study.id).where(Study.upload_dir == rel))
            if existing is not None:
                self._queued.add(rel)
                return existing
            n_files = len(self.inbox.instances(folder))
            study = Study(label="DICOM", kind="dicom", upload_dir=rel, analyse_path=f"{rel}/instances",
                          n_files=n_files, status=StudyStatus.QUEUED)
            session.add(study)
            session.flush()
            study.label = f"DICOM from {self.inbox.calling_ae(folder)} {study.id}"
            study_id = study.id
        self._queued.add(rel)
        log.info("series %s: complete (%d instances), queued as study %d", folder.name[:8], n_files, study_id)
        return study_id

    def sweep(self) -> None:
        """Queue the complete series not yet queued; send (or record as skipped) what finished unsent; analyse
        again the series that grew. Each folder on its own: one that fails never holds up the others."""
        for folder in self.inbox.series():
            try:
                self._sweep_one(folder)
            except Exception as exc:  # noqa: BLE001 - one series must never stop the sweep
                self._record_failure(folder, f"internal error ({type(exc).__name__})")
        self.purge()

    def _sweep_one(self, folder: Path) -> None:
        rel = self._rel(folder)
        if (folder / "failed.json").exists() or (folder / "skipped.json").exists():
            self._queued.add(rel)
            return
        if (folder / "sent.json").exists():
            self._queued.add(rel)
            if (folder / "grown").exists() and self._complete(folder):
                self._analyse_again(folder)
            return
        if rel not in self._queued:
            if self._study_of(folder) is not None:
                self._queued.add(rel)
            elif self._complete(folder):
                self.queue(folder)
            return
        study = self._study_of(folder)
        if study is None:
            return
        if study.status == StudyStatus.FAILED:
            self._mark_skipped(folder, study.error or "the analysis failed")
            write_durably(folder / "skipped.json", json.dumps(
                {"study_id": study.id, "reason": study.error, "at": _now()}).encode())
            log.info("series %s: skipped: %s", folder.name[:8], study.error)
        elif study.status == StudyStatus.DONE and self._may_recover(study) and self._retry_due(folder):
            self._send_unsent(folder, study.id)

    # ---- retention: the received copies carry patient identifiers ---------------------------------------------------
    def _purge_due(self, folder: Path) -> float | None:
        """When the series' copies may be deleted: ``keep_days`` after its delivery (None: not delivered, or not
        to be purged now: failed, grown, being received or analysed again)."""
        sent = folder / "sent.json"
        if (folder / "failed.json").exists() or (folder / "grown").exists():
            return None
        try:
            mtime = sent.stat().st_mtime
        except OSError:
            return None  # not delivered (pending, failed or skipped): never purged
        cached = self._purge_at.get(folder)
        if cached is None or cached[0] != mtime:
            delivered = mtime
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
                delivered = datetime.fromisoformat(str(json.loads(sent.read_text())["at"]).replace(
                    "Z", "+00:00")).timestamp()
            cached = self._purge_at[folder] = (mtime, delivered + self.settings.keep_days * 86400.0)
        with self._assoc_lock:
            if self._open.get(folder):
                return None
        return cached[1]

    def purge(self, now: float | None = None) -> int:
        """Delete the received copies (and the kept result objects) of every series delivered ``keep_days`` ago or
        more; ``<series>/purged.json`` records it, one log line per series. Returns how many series."""
        now = time.time() if now is None else now
        purged = 0
        for folder in self.inbox.series():
            due = self._purge_due(folder)
            if due is None or now < due:
                continue
            with self._send_lock:  # never while its results are built or sent
                due = self._purge_due(folder)
                if due is None or now < due or not (folder / "sent.json").exists():
                    continue
                study = self._study_of(folder)
                if study is not None and study.status in (StudyStatus.QUEUED, StudyStatus.RUNNING):
                    continue
                try:
                    n_instances, n_results = self._delete_copies(folder)
                except OSError as exc:
                    log.warning("series %s: retention: copies not deleted (%s)", folder.name[:8], type(exc).__name__)
                    continue
            self._purge_at.pop(folder, None)
            self._expected.pop(folder, None)
            purged += 1
            log.info("series %s: retention: %d received instance(s) and %d result object(s) deleted, %.1f day(s) "
                     "after delivery (--keep-days %g)", folder.name[:8], n_instances, n_results,
                     max(0.0, now - (due - self.settings.keep_days * 86400.0)) / 86400.0, self.settings.keep_days)
        return purged

    @staticmethod
    def _delete_copies(folder: Path) -> tuple[int, int]:
        """Delete ``instances/``, ``incoming/`` and the result objects' files (``.dcm``) of one series, then write
        ``purged.json``; the small records (series.json, sent.json, notes.json, delivery state) stay."""
        instances = folder / "instances"
        n_instances = len(list(instances.glob("*.dcm")))
        results = [p for d in [folder / "results", *folder.glob("results-v*")] for p in d.glob("*.dcm")]
        # first the record (a crash part-way leaves instances/ listed: the next sweep purges it again)
        write_durably(folder / "purged.json", json.dumps(
            {"at": _now(), "instances": n_instances, "result_objects": len(results)}).encode())
        for path in results:
            path.unlink(missing_ok=True)
        shutil.rmtree(folder / "incoming", ignore_errors=True)
        doomed = folder / f".purging-{time.monotonic_ns()}"  # a crash in rmtree: removed at the next start
        os.replace(instances, doomed)  # at once out of the inbox's series (a store now makes a new folder)
        shutil.rmtree(doomed)
        return n_instances, len(results)

    # ---- failures: recorded once, retried with a backoff, then given up --------------------------------------------
    def _delivery_state(self, folder: Path) -> dict:
        try:
            return dict(json.loads((folder / "delivery.json").read_text()))
        except (OSError, ValueError, TypeError):
            return {}

    def _retry_due(self, folder: Path) -> bool:
        return time.time() >= float(self._delivery_state(folder).get("next_at", 0.0))

    def _record_failure(self, folder: Path, reason: str) -> None:
        """Count one failed delivery of ``folder``: log it (a new reason as a warning, a repeat in one info line),
        set the next try after a doubling backoff, or give the series up after ``max_attempts``."""
        state = self._delivery_state(folder)
        attempts = int(state.get("attempts", 0)) + 1
        wait = min(self.settings.retry_seconds * 2 ** (attempts - 1), self.settings.max_retry_seconds)
        state.update(attempts=attempts, reason=reason, last_at=_now(), next_at=time.time() + wait)
        if state.get("first_reason") is None:
            state["first_reason"] = reason
        key = folder.name[:8]
        with contextlib.suppress(OSError):
            if attempts >= self.settings.max_attempts:
                write_durably(folder / "failed.json", json.dumps(
                    {"attempts": attempts, "reason": reason, "at": _now()}).encode())
                log.error("series %s: delivery given up after %d attempts: %s (delete failed.json to try again)",
                          key, attempts, reason)
            write_durably(folder / "delivery.json", json.dumps(state).encode())
        if attempts >= self.settings.max_attempts:
            return
        if attempts == 1 or state.get("logged_reason") != reason:
            log.warning("series %s: delivery failed: %s; next try in %.0f s", key, reason, wait)
            state["logged_reason"] = reason
            with contextlib.suppress(OSError):
                write_durably(folder / "delivery.json", json.dumps(state).encode())
        else:
            log.info("series %s: delivery attempt %d failed again; next try in %.0f s", key, attempts, wait)

    # ---- versions: a series that grew after it was analysed ----------------------------------------------------
    @staticmethod
    def _version(folder: Path) -> int:
        """The version of the series' results being built now (1, then one more per earlier delivery kept)."""
        return 1 + len(list(folder.glob("results-v*")))

    def _analyse_again(self, folder: Path) -> None:
        """The series grew after its results were sent: keep those as ``results-v<n>``, queue the study again."""
        study = self._study_of(folder)
        if study is None or study.status in (StudyStatus.QUEUED, StudyStatus.RUNNING):
            return
        version = self._version(folder)
        with self._send_lock:
            kept = folder / f"results-v{version}"
            results = folder / "results"
            if results.is_dir():
                os.replace(results, kept)
            kept.mkdir(exist_ok=True)
            os.replace(folder / "sent.json", kept / "sent.json")
            (folder / "grown").unlink(missing_ok=True)
            (folder / "delivery.json").unlink(missing_ok=True)
            _fsync_dir(folder)
            n_files = len(self.inbox.instances(folder))
            with self.sessions.begin() as session:
                session.execute(update(Study).where(Study.id == study.id).values(
                    status=StudyStatus.QUEUED, n_files=n_files, started_at=None, finished_at=None, error=None))
        log.info("series %s: grew to %d instances after it was analysed: analysing it again (version %d)",
                 folder.name[:8], n_files, version + 1)

    def _previous_reports(self, folder: Path) -> list[Dataset]:
        """The SRs of the earlier versions sent, oldest first (the new SR supersedes them)."""
        out = []
        for path in sorted(folder.glob("results-v*/sr.dcm"), key=lambda p: int(p.parent.name.split("-v")[1])):
            with contextlib.suppress(Exception):
                out.append(pydicom.dcmread(path))
        return out

    def _may_recover(self, study: Study) -> bool:
        """Whether a done-but-unsent study is left over (and not about to be sent by the worker's hook, which
        runs just after the worker stores it done: our worker is then busy)."""
        if self.worker is not None and self.worker.is_alive():
            return self.worker.idle.is_set()
        finished = study.finished_at
        return finished is None or (datetime.now(UTC).replace(tzinfo=None) - finished).total_seconds() > 5

    def _on_done(self, study_id: int, scan, result: ScanResult) -> None:
        with self.sessions() as session:
            study = session.get(Study, study_id)
            folder = self.instance_dir / study.upload_dir
            started = study.started_at
        if folder.parent != self.inbox.root:
            return  # a web upload, not a series from the listener
        self._clear_grown_before(folder, started)
        try:
            self.deliver(folder, study_id, scan, result)
        except Exception as exc:  # noqa: BLE001 - recorded and retried by the sweep; never a traceback per try
            self._record_failure(folder, _reason(exc))

    @staticmethod
    def _clear_grown_before(folder: Path, started: datetime | None) -> None:
        """A growth mark older than the analysis that just ended was part of it: drop it."""
        marker = folder / "grown"
        if started is None or not marker.exists():
            return
        with contextlib.suppress(OSError, ValueError, KeyError):
            at = float(json.loads(marker.read_text())["at"])
            if at < started.replace(tzinfo=UTC).timestamp():
                marker.unlink()

    def _send_unsent(self, folder: Path, study_id: int) -> None:
        """Recovery: resend the kept objects, or (a crash, or a failure, before they were built) analyse again and
        send."""
        try:
            results = folder / "results"
            if (results / "complete").exists():
                with self._send_lock:
                    if not (folder / "sent.json").exists():
                        self._send_files(folder, study_id, sorted(results.glob("*.dcm")))
                return
            from strokescan.io import load_scan

            if self._sweep_predictor is None:
                self._sweep_predictor = self.settings.predictor_factory()
            scan = load_scan(folder / "instances")
            self.deliver(folder, study_id, scan, self._sweep_predictor.analyse(scan))
        except Exception as exc:  # noqa: BLE001 - recorded once, retried with a backoff
            self._record_failure(folder, _reason(exc))

    def deliver(self, folder: Path, study_id: int, scan, result: ScanResult) -> None:
        """Build the result objects of one series (what the geometry allows), keep them, send them once."""
        with self._send_lock:
            if (folder / "sent.json").exists():
                return
            started = time.monotonic()
            sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in self.inbox.instances(folder)]
            version = self._version(folder)
            previous = self._previous_reports(folder) if version > 1 else None
            seed = f"strokescan:{folder.name}:{study_id}" + (f":v{version}" if version > 1 else "")
            objects = build_result_objects(scan, sources, result, uid_seed=seed, previous_versions=previous)
            results = folder / "results"
            results.mkdir(exist_ok=True)
            paths = []
            for name, ds in objects.named():
                path = results / f"{name}.dcm"
                buffer = DicomBytesIO()
                ds.save_as(buffer, enforce_file_format=True)
                write_durably(path, buffer.getvalue())
                paths.append(path)
            notes = {"seg_problem": objects.seg_problem, "missing_slices": objects.missing_slices, "version": version}
            write_durably(results / "notes.json", json.dumps(notes).encode())
            self._mark_analysed(folder, {Path(s.split("#")[0]).name for s in scan.slice_sources})
            write_durably(results / "complete", b"")
            log.info("series %s: result objects built in %.2f s (version %d)%s%s", folder.name[:8],
                     time.monotonic() - started, version,
                     f"; no SEG: {objects.seg_problem}" if objects.seg_problem else "",
                     f"; PARTIAL: {objects.missing_slices}" if objects.missing_slices else "")
            if self.settings.fhir is not None:
                try:
                    deliver(result, self.settings.fhir, sources[0].get("StudyInstanceUID"),
                            patient_id=sources[0].get("PatientID"))
                except Exception as exc:  # noqa: BLE001 - FHIR is best effort; DICOM delivery goes on
                    log.warning("series %s: FHIR delivery failed (%s)", folder.name[:8], exc)
            self._send_files(folder, study_id, paths)

    def _dest_tls(self) -> ssl.SSLContext | None:
        """The TLS context of the association to the destination (our certificate too, when we have one)."""
        s = self.settings
        return None if s.dest_tls_ca is None else client_tls_context(s.dest_tls_ca, s.tls_cert, s.tls_key)

    def _send_files(self, folder: Path, study_id: int, paths: list[Path]) -> None:
        destination = self.settings.destination
        if destination is None:
            write_durably(folder / "sent.json", json.dumps(
                {"study_id": study_id, "destination": None, "at": _now(), "files": [p.name for p in paths]}).encode())
            return
        datasets = [pydicom.dcmread(p) for p in paths]
        if self._dest_tls_context is None and self.settings.dest_tls_ca is not None:
            self._dest_tls_context = self._dest_tls()
        statuses = send_datasets(datasets, destination, self.settings.ae_title, tls=self._dest_tls_context)
        if all(s in STORED for s in statuses):
            write_durably(folder / "sent.json", json.dumps(
                {"study_id": study_id, "destination": f"{destination.ae_title}@{destination.host}:{destination.port}",
                 "at": _now(), "files": [p.name for p in paths]}).encode())
            (folder / "delivery.json").unlink(missing_ok=True)
            log.info("series %s: results sent to %s (%s)", folder.name[:8], destination.ae_title,
                     ", ".join(p.stem for p in paths))
        else:
            answer = ("no association" if all(s < 0 for s in statuses)
                      else "statuses " + ", ".join(f"0x{s:04X}" if s >= 0 else "none" for s in statuses))
            self._record_failure(folder, f"sending to {destination.ae_title} failed ({answer})")


def _reason(exc: BaseException) -> str:
    """One line naming a failure (a StrokescanError's message; other errors by their type only, since a library's
    message may quote header values)."""
    from strokescan.errors import StrokescanError

    if isinstance(exc, StrokescanError):
        return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return f"{type(exc).__name__} while building or sending the results"


def send_datasets(datasets: Sequence[Dataset], destination: Destination, calling_ae: str = "STROKESCAN",
                  timeout_s: float = 30.0, tls: ssl.SSLContext | None = None) -> list[int]:
    """C-STORE each dataset to ``destination`` on one association (over TLS with ``tls``, the certificate checked
    against the destination's host); returns the statuses (-1: no answer)."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop_class, [str(ds.file_meta.TransferSyntaxUID) for ds in datasets
                                             if str(ds.SOPClassUID) == sop_class][:1] + ["1.2.840.10008.1.2.1"])
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title,
                         tls_args=None if tls is None else (tls, destination.host))
    if not assoc.is_established:
        return [-1] * len(datasets)
    statuses = []
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            statuses.append(int(status.Status) if status and "Status" in status else -1)
    finally:
        assoc.release()
    return statuses


# ---- command line ------------------------------------------------------------------------------------------------
#: each option's default, to tell what a --config file may set (a flag given on the command line wins)
_DEFAULTS: dict[str, object] = {}
#: option values a TOML file gives as text or lists, turned into what the flag would give
_CONVERT: dict[str, Callable[[object], object]] = {
    "dest": lambda v: Destination.parse(str(v)), "fhir_dir": lambda v: Path(str(v)),
    "instance_dir": lambda v: Path(str(v)), "model": lambda v: Path(str(v)), "segmenter": lambda v: Path(str(v)),
    "fhir_token_file": lambda v: Path(str(v)), "allow": lambda v: [str(x) for x in (v if isinstance(v, list) else [v])],
    "keep_days": float, "tls_cert": lambda v: Path(str(v)), "tls_key": lambda v: Path(str(v)),
    "tls_ca": lambda v: Path(str(v)), "dest_tls_ca": lambda v: Path(str(v)),
}


def add_listen_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, metavar="TOML",
                   help="read these options from a TOML file (keys as the flags, e.g. quiet-seconds = 3); "
                   "flags on the command line win")
    p.add_argument("--ae-title", default=os.environ.get("STROKESCAN_AE_TITLE", "STROKESCAN"),
                   help="our AE title; an association addressed to another one is refused")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=11112)
    p.add_argument("--allow", action="append", default=[], metavar="AET[@HOST]",
                   help="accept only these callers (repeat; default: anyone): AET from any host, AET@HOST, or *@HOST "
                   "(any AE title from HOST); HOST: an address, a CIDR network or a name resolved at start. "
                   "A refusal is logged in one line")
    p.add_argument("--quiet-seconds", type=float, default=3.0,
                   help="a series is complete when its associations are closed and nothing arrived for this long "
                   "(default 3)")
    p.add_argument("--dest", type=Destination.parse, metavar="AET@HOST:PORT",
                   help="send SEG, SR and key image here by C-STORE")
    p.add_argument("--retry-seconds", type=float, default=5.0,
                   help="first wait before a failed delivery is tried again; doubles each time (default 5)")
    p.add_argument("--max-retry-seconds", type=float, default=600.0, help="longest wait between tries (default 600)")
    p.add_argument("--max-attempts", type=int, default=10, help="tries before a series is given up (default 10)")
    p.add_argument("--keep-days", type=float, default=7.0, metavar="N",
                   help="delete the received copies of a series (they carry patient identifiers) and its kept result "
                   "objects N days after it was delivered (default 7; 0: as soon as it is delivered). Series not "
                   "delivered are never deleted")
    p.add_argument("--tls-cert", type=Path, metavar="PEM", help="our certificate (chain): accept DICOM TLS only")
    p.add_argument("--tls-key", type=Path, metavar="PEM", help="the private key of --tls-cert")
    p.add_argument("--tls-ca", type=Path, metavar="PEM",
                   help="require client certificates signed by these CA certificates")
    p.add_argument("--dest-tls-ca", type=Path, metavar="PEM",
                   help="send to --dest over TLS, checking its certificate (and its host name or address) against "
                   "these CA certificates; --tls-cert/--tls-key, when given, are our client certificate")
    p.add_argument("--fhir-url", help="POST a FHIR R4 DiagnosticReport bundle to this base URL")
    p.add_argument("--fhir-dir", type=Path, help="write the FHIR bundles to this folder")
    p.add_argument("--fhir-token-file", type=Path,
                   help="a file holding a bearer token for the FHIR server (or set $STROKESCAN_FHIR_TOKEN)")
    p.add_argument("--fhir-identifiers", action="store_true",
                   help="put identifiers in the FHIR report: the subject by PatientID (with --fhir-patient-system) "
                   "and the ImagingStudy by StudyInstanceUID (off by default)")
    p.add_argument("--fhir-patient-system", metavar="URI",
                   help="identifier system of the DICOM PatientID at this site (used with --fhir-identifiers)")
    p.add_argument("--instance-dir", type=Path, help="the web app's instance folder (default: its default)")
    p.add_argument("--database-url", help="the web app's database (default: the one of the instance folder)")
    p.add_argument("--model", type=Path, help="classifier folder (default: the bundled model)")
    p.add_argument("--segmenter", type=Path, help="segmentation model folder (default: the bundled one)")
    p.add_argument("--no-worker", action="store_true", help="only receive and queue; another process analyses "
                   "(results are then sent by the sweep, after analysing again)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="log level of the listener's lines on stderr, with timestamps (default INFO)")
    _DEFAULTS.update({a.dest: a.default for a in p._actions if a.dest != "help"})


def apply_config(args: argparse.Namespace) -> argparse.Namespace:
    """Options from ``args.config`` (TOML) for every option the command line left at its default."""
    if not getattr(args, "config", None):
        return args
    import tomllib

    with open(args.config, "rb") as fh:
        doc = tomllib.load(fh)
    doc = doc.get("listen", doc)  # a [listen] table, or the options at the top level
    for key, value in doc.items():
        dest = key.replace("-", "_")
        if dest not in _DEFAULTS or dest == "config":
            raise ValueError(f"{args.config}: unknown option {key!r}")
        if getattr(args, dest, None) == _DEFAULTS[dest]:
            setattr(args, dest, _CONVERT.get(dest, lambda v: v)(value))
    return args


def _fhir_headers(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    token = os.environ.get("STROKESCAN_FHIR_TOKEN", "")
    if getattr(args, "fhir_token_file", None):
        token = Path(args.fhir_token_file).read_text().strip()
    return (("Authorization", f"Bearer {token}"),) if token else ()


def settings_from_args(args: argparse.Namespace) -> ListenerSettings:
    from strokescan.config import database_url, web_root

    args = apply_config(args)
    instance_dir = (args.instance_dir or web_root()).resolve()
    url = args.database_url or (database_url() if instance_dir == web_root().resolve()
                                else f"sqlite:///{instance_dir / 'strokescan.db'}")
    model, segmenter = args.model, args.segmenter
    fhir = FhirSettings(folder=args.fhir_dir, url=args.fhir_url, headers=_fhir_headers(args),
                        include_study_uid=bool(getattr(args, "fhir_identifiers", False)),
                        patient_identifier_system=getattr(args, "fhir_patient_system", None),
                        ) if (args.fhir_dir or args.fhir_url) else None
    return ListenerSettings(
        instance_dir=instance_dir, database_url=url, ae_title=args.ae_title, host=args.host, port=args.port,
        allowed_calling_aets=tuple(args.allow), quiet_seconds=args.quiet_seconds, destination=args.dest, fhir=fhir,
        run_worker=not args.no_worker, retry_seconds=args.retry_seconds, max_retry_seconds=args.max_retry_seconds,
        max_attempts=args.max_attempts, keep_days=args.keep_days, tls_cert=args.tls_cert, tls_key=args.tls_key,
        tls_ca=args.tls_ca, dest_tls_ca=args.dest_tls_ca,
        predictor_factory=lambda: Predictor(model, segmenter_dir=segmenter, segment=True),
    )


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str = "INFO") -> None:
    """Timestamped lines on stderr at ``level`` (replacing a handler the CLI set up for its other commands)."""
    logging.basicConfig(level=getattr(logging, level), format=LOG_FORMAT, force=True)
    for noisy in ("pynetdicom", "pydicom", "alembic", "highdicom"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_listen(args: argparse.Namespace) -> int:
    """The ``strokescan listen`` command: run until interrupted (SIGTERM or Ctrl-C: a graceful stop)."""
    import signal

    settings = settings_from_args(args)
    setup_logging(getattr(args, "log_level", "INFO") or "INFO")

    def _interrupt(*_args) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        listener = Listener(settings)
        listener.start()
    except (ValueError, OSError) as exc:  # a bad --allow entry or --keep-days, a TLS file that cannot be loaded
        with contextlib.suppress(NameError):
            listener.stop()
        print(f"strokescan listen: error: {exc}", file=sys.stderr)
        return 2
    if settings.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {settings.host}, not only this machine", file=sys.stderr)
    print(f"strokescan listen: {listener.settings.ae_title} on {settings.host}:{listener.port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        listener.stop()
    return 0


def add_listen_command(sub: argparse._SubParsersAction) -> None:
    """Register ``strokescan listen`` on the CLI's sub-parsers."""
    p = sub.add_parser("listen", help="receive head CT by DICOM, analyse it, send SEG/SR/key image back",
                       description="A DICOM Storage SCP (C-ECHO, C-STORE): each series it receives is analysed "
                       "through the web app's job queue and the results go back as DICOM SEG, TID 1500 SR and a "
                       "key image (and FHIR, if configured). Research software, not a diagnosis.")
    add_listen_arguments(p)
    p.set_defaults(func=run_listen)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="strokescan-listen")
    add_listen_arguments(parser)
    return run_listen(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
