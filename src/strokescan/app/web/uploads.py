"""Upload safety: store files a client sent (single files, folders, .zip archives) under a fresh folder, or refuse.

Nothing the client says is trusted: file names are sanitised and traversal refused, archives are checked
before and while unpacking (zip bombs, symlinks, traversal), and every stored file is recognised by its
content. A refusal raises :class:`UploadRejected` with the HTTP status to answer and leaves nothing behind.

Stored files get neutral names (``0001.dcm``...: a client's file name can carry a patient's name) unless the
operator keeps identifiers; files and folders are readable by the server's user only (0600/0700). In an upload
of DICOM files, files of no known kind (a README, a viewer program) are left out and listed in
:attr:`StoredUpload.ignored`; alone, or beside images or NIfTI, they are refused.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import stat
import tempfile
import unicodedata
import warnings
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pydicom

from strokescan.errors import InputError

_CHUNK = 1 << 20
_ZIP_MAGIC = b"PK\x03\x04"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_GZIP_MAGIC = b"\x1f\x8b"
_NIFTI_HEADER_SIZES = (348, 540)  # sizeof_hdr of NIfTI-1 and NIfTI-2
_JUNK = {"__MACOSX", "Thumbs.db", "desktop.ini", "DICOMDIR"}  # skipped, like hidden files
_DRIVE = re.compile(r"^[A-Za-z]:")
_UNSAFE = re.compile(r"[^\w.-]")
_MAX_COMPONENT_BYTES = 255
_MAX_NAME_BYTES = 1024
_EXPECTED = {".dcm": "dicom", ".dicom": "dicom", ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".nii": "nifti"}
_LABELS = {"dicom": "DICOM", "png": "PNG", "jpeg": "JPEG", "nifti": "NIfTI"}
_GROUPS = {"dicom": "dicom", "png": "image", "jpeg": "image", "nifti": "nifti"}


class UploadRejected(InputError):
    """An upload refused before analysis; `status` is the HTTP status a server answers with (400, 413 or 415)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class UploadLimits:
    """What one upload may hold."""

    max_total_bytes: int = 1 << 30  # received bytes (all parts)
    max_files: int = 2000  # files received or inside archives
    max_unpacked_bytes: int = 2 << 30  # sum of uncompressed sizes inside zips
    max_ratio: float = 100.0  # uncompressed / compressed, per zip member and for the whole zip (zip bomb)


@dataclass
class StoredUpload:
    """An accepted upload: where its files are and what to analyse."""

    root: Path  # folder under dest holding the accepted files
    analyse_path: Path  # what to hand to strokescan.io.load_scan: the single file, or the folder
    n_files: int
    n_bytes: int  # bytes of the accepted files as stored (archives unpacked)
    kind: str  # "dicom" | "nifti" | "image"
    ignored: list[str] = field(default_factory=list)  # the client's names of files left out (no known kind)


def store_upload(
    parts: Iterable[tuple[str, BinaryIO]], dest: Path, limits: UploadLimits = UploadLimits(), keep_names: bool = False
) -> StoredUpload:
    """Store ``parts`` (client file name, readable binary stream) in a new folder under ``dest``.

    ``.zip`` parts (recognised by content) are unpacked in place; hidden files, macOS junk and DICOMDIR are
    skipped. Files are stored as ``0001.dcm``, ``0002.dcm``... unless ``keep_names``. Raises
    :class:`UploadRejected` and removes the partial folder when anything is refused.
    """
    dest.mkdir(parents=True, exist_ok=True)
    dest.chmod(0o700)
    root = Path(tempfile.mkdtemp(prefix="upload-", dir=dest))
    try:
        upload = _Upload(root, limits, keep_names)
        for name, stream in parts:
            upload.add_part(name, stream)
        stored = upload.result()
        private_tree(root)
        return stored
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


