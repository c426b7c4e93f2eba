"""Typed settings, validated once at start-up and passed down.

Sources, from lowest to highest precedence: the embedded ``defaults.toml``
shipped in the package, a TOML configuration file, and ``DICOM_NODE_*``
environment variables (nested keys joined with ``__``). Units are part of
every name (``stable_after_s``, ``max_pdu_bytes``).
"""

from __future__ import annotations

import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from dicom_node.errors import ConfigurationError
from dicom_node.series.selection import SelectionRule

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


class DicomSettings(_Section):
    """The Storage SCP: AE title, address and who may connect (PS3.7, PS3.8)."""

    ae_title: str = "DICOM_NODE"
    host: str = "127.0.0.1"
    port: int = Field(11112, ge=0, le=65535)
    allowed_calling_ae_titles: list[str] = Field(default_factory=list)
    max_pdu_bytes: int = Field(262144, ge=0)
    network_timeout_s: float = Field(60.0, gt=0)

    _ae = field_validator("ae_title")(_check_ae_title)

    @field_validator("allowed_calling_ae_titles")
    @classmethod
    def _check_allow_list(cls, values: list[str]) -> list[str]:
        return [_check_ae_title(v) for v in values]


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
    """Series completeness: a series is COMPLETE after ``stable_after_s`` without new instances."""

    stable_after_s: float = Field(10.0, ge=0)
    sweep_interval_s: float = Field(2.0, gt=0)


class WorkerSettings(_Section):
    """Worker processes and job retries."""

    processes: int = Field(1, ge=0)
    max_attempts: int = Field(3, ge=1)
    retry_backoff_s: float = Field(30.0, ge=0)
    poll_interval_s: float = Field(1.0, gt=0)
    heartbeat_interval_s: float = Field(5.0, gt=0)
    heartbeat_timeout_s: float = Field(60.0, gt=0)


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
    timeout_s: float = Field(30.0, gt=0)

    _ae = field_validator("ae_title")(_check_ae_title)


class ExportSettings(_Section):
    """Result export: the destinations and how often pending deliveries are tried."""

    sweep_interval_s: float = Field(2.0, gt=0)
    destinations: list[Destination] = Field(default_factory=list)

    @field_validator("destinations")
    @classmethod
    def _unique_names(cls, values: list[Destination]) -> list[Destination]:
        names = [d.name for d in values]
        if len(names) != len(set(names)):
            raise ValueError(f"destination names must be unique, got {names}")
        return values


class ResultSettings(_Section):
    """Result objects: validation before export."""

    validate_with_dciodvfy: bool = True


class SelectionSettings(_Section):
    """Series selection rules, tried in order (see :mod:`dicom_node.series.selection`)."""

    rules: list[SelectionRule] = Field(default_factory=list)


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
    export: ExportSettings = Field(default_factory=ExportSettings)
    results: ResultSettings = Field(default_factory=ResultSettings)
    selection: SelectionSettings = Field(default_factory=SelectionSettings)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ):
        """Environment variables take precedence over the (file-derived) init values."""
        return (env_settings, init_settings)


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
