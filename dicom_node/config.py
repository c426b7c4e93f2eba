"""Typed settings, validated once at start-up and passed down.

Sources, from lowest to highest precedence: the embedded ``defaults.toml``
shipped in the package, a TOML configuration file, and ``DICOM_NODE_*``
environment variables (nested keys joined with ``__``). Units are part of
every name (``stable_after_s``, ``max_pdu_bytes``).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from dicom_node.errors import ConfigurationError
from dicom_node.results.profiles import DEFAULT_PROFILE_NAME, ResultProfile, default_profiles
from dicom_node.retry import RetryPolicy
from dicom_node.series.pixel_limits import PixelLimits
from dicom_node.series.quality import QualitySettings
from dicom_node.series.selection import SelectionRule, SeriesPreference

_AE_TITLE_MAX = 16


def _check_ae_title(value: str) -> str:
    """Validate an AE title (PS3.5 6.2: at most 16 characters, no backslash or control chars)."""
    stripped = value.strip()
    if not stripped or len(stripped) > _AE_TITLE_MAX or "\\" in stripped:
        raise ValueError(f"{value!r} is not a valid AE title (1-16 characters, no backslash)")
    if any(ord(ch) < 32 for ch in stripped):
        raise ValueError(f"AE title {value!r} contains control characters")
    return stripped


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


#: Cipher suites of the BCP 195 TLS profiles for TLS 1.2 (PS3.15 B.9, B.10; RFC 9325 4.2),
#: in OpenSSL names. TLS 1.3 suites are OpenSSL's defaults (all AEAD).
BCP195_TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384"
)


class TlsSettings(_Section):
    """DICOM TLS of the Storage SCP (``[dicom.tls]``) or of one destination (``tls``).

    Paths are PEM files. The private key should be readable by the node's user
    only; its password, if any, belongs in ``DICOM_NODE_..._PRIVATE_KEY_PASSWORD``,
    never in a file kept in git.

    Parameters
    ----------
    enabled : bool
        Use TLS. Off by default (plain TCP, as most modalities still send).
    certificate, private_key : pathlib.Path or None
        This node's certificate (chain) and key. Required for the SCP; for a
        destination only when the PACS asks for a client certificate.
    private_key_password : SecretStr
        Password of an encrypted private key; empty when not encrypted.
    ca_certificates : pathlib.Path or None
        CA certificates trusted for the peer's certificate. SCP: the CAs of
        accepted client certificates. Destination: the CAs of the PACS
        certificate (the system store when None).
    require_client_certificate : bool
        SCP only: mutual authentication; a client without a certificate
        signed by ``ca_certificates`` is refused during the handshake.
    minimum_version : {"TLSv1.2", "TLSv1.3"}
        Lowest protocol version accepted (BCP 195: 1.2).
    ciphers : str
        OpenSSL cipher list for TLS 1.2 (default: the four BCP 195 AEAD suites).
    server_hostname : str
        Destination only: the name the PACS certificate must carry; the
        destination's ``host`` when empty.
    check_hostname : bool
        Destination only: verify ``server_hostname`` against the certificate.
    handshake_timeout_s : float
        SCP only: a client that does not finish the handshake in this time is
        disconnected.

    References
    ----------
    DICOM PS3.15 Annex B.9 (BCP 195 TLS Secure Transport Connection Profile) and
    B.10 (Non-Downgrading BCP 195 profile); BCP 195 (RFC 9325).
    """

    enabled: bool = False
    certificate: Path | None = None
    private_key: Path | None = None
    private_key_password: SecretStr = SecretStr("")
    ca_certificates: Path | None = None
    require_client_certificate: bool = False
    minimum_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"
    ciphers: str = BCP195_TLS12_CIPHERS
    server_hostname: str = ""
    check_hostname: bool = True
    handshake_timeout_s: float = Field(10.0, gt=0)

    @field_validator("certificate", "private_key", "ca_certificates", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """An empty string (TOML has no null, environment variables are strings) means unset."""
        return None if isinstance(value, str) and not value.strip() else value


class DicomSettings(_Section):
    """The Storage SCP: AE title, address and who may connect (PS3.7, PS3.8)."""

    ae_title: str = "DICOM_NODE"
    host: str = "127.0.0.1"
    port: int = Field(11112, ge=0, le=65535)
    allowed_calling_ae_titles: list[str] = Field(default_factory=list)
    max_pdu_bytes: int = Field(262144, ge=0)
    network_timeout_s: float = Field(60.0, gt=0)
    # 0: the Storage SCP runs in the node's process (threads); N > 0: N receiver
    # processes share the port with SO_REUSEPORT (for senders in parallel).
    receiver_processes: int = Field(0, ge=0, le=64)
    # Access control and resource limits (docs/reliability.md).
    require_called_ae_title: bool = True
    allowed_networks: list[str] = Field(default_factory=list)
    max_associations: int = Field(10, ge=1, le=1000)
    # Open connections one source address may hold (unset: half of max_associations).
    max_associations_per_address: int | None = Field(None, ge=1, le=1000)
    max_accepted_pdu_bytes: int = Field(4 * 1024**2, ge=16384)
    max_dataset_bytes: int = Field(1024**3, ge=4096)
    min_free_disk_bytes: int = Field(1024**3, ge=0)
    min_free_disk_percent: float = Field(1.0, ge=0, le=100)
    tls: TlsSettings = Field(default_factory=TlsSettings)

    _ae = field_validator("ae_title")(_check_ae_title)

    @field_validator("allowed_calling_ae_titles")
    @classmethod
    def _check_allow_list(cls, values: list[str]) -> list[str]:
        return [_check_ae_title(v) for v in values]

    @field_validator("allowed_networks")
    @classmethod
    def _check_networks(cls, values: list[str]) -> list[str]:
        """Each entry is an IPv4 or IPv6 network in CIDR notation (or one address)."""
        return [str(ipaddress.ip_network(v.strip(), strict=False)) for v in values]

    @model_validator(mode="after")
    def _pdu_limits_agree(self) -> DicomSettings:
        """The enforced PDU cap is at least the maximum PDU length the node announces."""
        if self.max_pdu_bytes and self.max_pdu_bytes + 6 > self.max_accepted_pdu_bytes:
            raise ValueError(
                f"max_accepted_pdu_bytes ({self.max_accepted_pdu_bytes}) must exceed "
                f"max_pdu_bytes ({self.max_pdu_bytes}) by the 6-byte PDU header"
            )
        return self


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


class Destination(_Section):
    """A DICOM peer (normally the PACS) that receives the results by C-STORE."""

    name: str
    ae_title: str
    host: str
    port: int = Field(ge=1, le=65535)
    calling_ae_title: str | None = None
    max_attempts: int = Field(10, ge=1)
    backoff_initial_s: float = Field(5.0, ge=0)
    backoff_max_s: float = Field(600.0, ge=0)
    backoff_jitter: float = Field(0.5, ge=0, le=1)
    timeout_s: float = Field(30.0, gt=0)
    profile: str = DEFAULT_PROFILE_NAME
    tls: TlsSettings = Field(default_factory=TlsSettings)

    _ae = field_validator("ae_title")(_check_ae_title)

    def retry_policy(self) -> RetryPolicy:
        """The delivery retry policy: ``backoff_initial_s`` doubling up to ``backoff_max_s``."""
        return RetryPolicy(
            base_s=self.backoff_initial_s,
            cap_s=self.backoff_max_s,
            jitter=self.backoff_jitter,
            max_attempts=self.max_attempts,
        )


class ExportSettings(_Section):
    """Result export: the destinations and how often pending deliveries are tried.

    ``echo_interval_s`` is the least time between two C-ECHOs to a destination
    with DEAD deliveries; when it answers, they are requeued
    (:class:`~dicom_node.export.exporter.DeadDeliveryResumer`, PS3.7 9.1.5).
    """

    sweep_interval_s: float = Field(0.5, gt=0)
    echo_interval_s: float = Field(60.0, gt=0)
    destinations: list[Destination] = Field(default_factory=list)

    @field_validator("destinations")
    @classmethod
    def _unique_names(cls, values: list[Destination]) -> list[Destination]:
        names = [d.name for d in values]
        if len(names) != len(set(names)):
            raise ValueError(f"destination names must be unique, got {names}")
        return values


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


class WebSettings(_Section):
    """The dashboard, upload page, ``/metrics`` and ``/health`` (see docs/operations.md).

    ``session_secret`` signs the session cookies and CSRF tokens. Leave it empty
    in files kept in git: the node then generates one at first start into
    ``<base_dir>/web-session-secret`` (mode 0600), or set
    ``DICOM_NODE_WEB__SESSION_SECRET``.
    """

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    session_secret: SecretStr = SecretStr("")
    session_max_age_s: int = Field(43200, gt=0)
    # Server-side sessions end after this much inactivity (session_max_age_s is the
    # absolute lifetime); OWASP Session Management Cheat Sheet.
    session_idle_s: int = Field(1800, gt=0)
    # Login throttling (OWASP Authentication Cheat Sheet): this many failures within
    # login_window_s for one user name, or per_address for one client address, lock
    # that name or address out for login_lockout_s (lifted by `dicom-node users unlock`).
    login_max_failures: int = Field(5, ge=1)
    login_max_failures_per_address: int = Field(20, ge=1)
    login_window_s: int = Field(900, gt=0)
    login_lockout_s: int = Field(900, gt=0)
    https_only_cookies: bool = False
    page_size: int = Field(50, ge=1, le=1000)
    max_upload_bytes: int = Field(2 * 1024**3, gt=0)
    # Zip members are streamed to disk; these caps count the bytes actually produced
    # (docs/operations.md "Uploads"; PKWARE APPNOTE.TXT, OWASP File Upload Cheat Sheet).
    upload_max_member_bytes: int = Field(1024**3, gt=0)
    upload_max_total_bytes: int = Field(8 * 1024**3, gt=0)
    upload_max_compression_ratio: float = Field(200.0, gt=1)
    upload_max_members: int = Field(10000, ge=1)
    upload_max_concurrent: int = Field(2, ge=1, le=64)
    viewers_may_upload: bool = True
    metrics_require_login: bool = False
    public_url: str = ""


class MonitoringSettings(_Section):
    """Figures of the overview, ``dicom-node stats`` and ``/health``."""

    delivery_target_s: float = Field(600.0, gt=0)
    stats_window_s: float = Field(86400.0, gt=0)
    min_free_disk_bytes: int = Field(1024**3, ge=0)
    echo_interval_s: float = Field(60.0, gt=0)
    echo_timeout_s: float = Field(5.0, gt=0)


class Webhook(_Section):
    """An HTTP(S) endpoint that receives a JSON message for each positive finding."""

    name: str
    url: str
    include_patient_identifiers: bool = False
    max_attempts: int = Field(5, ge=1)
    backoff_initial_s: float = Field(1.0, ge=0)
    backoff_max_s: float = Field(30.0, ge=0)
    backoff_jitter: float = Field(0.5, ge=0, le=1)
    timeout_s: float = Field(10.0, gt=0)

    def retry_policy(self) -> RetryPolicy:
        """The message retry policy: ``backoff_initial_s`` doubling up to ``backoff_max_s``."""
        return RetryPolicy(
            base_s=self.backoff_initial_s,
            cap_s=self.backoff_max_s,
            jitter=self.backoff_jitter,
            max_attempts=self.max_attempts,
        )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"webhook url must start with http:// or https://, got {value!r}")
        return value


class NotificationSettings(_Section):
    """Webhooks called on positive findings, and how often pending messages are sent."""

    sweep_interval_s: float = Field(5.0, gt=0)
    webhooks: list[Webhook] = Field(default_factory=list)

    @field_validator("webhooks")
    @classmethod
    def _unique_names(cls, values: list[Webhook]) -> list[Webhook]:
        names = [w.name for w in values]
        if len(names) != len(set(names)):
            raise ValueError(f"webhook names must be unique, got {names}")
        return values


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


class Settings(BaseSettings):
    """All settings of a node.

    Build with :func:`load_settings`, not directly, so that the embedded
    defaults and the configuration file are applied.
    """

    model_config = SettingsConfigDict(
        env_prefix="DICOM_NODE_", env_nested_delimiter="__", extra="forbid"
    )

    log_level: str = "INFO"
    log_library_warnings: bool = False
    dicom: DicomSettings = Field(default_factory=DicomSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    series: SeriesSettings = Field(default_factory=SeriesSettings)
    workers: WorkerSettings = Field(default_factory=WorkerSettings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    export: ExportSettings = Field(default_factory=ExportSettings)
    results: ResultSettings = Field(default_factory=ResultSettings)
    selection: SelectionSettings = Field(default_factory=SelectionSettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)
    web: WebSettings = Field(default_factory=WebSettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    pixels: PixelLimits = Field(default_factory=PixelLimits)
    audit: AuditSettings = Field(default_factory=AuditSettings)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ):
        """Environment variables take precedence over the (file-derived) init values."""
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _destination_profiles_exist(self) -> Settings:
        """Every destination names a configured result profile."""
        for destination in self.export.destinations:
            if destination.profile not in self.results.profiles:
                known = ", ".join(sorted(self.results.profiles))
                raise ValueError(
                    f"destination {destination.name!r} names result profile "
                    f"{destination.profile!r}, which is not configured (known: {known})"
                )
        return self


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def embedded_defaults() -> dict[str, Any]:
    """Return the embedded defaults (``dicom_node/defaults.toml``) as a dict."""
    text = resources.files("dicom_node").joinpath("defaults.toml").read_text("utf-8")
    return tomllib.loads(text)


def load_settings(
    config_path: Path | None = None, overrides: dict[str, Any] | None = None
) -> Settings:
    """Build validated settings from defaults, a TOML file, overrides and the environment.

    Parameters
    ----------
    config_path : pathlib.Path or None
        TOML file merged over the embedded defaults. When None, the path in
        ``DICOM_NODE_CONFIG`` is used if set.
    overrides : dict or None
        Nested values merged over the file (used by ``demo`` and the tests).
        Environment variables still take precedence.

    Returns
    -------
    Settings

    Raises
    ------
    ConfigurationError
        If the file cannot be read or parsed, or a value is invalid; the
        message names the file and the offending key.
    """
    data = embedded_defaults()
    if config_path is None and os.environ.get("DICOM_NODE_CONFIG"):
        config_path = Path(os.environ["DICOM_NODE_CONFIG"])
    if config_path is not None:
        try:
            with open(config_path, "rb") as handle:
                data = _deep_merge(data, tomllib.load(handle))
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise ConfigurationError(f"cannot read configuration {config_path}: {err}") from err
        # Selection rules in a user file replace the embedded list rather than merging.
    if overrides:
        data = _deep_merge(data, overrides)
    try:
        return Settings(**data)
    except ValidationError as err:
        where = f" in {config_path}" if config_path else ""
        raise ConfigurationError(f"invalid settings{where}: {err}") from err
