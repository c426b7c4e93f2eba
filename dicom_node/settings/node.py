"""Settings of the node's own work: storage, series completeness, workers, models, results.

Sections ``[storage]``, ``[series]``, ``[workers]``, ``[models]``,
``[results]`` (with the result profiles of :mod:`dicom_node.results.profiles`),
``[selection]`` (the rules of :mod:`dicom_node.series.selection`),
``[retention]`` and ``[audit]``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from dicom_node.results.profiles import ResultProfile, default_profiles
from dicom_node.retry import RetryPolicy
from dicom_node.series.selection import SelectionRule, SeriesPreference
from dicom_node.settings.base import _Section


class StorageSettings(_Section):
    """Where received instances, results and the job database live."""

    base_dir: Path = Path("var")
    spool_dir: Path = Path("spool")
    outbox_dir: Path = Path("outbox")
    database_url: str = ""

    def resolved(self, path: Path) -> Path:
        """Return ``path`` made absolute against ``base_dir`` when it is relative."""
        return path if path.is_absolute() else (self.base_dir / path).resolve()

    @property
    def spool_path(self) -> Path:
        """Absolute spool directory."""
        return self.resolved(self.spool_dir)

    @property
    def outbox_path(self) -> Path:
        """Absolute outbox directory (result objects before and after export)."""
        return self.resolved(self.outbox_dir)

    @property
    def url(self) -> str:
        """SQLAlchemy URL; SQLite in ``base_dir`` when ``database_url`` is empty."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.base_dir.resolve() / 'dicom-node.sqlite'}"


class SeriesSettings(_Section):
    """Series completeness: proven early, or COMPLETE after ``stable_after_s`` without instances.

    With ``early_completion``, a series is complete ``release_grace_s`` after
    its carrying associations were released when its instance count
    (ImagesInAcquisition, NumberOfFrames) or its slice geometry proves it
    (see :mod:`dicom_node.series.completeness`).
    """

    stable_after_s: float = Field(10.0, ge=0)
    sweep_interval_s: float = Field(2.0, gt=0)
    early_completion: bool = True
    # Prove also series carried by several associations (off: a router forwarding one
    # instance per association may pause mid-series; those wait for stable_after_s).
    early_completion_across_associations: bool = False
    release_grace_s: float = Field(2.0, ge=0)


class WorkerSettings(_Section):
    """Worker processes and job retries.

    A failed attempt is retried after ``retry_backoff_s * 2**(n-1)`` s (n: attempts
    made), capped at ``retry_backoff_max_s``, of which ``retry_jitter`` is random
    (:meth:`retry_policy`), up to ``max_attempts`` attempts in all.
    """

    processes: int = Field(1, ge=0)
    max_attempts: int = Field(3, ge=1)
    retry_backoff_s: float = Field(30.0, ge=0)
    retry_backoff_max_s: float = Field(600.0, ge=0)
    retry_jitter: float = Field(0.5, ge=0, le=1)
    poll_interval_s: float = Field(0.5, gt=0)
    heartbeat_interval_s: float = Field(5.0, gt=0)
    heartbeat_timeout_s: float = Field(60.0, gt=0)
    # Address-space limit of each worker process (RLIMIT_AS); 0 = no limit.
    max_memory_bytes: int = Field(8 * 1024**3, ge=0)

    def retry_policy(self) -> RetryPolicy:
        """The job retry policy (a job row's own ``max_attempts`` still decides when to stop)."""
        return RetryPolicy(
            base_s=self.retry_backoff_s,
            cap_s=self.retry_backoff_max_s,
            jitter=self.retry_jitter,
            max_attempts=self.max_attempts,
        )


class ModelSettings(_Section):
    """Where the learned pipelines find their model packages."""

    # Folder of the ICH model package (manifest.json + model.keras); empty = the
    # newest package shipped under dicom_node/models/ich/ of the source tree.
    ich_model_dir: Path | None = None


class ResultSettings(_Section):
    """Result objects: validation before export, and the per-destination profiles.

    ``profiles`` maps a profile name to a
    :class:`~dicom_node.results.profiles.ResultProfile`; a destination names
    its profile (``default`` unless set). ``max_key_slices`` bounds the key
    slices of the overlay series.
    """

    validation: Literal["dciodvfy", "if-available", "off"] = "if-available"
    max_key_slices: int = Field(3, ge=0, le=20)
    profiles: dict[str, ResultProfile] = Field(default_factory=default_profiles)

    @model_validator(mode="before")
    @classmethod
    def _legacy_validate_flag(cls, values: Any) -> Any:
        """Read the older ``validate_with_dciodvfy = true|false`` as ``dciodvfy``/``off``."""
        if isinstance(values, dict) and "validate_with_dciodvfy" in values:
            values = dict(values)
            flag = values.pop("validate_with_dciodvfy")
            values.setdefault("validation", "dciodvfy" if flag else "off")
        return values

    def dciodvfy_enabled(self) -> bool:
        """Whether each result object is checked with dciodvfy before it is queued.

        ``"dciodvfy"``: always (a missing dciodvfy fails the job, and
        :func:`dicom_node.results.validate.check_validation_setting` stops the
        node at start); ``"if-available"``:
        when dciodvfy is on PATH, otherwise highdicom's own checks at build
        time are the only ones; ``"off"``: never.
        """
        if self.validation == "off":
            return False
        if self.validation == "dciodvfy":
            return True
        return shutil.which("dciodvfy") is not None


class SelectionSettings(_Section):
    """Series selection rules, tried in order (see :mod:`dicom_node.series.selection`)."""

    rules: list[SelectionRule] = Field(default_factory=list)
    preference: SeriesPreference = Field(default_factory=SeriesPreference)


class RetentionSettings(_Section):
    """Purge of delivered spool and outbox files older than ``max_age_days`` (DB rows stay)."""

    enabled: bool = True
    max_age_days: float = Field(30.0, gt=0)
    interval_s: float = Field(3600.0, gt=0)


class AuditSettings(_Section):
    """The audit log of associations (``dicom_node.audit`` logger and ``audit_event`` table).

    One record per association, incoming or outgoing, and per connection
    refused before an association (source address, TLS): who (AE titles,
    address, client certificate subject), when, what (instances stored or
    sent, refused, bytes, series UIDs) and the outcome. No patient identifiers.
    """

    enabled: bool = True
    database: bool = True
