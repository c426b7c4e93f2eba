"""Storage and Verification SCU: send result objects to a DICOM peer.

References
----------
DICOM PS3.4 Annex A (Verification) and Annex B (Storage); PS3.7 9.1.1 and 9.1.5.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # generated at import
from pynetdicom.status import STATUS_SUCCESS, STATUS_WARNING, code_to_category

from dicom_node.errors import DeliveryError, DeliveryRefusedError
from dicom_node.retry import RetryPolicy

logger = logging.getLogger(__name__)

_TRANSFER_SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]
# Failure statuses after which a retry cannot help (PS3.4 B.2.3, PS3.7 C.4.2).
_PERMANENT_STATUS_PREFIXES = (0xA9, 0x01)


def stored_by_peer(status: int) -> bool:
    """Whether a C-STORE response status means the peer stored the instance.

    Parameters
    ----------
    status : int
        The response's Status (0000,0900).

    Returns
    -------
    bool
        True for Success and for the Warning statuses (the instance is stored,
        possibly coerced or with elements discarded: 0xB000, 0xB006, 0xB007 and
        the general warnings 0x0001, 0x0107, 0x0116), as pynetdicom's
        ``code_to_category`` classifies them.

    References
    ----------
    DICOM PS3.4 B.2.3 (C-STORE statuses); PS3.7 Annex C (status classes).
    """
    return code_to_category(status) in (STATUS_SUCCESS, STATUS_WARNING)


@dataclass(frozen=True)
class Peer:
    """Address of a DICOM peer.

    Parameters
    ----------
    host : str
    port : int
    ae_title : str
        Called AE title.
    calling_ae_title : str
        Our AE title on the association.
    timeout_s : float
        ACSE, DIMSE and network timeout in seconds.
    tls_context : ssl.SSLContext or None
        Client-side TLS context (:func:`dicom_node.security.tls.client_context`);
        None for plain TCP.
    server_hostname : str
        Name the peer's certificate must carry (``host`` when empty).

    References
    ----------
    DICOM PS3.15 Annex B.9, B.10 (TLS profiles); BCP 195.
    """

    host: str
    port: int
    ae_title: str
    calling_ae_title: str = "DICOM_NODE"
    timeout_s: float = 30.0
    tls_context: ssl.SSLContext | None = None
    server_hostname: str = ""


class _PynetdicomErrors(logging.Handler):
    """Collects pynetdicom's error lines while one association is tried.

    pynetdicom catches the socket's ``OSError`` (``[Errno 111] Connection
    refused``, ``timed out``, a TLS failure) and the A-ASSOCIATE-RJ reasons and
    only logs them; the returned association says no more than "aborted" or
    "rejected". The lines are kept per thread, so that only those of the
    association being tried (its own and its DUL thread) are quoted.
    """

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[tuple[int | None, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append((record.thread, record.getMessage()))
        except Exception:  # noqa: BLE001 - never break the association over a log line
            pass

    def text_for(self, *threads: object) -> str:
        idents = {getattr(t, "ident", None) for t in threads} | {threading.get_ident()}
        idents.discard(None)
        seen: list[str] = []
        for thread, line in self.lines:
            line = line.removeprefix("TCP Initialisation Error: ")
            if thread in idents and line not in seen and line not in _UNINFORMATIVE:
                seen.append(line)
        return "; ".join(seen)


# pynetdicom lines that add nothing to the ones next to them.
_UNINFORMATIVE = frozenset(
    {
        "Association request failed: unable to connect to remote",
        "Association Rejected",
        "Aborting Association",
    }
)


def _probe(peer: Peer) -> str:
    """The error of a plain TCP connection to the peer, or "" when it connects."""
    try:
        with socket.create_connection((peer.host, peer.port), timeout=peer.timeout_s):
            return ""
    except OSError as err:
        return str(err) or err.__class__.__name__


#: Reconnects within one export attempt (a peer that refuses a connection for a moment):
#: 3 tries, about 0.2 s and 0.4 s apart. The delivery's own retries are the destination's.
ASSOCIATE_RETRY = RetryPolicy(base_s=0.2, cap_s=2.0, jitter=0.5, max_attempts=3)


def _associate(ae: AE, peer: Peer, policy: RetryPolicy = ASSOCIATE_RETRY):
    """Associate, retrying a transient failure per ``policy``; raise the last error."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return _associate_once(ae, peer)
        except DeliveryError:  # transient; a DeliveryRefusedError (permanent) passes through
            if policy.exhausted(attempt):
                raise
            time.sleep(policy.delay(attempt))


