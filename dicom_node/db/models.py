"""Tables of the job database (SQLAlchemy 2.0 declarative).

study -> series -> instance are what was received; job is one pipeline run on
one series; result_object is a DICOM object the job produced; delivery is one
result object x one destination. Every state change is also appended to
``state_change`` with a UTC timestamp, so stage durations (last instance ->
complete -> queued -> started -> results -> delivered) can be derived.

All timestamps are timezone-aware UTC in Python; SQLite stores them as naive
UTC, converted by :class:`UTCDateTime`.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    """Return the current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Stores aware datetimes as naive UTC and returns them aware (UTC)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        return None if value is None else value.replace(tzinfo=UTC)


class SeriesState(enum.StrEnum):
    """Series lifecycle (see docs/design: RECEIVING -> COMPLETE -> DISPATCHED | NOT_ELIGIBLE)."""

    RECEIVING = "RECEIVING"
    COMPLETE = "COMPLETE"
    DISPATCHED = "DISPATCHED"
    NOT_ELIGIBLE = "NOT_ELIGIBLE"


class JobState(enum.StrEnum):
    """Job lifecycle: QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELED."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


class DeliveryState(enum.StrEnum):
    """Delivery lifecycle: PENDING -> SENT | RETRYING -> DEAD."""

    PENDING = "PENDING"
    RETRYING = "RETRYING"
    SENT = "SENT"
    DEAD = "DEAD"


class Base(DeclarativeBase):
    """Declarative base of all dicom-node tables."""


def _enum(cls: type[enum.Enum]) -> Enum:
    return Enum(cls, native_enum=False, length=16, validate_strings=True)


class Study(Base):
    """A study seen by the node.

    No patient name, ID or birth date is stored. The Accession Number and Study
    Date (as the first instance carried them) identify the order for the
    dashboard and ``jobs list``, which need a login or local access; they are
    never written to the logs.
    """

    __tablename__ = "study"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    accession_number: Mapped[str] = mapped_column(String(16), default="")
    study_date: Mapped[str] = mapped_column(String(8), default="")  # DA, YYYYMMDD
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    series: Mapped[list[Series]] = relationship(back_populates="study")


class Series(Base):
    """A received series and the attributes selection needs (read from its first instance)."""

    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id"))
    series_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    modality: Mapped[str] = mapped_column(String(16), default="")
    body_part_examined: Mapped[str] = mapped_column(String(64), default="")
    study_description: Mapped[str] = mapped_column(String(128), default="")
    series_description: Mapped[str] = mapped_column(String(128), default="")
    protocol_name: Mapped[str] = mapped_column(String(128), default="")
    contrast_bolus_agent: Mapped[str | None] = mapped_column(String(128), nullable=True)
    image_orientation_patient: Mapped[list | None] = mapped_column(JSON, nullable=True)
    slice_thickness_mm: Mapped[float | None] = mapped_column(nullable=True)
    frame_of_reference_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    convolution_kernel: Mapped[str] = mapped_column(String(128), default="")
    calling_ae_title: Mapped[str] = mapped_column(String(16), default="")
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[SeriesState] = mapped_column(_enum(SeriesState), default=SeriesState.RECEIVING)
    state_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    first_instance_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_instance_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    completion_basis: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series")
    jobs: Mapped[list[Job]] = relationship(back_populates="series")

    __table_args__ = (Index("ix_series_state", "state"),)


class Instance(Base):
    """One stored SOP instance; ``path`` is relative to the spool directory."""

    __tablename__ = "instance"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    instance_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    image_type: Mapped[str] = mapped_column(String(128), default="")
    number_of_frames: Mapped[int] = mapped_column(Integer, default=1)
    path: Mapped[str] = mapped_column(String(512))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    calling_ae_title: Mapped[str] = mapped_column(String(16), default="")
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Completeness evidence, read from the header at receive (no pixel decode):
    # position along the series' slice normal (mm; NULL without geometry or when the
    # instance's orientation differs from the series'), ImagesInAcquisition, and the
    # association that carried the instance.
    slice_position_mm: Mapped[float | None] = mapped_column(nullable=True)
    images_in_acquisition: Mapped[int | None] = mapped_column(Integer, nullable=True)
    association_id: Mapped[int | None] = mapped_column(
        ForeignKey("association.id"), nullable=True, index=True
    )

    series: Mapped[Series] = relationship(back_populates="instances")


class AssociationOutcome(enum.StrEnum):
    """How an association ended: RELEASED (A-RELEASE), ABORTED, CLOSED or LOST (node restart)."""

    RELEASED = "RELEASED"
    ABORTED = "ABORTED"
    CLOSED = "CLOSED"
    LOST = "LOST"


class Association(Base):
    """One association accepted by the Storage SCP; open while ``closed_at`` is NULL.

    Series completeness reads these rows: a series whose carrying associations
    are all released can be proven complete without waiting for the quiet time.
    """

    __tablename__ = "association"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    calling_ae_title: Mapped[str] = mapped_column(String(16), default="")
    peer_address: Mapped[str] = mapped_column(String(64), default="")
    receiver: Mapped[str] = mapped_column(String(128), default="")
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    outcome: Mapped[AssociationOutcome | None] = mapped_column(
        _enum(AssociationOutcome), nullable=True
    )

    __table_args__ = (Index("ix_association_open", "closed_at", "calling_ae_title"),)


class Job(Base):
    """One pipeline run on one series; unique per (series, pipeline, instance-set digest)."""

    __tablename__ = "job"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    pipeline: Mapped[str] = mapped_column(String(64))
    # Algorithm/model version of the pipeline when the job was created: part of the job's
    # identity, so a new model analyses a series again and the same one does not.
    pipeline_version: Mapped[str] = mapped_column(String(64), default="")
    instance_set_digest: Mapped[str] = mapped_column(String(64))
    # Newest instance row of the set the digest covers: the job analyses exactly that set,
    # even if later instances of the series arrive before it runs (they make a new job).
    max_instance_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    state: Mapped[JobState] = mapped_column(_enum(JobState), default=JobState.QUEUED)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    not_before: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    worker_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Formatted traceback of the last failed attempt (truncated), for admins only.
    error_traceback: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Set by an operator's cancel of a RUNNING job; the worker stops at its next stage
    # boundary and ends the job CANCELED (dicom_node.jobs.queue.cancel).
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    result_summary: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    series: Mapped[Series] = relationship(back_populates="jobs")
    result_objects: Mapped[list[ResultObject]] = relationship(back_populates="job")

    __table_args__ = (
        UniqueConstraint(
            "series_id",
            "pipeline",
            "pipeline_version",
            "instance_set_digest",
            name="uq_job_identity",
        ),
        Index("ix_job_state_not_before", "state", "not_before"),
    )


class ResultObject(Base):
    """A DICOM object produced by a job (``kind`` SEG, SR or SC), stored in the outbox."""

    __tablename__ = "result_object"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("job.id"), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(512))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    job: Mapped[Job] = relationship(back_populates="result_objects")
    deliveries: Mapped[list[Delivery]] = relationship(back_populates="result_object")


class Delivery(Base):
    """One result object to one destination, with its attempts."""

    __tablename__ = "delivery"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    result_object_id: Mapped[int] = mapped_column(ForeignKey("result_object.id"), index=True)
    destination: Mapped[str] = mapped_column(String(64))
    state: Mapped[DeliveryState] = mapped_column(
        _enum(DeliveryState), default=DeliveryState.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    result_object: Mapped[ResultObject] = relationship(back_populates="deliveries")

    __table_args__ = (
        UniqueConstraint("result_object_id", "destination", name="uq_delivery"),
        Index("ix_delivery_state_next", "state", "next_attempt_at"),
    )


class StateChange(Base):
    """Append-only log of every state transition of a series, job or delivery."""

    __tablename__ = "state_change"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    entity: Mapped[str] = mapped_column(String(16))
    entity_id: Mapped[int] = mapped_column(Integer)
    from_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_state_change_entity", "entity", "entity_id"),)


class UserRole(enum.StrEnum):
    """Dashboard roles: an admin may requeue, cancel and see the configuration; a viewer reads."""

    ADMIN = "admin"
    VIEWER = "viewer"


class User(Base):
    """A dashboard user; ``password_hash`` is an Argon2id hash (PHC string format)."""

    __tablename__ = "web_user"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[UserRole] = mapped_column(_enum(UserRole))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class WebSession(Base):
    """A server-side dashboard session; the signed cookie carries only its random ``id``.

    Deleting the row ends the session at once, wherever the cookie was copied to:
    logout deletes it; a password change or the user's removal deletes all of the
    user's rows. Source: OWASP Session Management Cheat Sheet (server-side
    invalidation, idle and absolute timeouts).
    """

    __tablename__ = "web_session"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("web_user.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LoginFailure(Base):
    """One failed dashboard login, counted against a user name and a client address.

    ``kind`` is ``"user"`` (``key`` = the user name as typed, known or not) or
    ``"address"`` (``key`` = the client address). Kept in the database so that
    every process serving the dashboard counts the same failures. Source: OWASP
    Authentication Cheat Sheet ("Protect Against Automated Attacks", account lockout).
    """

    __tablename__ = "web_login_failure"
    __table_args__ = (Index("ix_web_login_failure_key", "kind", "key", "failed_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(255))
    failed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LoginLockout(Base):
    """A user name or client address refused at login until ``locked_until`` (UTC).

    Made when the failures of :class:`LoginFailure` reach the configured limit;
    lifted when it expires or by ``dicom-node users unlock``.
    """

    __tablename__ = "web_login_lockout"
    __table_args__ = (UniqueConstraint("kind", "key", name="uq_web_login_lockout_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(255))
    locked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    locked_until: Mapped[datetime] = mapped_column(UTCDateTime)
    failures: Mapped[int] = mapped_column(Integer, default=0)


class NotificationState(enum.StrEnum):
    """Webhook message lifecycle: PENDING -> SENT | FAILED (after its attempts).

    A PENDING message with ``attempts > 0`` is being retried: its next attempt
    is due at ``next_attempt_at``.
    """

    PENDING = "PENDING"
    SENT = "SENT"
    FAILED = "FAILED"


class Notification(Base):
    """One webhook message about one job's positive finding, with its attempts.

    Retried like a delivery: one attempt per notifications sweep when
    ``next_attempt_at`` is due, the next one pushed back by the webhook's
    :class:`~dicom_node.retry.RetryPolicy` (:mod:`dicom_node.notifications`).
    """

    __tablename__ = "notification"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("job.id"), index=True)
    webhook: Mapped[str] = mapped_column(String(64))
    state: Mapped[NotificationState] = mapped_column(
        _enum(NotificationState), default=NotificationState.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    response_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (
        UniqueConstraint("job_id", "webhook", name="uq_notification"),
        Index("ix_notification_state", "state"),
    )


class SchemaVersion(Base):
    """The schema version of this database: one row, moved on by :mod:`dicom_node.db.schema`."""

    __tablename__ = "schema_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    upgraded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Purge(Base):
    """Retention: the files of a series (spool) and of its jobs (outbox) were deleted.

    The series, instance, job, result object and delivery rows stay; this row
    says when their files went and how much space that freed.
    """

    __tablename__ = "purge"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), unique=True)
    purged_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    spool_files: Mapped[int] = mapped_column(Integer, default=0)
    outbox_files: Mapped[int] = mapped_column(Integer, default=0)
    bytes_freed: Mapped[int] = mapped_column(BigInteger, default=0)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class AuditEvent(Base):
    """The audit log: one row per association (incoming or outgoing) or refused connection.

    Who (AE titles, peer address, TLS client certificate subject), when
    (``started_at``, ``ended_at``), what (instances stored or sent, refused,
    bytes, series UIDs) and the outcome. No patient identifiers.
    """

    __tablename__ = "audit_event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    direction: Mapped[str] = mapped_column(String(8))  # "in" (SCP) or "out" (SCU)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    peer_address: Mapped[str] = mapped_column(String(64), default="")
    calling_ae_title: Mapped[str] = mapped_column(String(16), default="")
    called_ae_title: Mapped[str] = mapped_column(String(16), default="")
    destination: Mapped[str | None] = mapped_column(String(64), nullable=True)
    tls_version: Mapped[str] = mapped_column(String(16), default="")
    peer_certificate: Mapped[str] = mapped_column(String(256), default="")
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    instances: Mapped[int] = mapped_column(Integer, default=0)
    instances_refused: Mapped[int] = mapped_column(Integer, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    series_instance_uids: Mapped[list | None] = mapped_column(JSON, nullable=True)
    association_id: Mapped[int | None] = mapped_column(Integer, nullable=True)

    __table_args__ = (Index("ix_audit_event_ended", "ended_at"),)
