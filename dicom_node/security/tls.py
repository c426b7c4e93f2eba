"""DICOM TLS contexts for the Storage SCP and for each destination (BCP 195 profiles).

:func:`server_context` and :func:`client_context` turn a
:class:`~dicom_node.config.TlsSettings` into an :class:`ssl.SSLContext`:
TLS 1.2 or later, the BCP 195 AEAD cipher suites for TLS 1.2, no compression,
no renegotiation, certificates verified against the configured CAs. The SCP
asks for a client certificate when mutual authentication is on; the SCU
verifies the PACS certificate and, by default, its host name. Contexts are
built once at start-up, so a missing or unreadable file stops the node with a
message instead of failing the first association.

References
----------
DICOM PS3.15 Annex B.9 (BCP 195 TLS Secure Transport Connection Profile) and
B.10 (Non-Downgrading BCP 195 TLS Secure Transport Connection Profile);
BCP 195 / RFC 9325 (Recommendations for Secure Use of TLS); PS3.8 (DICOM
upper layer over TLS: the same PDUs inside the TLS connection).
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import cast

from dicom_node.config import TlsSettings
from dicom_node.errors import ConfigurationError

logger = logging.getLogger(__name__)

_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
#: RFC 4514 short names of the attributes Python's ``getpeercert`` spells out.
#: A certificate subject as ssl.SSLSocket.getpeercert() gives it: RDNs of (name, value) pairs.
_Subject = tuple[tuple[tuple[str, str], ...], ...]

_SHORT_NAMES = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
}


def _readable(path: Path | None, what: str) -> str:
    if path is None:
        raise ConfigurationError(f"TLS is enabled but no {what} is configured")
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise ConfigurationError(f"TLS {what} {resolved} does not exist or is not a file")
    return str(resolved)


def _harden(context: ssl.SSLContext, tls: TlsSettings) -> None:
    context.minimum_version = _VERSIONS[tls.minimum_version]
    context.options |= ssl.OP_NO_COMPRESSION
    context.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    try:
        context.set_ciphers(tls.ciphers)
    except ssl.SSLError as err:
        raise ConfigurationError(f"TLS ciphers {tls.ciphers!r} are not usable: {err}") from err


def _load_identity(context: ssl.SSLContext, tls: TlsSettings) -> None:
    certificate = _readable(tls.certificate, "certificate")
    private_key = _readable(tls.private_key, "private_key")
    password = tls.private_key_password.get_secret_value() or None
    try:
        context.load_cert_chain(certificate, private_key, password=password)
    except (ssl.SSLError, OSError) as err:
        raise ConfigurationError(
            f"TLS certificate {certificate} and key {private_key} cannot be loaded: {err}"
        ) from err


def server_context(tls: TlsSettings) -> ssl.SSLContext:
    """Build the Storage SCP's TLS context.

    Parameters
    ----------
    tls : TlsSettings
        ``certificate`` and ``private_key`` are required; ``ca_certificates``
        is required when ``require_client_certificate`` is set.

    Returns
    -------
    ssl.SSLContext
        A server-side context: TLS >= ``minimum_version``, BCP 195 suites, client
        certificates required (``CERT_REQUIRED``) with mutual authentication,
        otherwise verified when offered and a CA is configured.

    Raises
    ------
    ConfigurationError
        If a file is missing or unreadable, the key does not match the
        certificate, or the cipher list is unusable.

    References
    ----------
    DICOM PS3.15 B.9, B.10; RFC 9325 sections 3 and 4.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(context, tls)
    _load_identity(context, tls)
    if tls.require_client_certificate or tls.ca_certificates is not None:
        ca_file = _readable(tls.ca_certificates, "ca_certificates")
        try:
            context.load_verify_locations(cafile=ca_file)
        except (ssl.SSLError, OSError) as err:
            raise ConfigurationError(f"TLS CA file {ca_file} cannot be loaded: {err}") from err
        context.verify_mode = (
            ssl.CERT_REQUIRED if tls.require_client_certificate else ssl.CERT_OPTIONAL
        )
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def client_context(tls: TlsSettings) -> ssl.SSLContext:
    """Build the TLS context the Storage SCU uses towards one destination.

    Parameters
    ----------
    tls : TlsSettings
        ``ca_certificates`` (the system store when None) verifies the PACS;
        ``certificate`` and ``private_key`` are presented when both are set.

    Returns
    -------
    ssl.SSLContext
        A client-side context: TLS >= ``minimum_version``, BCP 195 suites, the
        peer's certificate required, its host name checked unless
        ``check_hostname`` is false.

    Raises
    ------
    ConfigurationError
        If a configured file is missing or unreadable, or only one of
        certificate and key is set.

    References
    ----------
    DICOM PS3.15 B.9, B.10; RFC 9325 sections 3, 4 and 6 (server identity).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _harden(context, tls)
    context.check_hostname = tls.check_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    if tls.ca_certificates is not None:
        ca_file = _readable(tls.ca_certificates, "ca_certificates")
        try:
            context.load_verify_locations(cafile=ca_file)
        except (ssl.SSLError, OSError) as err:
            raise ConfigurationError(f"TLS CA file {ca_file} cannot be loaded: {err}") from err
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if (tls.certificate is None) != (tls.private_key is None):
        raise ConfigurationError("TLS client identity needs both certificate and private_key")
    if tls.certificate is not None:
        _load_identity(context, tls)
    return context


def peer_certificate_subject(sock: object) -> str:
    """Return the peer certificate's subject as ``O=...,CN=...`` (empty if none or not TLS).

    Parameters
    ----------
    sock : object
        A socket; only an :class:`ssl.SSLSocket` has a peer certificate.

    Returns
    -------
    str
        The subject's relative distinguished names, at most 256 characters.
    """
    if not isinstance(sock, ssl.SSLSocket):
        return ""
    try:
        certificate = sock.getpeercert()
    except (ValueError, OSError):
        return ""
    if not certificate:
        return ""
    parts = [
        f"{_SHORT_NAMES.get(key, key)}={value}"
        for rdn in cast(_Subject, certificate.get("subject", ()))
        for key, value in rdn
    ]
    return ",".join(parts)[:256]


def tls_version(sock: object) -> str:
    """Return the negotiated TLS version (``"TLSv1.3"``), or ``""`` for a plain socket."""
    if not isinstance(sock, ssl.SSLSocket):
        return ""
    try:
        return sock.version() or ""
    except (ValueError, OSError):
        return ""
