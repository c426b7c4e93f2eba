"""Settings of DICOM networking: the Storage SCP, its TLS, and the export destinations.

Sections ``[dicom]`` (with ``[dicom.tls]``) and ``[export]`` (with its
``[[export.destinations]]``, each with its own ``tls``). Sources: DICOM PS3.7,
PS3.8 (associations), PS3.15 Annex B.9 and B.10 with BCP 195 (RFC 9325) for
TLS.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from dicom_node.results.profiles import DEFAULT_PROFILE_NAME
from dicom_node.retry import RetryPolicy
from dicom_node.settings.base import _check_ae_title, _Section

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