@dataclass
class _Upload:
    """The running state of one upload while its parts arrive."""

    root: Path
    limits: UploadLimits
    keep_names: bool = False
    received: int = 0
    unpacked: int = 0
    n_bytes: int = 0
    kind: str | None = None
    files: list[Path] = field(default_factory=list)
    names: set[str] = field(default_factory=set)  # sanitised client names, to refuse two files of one name
    unknown: list[tuple[Path, str, str]] = field(default_factory=list)  # (stored, client name, refusal) of no kind
    counter: int = 0

    def _target(self, base: Path, parts: list[str], shown: str) -> Path:
        """Create the empty file a part or member is stored in: its sanitised name, or the next neutral name."""
        key = "/".join(parts)
        if key in self.names:
            raise UploadRejected(f"{shown}: another file of the upload has this name")
        self.names.add(key)
        if self.keep_names:
            return _create(base, parts, shown)
        self.counter += 1
        return _create(self.root, [f"{self.counter:04d}{_suffix(parts[-1])}"], shown)

    def add_part(self, name: str, stream: BinaryIO) -> None:
        """Stream one part to its sanitised path; unpack it when it is a zip archive."""
        parts = _safe_parts(name, _shown(name))
        if parts is None:
            return
        shown = "/".join(parts)
        self._count_files(1, shown)
        target = self._target(self.root, parts, shown)
        with target.open("wb") as out:
            n = _copy(stream, out, self.limits.max_total_bytes - self.received)
        if n is None:
            raise UploadRejected(f"{shown}: the upload is over the {_size(self.limits.max_total_bytes)} limit", 413)
        self.received += n
        if n == 0:
            raise UploadRejected(f"{shown}: the file is empty")
        with target.open("rb") as fh:
            is_zip = fh.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC
        if not is_zip:
            self._accept(target, shown, n)
            return
        try:
            self._unpack(target, shown)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError):
            raise UploadRejected(f"{shown}: not a readable zip archive") from None
        target.unlink()

    def result(self) -> StoredUpload:
        """The accepted upload; refuses one that holds no files, and files of no known kind unless the upload
        holds DICOM files (then they are removed and listed as ignored)."""
        if self.unknown and self.kind != "dicom":
            _path, _shown_name, refusal = self.unknown[0]
            raise UploadRejected(refusal, 415)
        if self.kind is None:
            raise UploadRejected("the upload holds no files")
        for path, _shown_name, _refusal in self.unknown:
            path.unlink(missing_ok=True)
        analyse = self.files[0] if len(self.files) == 1 else self.root
        return StoredUpload(self.root, analyse, len(self.files), self.n_bytes, self.kind,
                            [name for _path, name, _refusal in self.unknown])

    def _count_files(self, n: int, shown: str) -> None:
        if len(self.files) + n > self.limits.max_files:
            raise UploadRejected(f"{shown}: the upload is over the limit of {self.limits.max_files} files", 413)

    def _unpack(self, archive: Path, shown: str) -> None:
        """Unpack ``archive`` beside itself, checking declared sizes first and actual bytes while extracting."""
        ratio = self.limits.max_ratio
        with zipfile.ZipFile(archive) as zf:
            members = []
            for info in zf.infolist():
                member_shown = f"{shown}!{_shown(info.filename)}"
                parts = _safe_parts(info.filename, member_shown)
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise UploadRejected(f"{member_shown}: symbolic links in archives are refused")
                if info.flag_bits & 0x1:
                    raise UploadRejected(f"{member_shown}: encrypted archive members are refused")
                if info.is_dir() or parts is None:
                    continue
                if info.file_size > ratio * info.compress_size:
                    raise UploadRejected(f"{member_shown}: compressed over {ratio:g} times (a zip bomb?)", 413)
                members.append((info, parts))
            if not members:
                raise UploadRejected(f"{shown}: the archive holds no files")
            self._count_files(len(members), shown)
            declared = sum(info.file_size for info, _ in members)
            if self.unpacked + declared > self.limits.max_unpacked_bytes:
                raise UploadRejected(
                    f"{shown}: unpacks to over the {_size(self.limits.max_unpacked_bytes)} limit", 413
                )
            if declared > ratio * archive.stat().st_size:
                raise UploadRejected(f"{shown}: compressed over {ratio:g} times (a zip bomb?)", 413)
            for info, parts in members:
                member_shown = f"{shown}!{'/'.join(parts)}"
                target = self._target(archive.parent, parts, member_shown)
                with zf.open(info) as src, target.open("wb") as out:
                    n = _copy(src, out, self.limits.max_unpacked_bytes - self.unpacked)
                if n is None:
                    raise UploadRejected(
                        f"{shown}: unpacks to over the {_size(self.limits.max_unpacked_bytes)} limit", 413
                    )
                self.unpacked += n
                if n == 0:
                    raise UploadRejected(f"{member_shown}: the file is empty")
                self._accept(target, member_shown, n)

    def _accept(self, path: Path, shown: str, n: int) -> None:
        """Keep a stored file whose content is a kind its name allows and the upload's other files share."""
        kind = _content_kind(path)
        expected = _expected_kind(path.name)
        if expected is not None and kind != expected:
            raise UploadRejected(f"{shown}: not a {_LABELS[expected]} file (content does not match its name)", 415)
        if kind is None:
            self.unknown.append((path, shown, f"{shown}: not a DICOM, PNG, JPEG or NIfTI (.nii/.nii.gz) file"))
            return
        group = _GROUPS[kind]
        if self.kind is not None and group != self.kind:
            raise UploadRejected(f"{shown}: a {group} file in an upload of {self.kind} files (send one kind at a time)")
        self.kind = group
        self.files.append(path)
        self.n_bytes += n


