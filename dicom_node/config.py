"""Typed settings, validated once at start-up and passed down.

Sources, from lowest to highest precedence: the embedded ``defaults.toml``
shipped in the package, a TOML configuration file, and ``DICOM_NODE_*``
environment variables (nested keys joined with ``__``). Units are part of
every name (``stable_after_s``, ``max_pdu_bytes``).

The section models live in :mod:`dicom_node.settings` (one module per area)
and are importable from here too; this module holds :class:`Settings`, which
composes them, and the loading.
"""

from __future__ import annotations

import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from dicom_node.errors import ConfigurationError
from dicom_node.series.pixel_limits import PixelLimits
from dicom_node.series.quality import QualitySettings
from dicom_node.settings.base import _AE_TITLE_MAX as _AE_TITLE_MAX
from dicom_node.settings.base import _check_ae_title as _check_ae_title
from dicom_node.settings.base import _Section as _Section
from dicom_node.settings.network import (
    BCP195_TLS12_CIPHERS,
    Destination,
    DicomSettings,
    ExportSettings,
    TlsSettings,
)
from dicom_node.settings.node import (
    AuditSettings,
    ModelSettings,
    ResultSettings,
    RetentionSettings,
    SelectionSettings,
    SeriesSettings,
    StorageSettings,
    WorkerSettings,
)
from dicom_node.settings.web import (
    MonitoringSettings,
    NotificationSettings,
    Webhook,
    WebSettings,
)

__all__ = [
    "BCP195_TLS12_CIPHERS",
    "AuditSettings",
    "Destination",
    "DicomSettings",
    "ExportSettings",
    "ModelSettings",
    "MonitoringSettings",
    "NotificationSettings",
    "ResultSettings",
    "RetentionSettings",
    "SelectionSettings",
    "SeriesSettings",
    "Settings",
    "StorageSettings",
    "TlsSettings",
    "Webhook",
    "WebSettings",
    "WorkerSettings",
    "embedded_defaults",
    "load_settings",
]


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
