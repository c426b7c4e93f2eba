"""Settings of what the node shows and tells: the web server, monitoring and webhooks.

Sections ``[web]`` (dashboard, uploads, sessions and login throttling; see
docs/operations.md), ``[monitoring]`` (the overview's and ``/health``'s
figures) and ``[notifications]`` (its ``[[notifications.webhooks]]``).
Sources: OWASP Session Management and Authentication Cheat Sheets, OWASP File
Upload Cheat Sheet, PKWARE APPNOTE.TXT (zip).
"""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from dicom_node.retry import RetryPolicy
from dicom_node.settings.base import _Section


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
