"""The web app's database: users, API tokens, studies (each one upload and its analysis job), reader
feedback and the DICOM instances ``strokescan listen`` received, as SQLAlchemy 2 models. The schema is made and
upgraded by Alembic (``migrations/``), never by ``create_all``, so that an operator's database follows every
release.

No column holds a patient identifier: a study has a neutral label and the result document, which never carries
identifiers (see :mod:`strokescan.inference.results`); a received instance is named by hashes of its UIDs.
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
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    # Flask-Login's user protocol
    is_active = True
    is_authenticated = True
    is_anonymous = False

    def get_id(self) -> str:
        return str(self.id)


class ApiToken(Base):
    """A bearer token for the REST API; only its sha256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(80))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    user: Mapped[User] = relationship()


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
    uploaded_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    n_slices: Mapped[int | None] = mapped_column(Integer, nullable=True)
    probability: Mapped[float | None] = mapped_column(Float, nullable=True)
    positive: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    operating_point: Mapped[str | None] = mapped_column(String(16), nullable=True)
    clot_ml: Mapped[float | None] = mapped_column(Float, nullable=True)
    subtypes_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    result_json: Mapped[str | None] = mapped_column(Text, nullable=True)  # ScanResult.to_dict()
    feedback: Mapped[list[Feedback]] = relationship(back_populates="study", order_by="Feedback.created_at")

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
    """An engine for ``url``; SQLite gets WAL and a busy timeout, so the job worker and requests can share it."""
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False} if url.startswith("sqlite") else {})
    if url.startswith("sqlite"):
        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()
    return engine


def upgrade_database(url: str) -> None:
    """Create or upgrade the schema to the newest migration."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), "head")


def session_factory(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)
