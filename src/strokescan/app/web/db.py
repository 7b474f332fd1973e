"""The web app's database: users, their login sessions and API tokens, studies (each one upload and its analysis
job), reader feedback, the audit trail, settings and the DICOM instances ``strokescan listen`` received, as
SQLAlchemy 2 models. The schema is made and
upgraded by Alembic (``migrations/``), never by ``create_all``, so that an operator's database follows every
release.

No column holds a patient identifier unless the operator opted in (``show_identifiers``: then
``studies.identifiers_json`` holds the patient name and ID, accession number, study date and description): a study
has a neutral label, stored files have neutral names, and the result document never carries identifiers (see
:mod:`strokescan.inference.results`); a received instance is named by hashes of its UIDs.
"""

from __future__ import annotations

import enum
import json
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class StudyStatus(str, enum.Enum):
    """Where a study's analysis job stands."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(80), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)  # role admin; else reader
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)  # wrong passwords since the last login or lockout
    locked_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    password_changed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    # Flask-Login's user protocol; the id Flask-Login keeps in the cookie is the server-side session's secret
    is_active = True
    is_authenticated = True
    is_anonymous = False
    session_secret = None  # set per request (not a column)

    @property
    def role(self) -> str:
        return "admin" if self.is_admin else "reader"

    def get_id(self) -> str:
        if not self.session_secret:
            raise RuntimeError("a user is logged in through a server-side session only")
        return self.session_secret


class UserSession(Base):
    """A login: the cookie holds a random secret, the database only its sha256. Logging out, a password change,
    the idle and the absolute limit end it on the server, so a copied cookie stops working."""

    __tablename__ = "user_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    ended_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)  # logout, password, idle, expired


class ApiToken(Base):
    """A bearer token for the REST API; only its sha256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(80))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)  # None: never
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    user: Mapped[User] = relationship()

    def state(self, now: datetime) -> str:
        """``active``, ``revoked`` or ``expired``."""
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expires_at is not None and self.expires_at <= now else "active"


class Study(Base):
    """One upload and its analysis: the job's status, the headline findings for the worklist, the result."""

    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    label: Mapped[str] = mapped_column(String(120))  # neutral: "DICOM upload 7", a sample's name
    kind: Mapped[str] = mapped_column(String(16))  # dicom | nifti | image
    upload_dir: Mapped[str] = mapped_column(String(500))  # relative to the instance folder
    analyse_path: Mapped[str] = mapped_column(String(500))  # relative to the instance folder
    n_files: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[StudyStatus] = mapped_column(Enum(StudyStatus, native_enum=False, length=16),
                                                default=StudyStatus.QUEUED, index=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)  # one line, when failed
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    claimed_by: Mapped[str | None] = mapped_column(String(80), nullable=True)  # the worker analysing it
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)  # its last sign of life
    uploaded_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    n_slices: Mapped[int | None] = mapped_column(Integer, nullable=True)
    probability: Mapped[float | None] = mapped_column(Float, nullable=True)
    positive: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    operating_point: Mapped[str | None] = mapped_column(String(16), nullable=True)
    clot_ml: Mapped[float | None] = mapped_column(Float, nullable=True)
    subtypes_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    result_json: Mapped[str | None] = mapped_column(Text, nullable=True)  # ScanResult.to_dict()
    identifiers_json: Mapped[str | None] = mapped_column(Text, nullable=True)  # only with show_identifiers
    feedback: Mapped[list[Feedback]] = relationship(back_populates="study", order_by="Feedback.created_at",
                                                    cascade="all, delete-orphan")

    @property
    def identifiers(self) -> dict[str, str]:
        return json.loads(self.identifiers_json) if self.identifiers_json else {}

    @property
    def subtypes(self) -> dict[str, float]:
        return json.loads(self.subtypes_json) if self.subtypes_json else {}

    @property
    def result(self) -> dict | None:
        return json.loads(self.result_json) if self.result_json else None


class Feedback(Base):
    """A reader's agreement with a study's finding, with a note."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    agrees: Mapped[bool] = mapped_column(Boolean)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    study: Mapped[Study] = relationship(back_populates="feedback")
    user: Mapped[User] = relationship()


class AuditEvent(Base):
    """One line of the audit trail: who did what, when, to which study. The app only ever inserts rows; the
    database refuses UPDATE and DELETE on this table (triggers made by migration 0003). ``study_id`` is no foreign
    key, so a deleted study's trail stays. ``detail`` never holds a file name or a patient identifier."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    username: Mapped[str | None] = mapped_column(String(80), nullable=True)
    action: Mapped[str] = mapped_column(String(32), index=True)
    study_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    via: Mapped[str] = mapped_column(String(8))  # web, api, cli, worker
    token_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    remote_addr: Mapped[str | None] = mapped_column(String(45), nullable=True)
    detail: Mapped[str | None] = mapped_column(String(200), nullable=True)


class Setting(Base):
    """A setting an admin changes in the app (``retention_days``), as text."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class InstanceStatus(str, enum.Enum):
    """What became of a received DICOM instance."""

    RECEIVED = "received"  # on disk; its series is not analysed yet
    ANALYSED = "analysed"  # a slice of the analysed volume
    SKIPPED = "skipped"  # kept, not analysed: ``reason`` says why


class ReceivedInstance(Base):
    """One DICOM instance the listener stored: written after its file is on disk, before the C-STORE success.

    No UID or other header value that could identify a patient: the SOP Instance UID only as its sha256 (a
    resend of the same instance updates its row), the series by the listener's hashed folder name."""

    __tablename__ = "received_instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_key: Mapped[str] = mapped_column(String(24), index=True)  # the inbox folder: sha256 of study + series UID
    sop_instance_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    calling_ae: Mapped[str] = mapped_column(String(16))
    sop_class_uid: Mapped[str] = mapped_column(String(64))  # a standard UID (CT Image Storage...), not identifying
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))  # as received (and as stored)
    inbox_path: Mapped[str] = mapped_column(String(500))  # relative to the inbox: <series>/instances/<hash>.dcm
    n_bytes: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    status: Mapped[InstanceStatus] = mapped_column(Enum(InstanceStatus, native_enum=False, length=16),
                                                   default=InstanceStatus.RECEIVED, index=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)  # one line, when skipped


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL and a busy timeout, so the job worker and requests can share it; a
server database (PostgreSQL: ``postgresql+psycopg://...``) checks pooled connections before use."""
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False} if url.startswith("sqlite") else {},
                           pool_pre_ping=not url.startswith("sqlite"))
    if url.startswith("sqlite"):
        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()
    return engine


def upgrade_database(url: str) -> None:
    """Create or upgrade the schema to the newest migration; a SQLite file (and its WAL) readable by its owner
    only (0600)."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if file.exists():
                file.chmod(0o600)
    command.upgrade(alembic_config(url), "head")


def session_factory(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)