def _suffix(name: str) -> str:
    """The suffix a neutral stored name keeps: only those the readers and checks go by."""
    lower = name.lower()
    if lower.endswith(".nii.gz"):
        return ".nii.gz"
    suffix = Path(lower).suffix
    return suffix if suffix in _EXPECTED or suffix == ".zip" else ""


def private_tree(root: Path) -> None:
    """Folders 0700 and files 0600 under ``root`` (patient data: for the server's user only)."""
    root.chmod(0o700)
    for folder, dirs, files in os.walk(root):
        for d in dirs:
            os.chmod(os.path.join(folder, d), 0o700)
        for f in files:
            os.chmod(os.path.join(folder, f), 0o600)


def _shown(name: str) -> str:
    """A client-given name made safe for a one-line message."""
    return "".join(c if c.isprintable() else "?" for c in name)[:200] or "(no name)"


def _safe_parts(name: str, shown: str) -> list[str] | None:
    """The sanitised components of a relative client or member path, or None for a file to skip.

    Refuses (400) absolute paths, drive letters, '..' components and names with nothing usable left.
    """
    name = unicodedata.normalize("NFKC", name)  # before the checks: fullwidth dots and slashes become '.' and '/'
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise UploadRejected(f"{shown}: absolute file names are refused")
    raw = [c for c in re.split(r"[/\\]", name) if c not in ("", ".")]
    if ".." in raw:
        raise UploadRejected(f"{shown}: '..' in a file name is refused (it would leave the upload folder)")
    if not raw:
        raise UploadRejected(f"{shown}: the file has no name")
    if any(c.startswith(".") or c in _JUNK for c in raw):
        return None
    parts = [_UNSAFE.sub("_", c).strip("._") for c in raw]
    if not all(parts):
        raise UploadRejected(f"{shown}: the file name has no usable characters")
    if max(len(p.encode()) for p in parts) > _MAX_COMPONENT_BYTES or len("/".join(parts).encode()) > _MAX_NAME_BYTES:
        raise UploadRejected(f"{shown}: the file name is too long")
    return parts


def _create(base: Path, parts: list[str], shown: str) -> Path:
    """Create the empty file ``base/parts``, refusing (400) a name another file of the upload already holds."""
    target = base.joinpath(*parts)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.open("xb").close()
    except (FileExistsError, NotADirectoryError, IsADirectoryError):
        raise UploadRejected(f"{shown}: another file of the upload has this name") from None
    return target


def _copy(src: BinaryIO, out: BinaryIO, room: int) -> int | None:
    """Copy ``src`` to ``out`` in chunks: the number of bytes, or None as soon as more than ``room`` came."""
    n = 0
    while chunk := src.read(_CHUNK):
        n += len(chunk)
        if n > room:
            return None
        out.write(chunk)
    return n


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"


def _expected_kind(name: str) -> str | None:
    """The kind a file's name promises, if any."""
    lower = name.lower()
    if lower.endswith(".nii.gz"):
        return "nifti"
    return _EXPECTED.get(Path(lower).suffix)


def _content_kind(path: Path) -> str | None:
    """'dicom', 'png', 'jpeg' or 'nifti' from the content of ``path`` (NIfTI also needs its name), else None."""
    with path.open("rb") as fh:
        head = fh.read(132)
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    if head[128:132] == b"DICM":
        return "dicom"
    lower = path.name.lower()
    if lower.endswith(".nii") and _is_nifti_header(head[:4]):
        return "nifti"
    if lower.endswith(".nii.gz") and head.startswith(_GZIP_MAGIC) and _is_nifti_header(_gunzip_head(path)):
        return "nifti"
    return "dicom" if _is_dicom_without_preamble(path) else None


def _is_nifti_header(first4: bytes) -> bool:
    if len(first4) < 4:
        return False
    return any(int.from_bytes(first4, order) in _NIFTI_HEADER_SIZES for order in ("little", "big"))


def _gunzip_head(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as fh:
            return fh.read(4)
    except (OSError, EOFError, zlib.error):
        return b""


def _is_dicom_without_preamble(path: Path) -> bool:
    """True when pydicom reads a header with a SOP class or modality (old GE files have no 'DICM' preamble)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=True, defer_size=1024)
            return "SOPClassUID" in ds or "Modality" in ds
    except Exception:  # noqa: BLE001 - any failure to parse means "not DICOM"
        return False