def _associate_once(ae: AE, peer: Peer):
    tls_args = (
        (peer.tls_context, peer.server_hostname or peer.host)
        if peer.tls_context is not None
        else None
    )
    errors = _PynetdicomErrors()
    pynetdicom_logger = logging.getLogger("pynetdicom")
    pynetdicom_logger.addHandler(errors)
    try:
        assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, tls_args=tls_args)
    finally:
        pynetdicom_logger.removeHandler(errors)
    if not assoc.accepted_contexts and assoc.rejected_contexts:
        # A requested context always has its abstract syntax.
        refused = ", ".join(
            sorted({str(getattr(cx.abstract_syntax, "name", "")) for cx in assoc.rejected_contexts})
        )
        if assoc.is_established:
            assoc.abort()
        raise DeliveryRefusedError(
            f"{peer.ae_title}@{peer.host}:{peer.port} does not accept SOP class {refused}"
        )
    if not assoc.is_established:
        what = "rejected" if assoc.is_rejected else "failed"
        detail = errors.text_for(assoc, getattr(assoc, "dul", None))
        if not detail and not assoc.is_rejected:
            # pynetdicom's log level may be above ERROR: ask the socket directly.
            detail = _probe(peer) or "the peer closed the connection"
        raise DeliveryError(
            f"association to {peer.ae_title}@{peer.host}:{peer.port} {what}"
            + (f": {detail}" if detail else "")
        )
    return assoc


def _new_ae(peer: Peer) -> AE:
    ae = AE(ae_title=peer.calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = peer.timeout_s
    ae.connection_timeout = peer.timeout_s
    return ae


def echo(peer: Peer) -> int:
    """Send C-ECHO; return the DIMSE status (0x0000 is success).

    Raises
    ------
    DeliveryError
        If no association can be established.
    """
    ae = _new_ae(peer)
    ae.add_requested_context(Verification)
    assoc = _associate(ae, peer)
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if not status:
        raise DeliveryError("C-ECHO got no response")
    return int(status.Status)


def send_files(peer: Peer, paths: Sequence[Path]) -> list[int]:
    """Send DICOM files over one association with C-STORE.

    Parameters
    ----------
    peer : Peer
        The destination.
    paths : sequence of pathlib.Path
        Part 10 files.

    Returns
    -------
    list of int
        The C-STORE status of each file, in order (success or warning).

    Raises
    ------
    DeliveryRefusedError
        If the peer accepts no presentation context for a file's SOP class (or,
        for a compressed file, for its transfer syntax), or answers with a
        failure that retrying cannot fix (0xA9xx, 0x01xx).
    DeliveryError
        If the association fails or the peer answers another failure status.

    Notes
    -----
    Files are sent in the transfer syntax they are stored in (no
    transcoding): an uncompressed file is proposed in Explicit and Implicit
    VR Little Endian, a compressed one (for example a JPEG 2000 Lossless SEG)
    in its own transfer syntax, in a presentation context of its own.
    """
    datasets = [pydicom.dcmread(p) for p in paths]
    ae = _new_ae(peer)
    wanted: set[tuple[str, str]] = set()
    for ds in datasets:
        syntax = str(ds.file_meta.TransferSyntaxUID)
        wanted.add((str(ds.SOPClassUID), "" if syntax in _TRANSFER_SYNTAXES else syntax))
    for sop_class, syntax in sorted(wanted):
        ae.add_requested_context(sop_class, [syntax] if syntax else _TRANSFER_SYNTAXES)
    assoc = _associate(ae, peer)
    statuses: list[int] = []
    try:
        accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        accepted_pairs = {
            (str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in assoc.accepted_contexts
        }
        for path, ds in zip(paths, datasets, strict=True):
            if str(ds.SOPClassUID) not in accepted:
                raise DeliveryRefusedError(
                    f"{peer.ae_title} does not accept SOP class {ds.SOPClassUID.name} ({path.name})"
                )
            syntax = str(ds.file_meta.TransferSyntaxUID)
            if syntax not in _TRANSFER_SYNTAXES and (str(ds.SOPClassUID), syntax) not in (
                accepted_pairs
            ):
                raise DeliveryRefusedError(
                    f"{peer.ae_title} does not accept {ds.SOPClassUID.name} in "
                    f"{pydicom.uid.UID(syntax).name} ({path.name}); "
                    'set compression = "none" in its result profile'
                )
            response = assoc.send_c_store(ds)
            if not response or "Status" not in response:
                raise DeliveryError(f"no C-STORE response from {peer.ae_title} for {path.name}")
            status = int(response.Status)
            if not stored_by_peer(status):
                message = f"{peer.ae_title} answered C-STORE of {path.name} with 0x{status:04X}"
                if (status >> 8) in _PERMANENT_STATUS_PREFIXES:
                    raise DeliveryRefusedError(message)
                raise DeliveryError(message)
            statuses.append(status)
    finally:
        if assoc.is_established:
            assoc.release()
    return statuses
