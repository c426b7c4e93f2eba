"""The Storage SCP: accepts C-ECHO and C-STORE, answers with DIMSE statuses.

The C-STORE handler never decodes pixels, never runs a model and never calls
the network: it parses the header, writes the received bytes durably to the
spool, records a DB row and answers. Every failure becomes a DIMSE status and
a log line; no exception escapes into pynetdicom's association thread.

Each accepted association gets a row in the association log (opened at
EVT_ACCEPTED, closed at EVT_RELEASED, EVT_ABORTED or EVT_CONN_CLOSE) and every
instance records which association carried it: series completeness uses
both. ``reuse_port`` lets several receiver processes listen on one port
(``SO_REUSEPORT``; the kernel spreads the connections over them).

References
----------
DICOM PS3.4 Annex B (Storage Service Class), B.2.3 statuses;
PS3.7 9.1.1 (C-STORE); PS3.8 (association negotiation).
"""

from __future__ import annotations

import logging
import os
import socket
import socketserver
import threading
from collections.abc import Callable
from typing import cast

from pydicom.dataset import Dataset
from pynetdicom import (
    AE,
    PYNETDICOM_IMPLEMENTATION_UID,
    PYNETDICOM_IMPLEMENTATION_VERSION,
    evt,
)
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # generated at import time
    CTImageStorage,
    EnhancedCTImageStorage,
    SecondaryCaptureImageStorage,
    Verification,
)
from pynetdicom.status import Status
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy.exc import SQLAlchemyError

from dicom_node.audit import AuditLog
from dicom_node.config import DicomSettings
from dicom_node.db.models import AssociationOutcome
from dicom_node.errors import InvalidInstanceError, InvalidUIDError, SpoolWriteError
from dicom_node.receive.access import AddressAllowList
from dicom_node.receive.associations import AssociationLog
from dicom_node.receive.audit import AssociationAuditor
from dicom_node.receive.framing import ReceiveLimits
from dicom_node.receive.header import file_meta_information, parse_header
from dicom_node.receive.ingest import InstanceIngest
from dicom_node.receive.pynetdicom_compat import (
    accept_overlong_uids_for_refusal,
    check_pynetdicom_version,
    log_standard_events,
)
from dicom_node.receive.resources import DiskWatermark
from dicom_node.receive.transport import ConnectionGuard, GuardedAssociationServer
from dicom_node.security.tls import server_context

logger = logging.getLogger(__name__)

#: Storage SOP classes the node accepts.
STORAGE_SOP_CLASSES = (CTImageStorage, EnhancedCTImageStorage, SecondaryCaptureImageStorage)

#: Transfer syntaxes accepted: uncompressed, JPEG Lossless, JPEG 2000 and RLE (PS3.5 Annex A).
TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still sent by old modalities)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless, First-Order Prediction (Process 14 SV1)
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless, Non-Hierarchical (Process 14)
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Image Compression (Lossless Only)
    "1.2.840.10008.1.2.4.91",  # JPEG 2000 Image Compression
    "1.2.840.10008.1.2.5",  # RLE Lossless
)

# C-STORE statuses (PS3.4 B.2.3); pynetdicom's Status names only the generic ones.
STATUS_SUCCESS = int(Status.SUCCESS)
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC210
#: Error Comment (0000,0902) is LO: at most 64 characters (PS3.7 E.1, PS3.5 6.2).
ERROR_COMMENT_MAX_CHARS = 64


def failure_status(code: int, comment: str) -> Dataset:
    """A C-STORE failure status with its reason in Error Comment, so the sender learns why.

    Parameters
    ----------
    code : int
        Status (PS3.4 B.2.3), for example 0xC210.
    comment : str
        Reason; cut to :data:`ERROR_COMMENT_MAX_CHARS` characters, ASCII.

    Returns
    -------
    pydicom.Dataset
        Status and Error Comment, as pynetdicom accepts from a C-STORE handler.

    References
    ----------
    DICOM PS3.7 9.1.1.1.4 and Annex C (status, Error Comment); pynetdicom
    "evt.EVT_C_STORE" handler documentation (a Dataset status).
    """
    status = Dataset()
    status.Status = code
    text = comment.encode("ascii", "replace").decode("ascii")
    status.ErrorComment = text[:ERROR_COMMENT_MAX_CHARS]
    return status


def status_code(status: int | Dataset) -> int:
    """The status value of what :meth:`StorageSCP.handle_store` returned."""
    return int(status.Status) if isinstance(status, Dataset) else int(status)


class ReusePortAssociationServer(GuardedAssociationServer):
    """pynetdicom's threaded server with ``SO_REUSEPORT`` set before bind.

    Several processes may then listen on the same address; Linux spreads new
    connections over them.
    """

    def server_bind(self) -> None:
        """Set ``SO_REUSEPORT`` and bind (see :meth:`AssociationServer.server_bind`)."""
        if self.socket is None:  # pynetdicom types it Optional; TCPServer made it
            raise OSError("the server has no socket to bind")
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def shutdown(self) -> None:
        """Stop serving and close the socket.

        Made with ``AE.make_server``, this server is not in the AE's list of
        running servers, which pynetdicom's own ``shutdown`` removes it from.
        """
        socketserver.BaseServer.shutdown(self)
        self.server_close()


class StorageSCP:
    """A pynetdicom Storage SCP that spools instances through an :class:`InstanceIngest`.

    Parameters
    ----------
    settings : DicomSettings
        AE title, address, calling-AE allow-list, PDU size and timeouts.
    ingest : InstanceIngest
        Stores accepted instances.
    on_association_closed : callable or None
        Called with the association's row id after an association that
        stored at least one instance has closed (for example to bring the
        series sweep forward). Runs in the association's thread; exceptions
        are logged.
    reuse_port : bool
        Listen with ``SO_REUSEPORT`` so that other receiver processes can
        share the port.
    receiver : str or None
        Name of this receiver in the association log (default ``host:pid``).
    audit : AuditLog or None
        Where every association is audited; a log on the ingest's database
        when None.

    Raises
    ------
    ConfigurationError
        If ``dicom.tls`` is enabled and its certificate, key or CA file cannot
        be loaded.
    """

    def __init__(
        self,
        settings: DicomSettings,
        ingest: InstanceIngest,
        *,
        on_association_closed: Callable[[int], None] | None = None,
        reuse_port: bool = False,
        receiver: str | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.settings = settings
        self.ingest = ingest
        self.on_association_closed = on_association_closed
        self.reuse_port = reuse_port
        self.receiver = receiver or f"{socket.gethostname()}:{os.getpid()}"
        self.associations = AssociationLog(ingest.session_factory, self.receiver)
        # association object -> [row id or None, instances stored]
        self._open: dict[object, list] = {}
        self._open_lock = threading.Lock()
        self._server: ThreadedAssociationServer | None = None
        self.auditor = AssociationAuditor(
            audit or AuditLog(ingest.session_factory),
            association_row=lambda assoc: (self._open.get(assoc) or [None])[0],
            session_factory=ingest.session_factory,
        )
        self.disk = DiskWatermark(
            ingest.spool.root, settings.min_free_disk_bytes, settings.min_free_disk_percent
        )
        self.guard = ConnectionGuard(
            allow_list=AddressAllowList(settings.allowed_networks),
            limits=ReceiveLimits(
                settings.max_accepted_pdu_bytes,
                settings.max_dataset_bytes,
                stall_timeout_s=settings.network_timeout_s,
            ),
            tls_context=server_context(settings.tls) if settings.tls.enabled else None,
            handshake_timeout_s=settings.tls.handshake_timeout_s,
            max_connections_per_address=(
                settings.max_associations_per_address or max(1, settings.max_associations // 2)
            ),
            on_refused=self.auditor.refused,
        )

    def _make_ae(self) -> AE:
        check_pynetdicom_version()  # the reactor and the PDU guard copy 3.0's internals
        accept_overlong_uids_for_refusal()  # answered with 0xC210 below, not an A-ABORT
        log_standard_events(logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG))
        ae = AE(ae_title=self.settings.ae_title)
        ae.maximum_pdu_size = self.settings.max_pdu_bytes
        ae.network_timeout = self.settings.network_timeout_s
        ae.acse_timeout = self.settings.network_timeout_s
        ae.dimse_timeout = self.settings.network_timeout_s
        ae.maximum_associations = self.settings.max_associations
        ae.require_called_aet = self.settings.require_called_ae_title
        ae.add_supported_context(Verification)
        for sop_class in STORAGE_SOP_CLASSES:
            ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
        if self.settings.allowed_calling_ae_titles:
            ae.require_calling_aet = list(self.settings.allowed_calling_ae_titles)
        else:
            logger.warning(
                "dicom.allowed_calling_ae_titles is empty: every calling AE title is accepted"
            )
        return ae

    def start(self) -> None:
        """Start listening in background threads.

        Raises
        ------
        OSError
            If the address cannot be bound (port in use, permission).
        """
        ae = self._make_ae()
        handlers: list[EventHandlerType] = [
            (evt.EVT_C_STORE, self.handle_store),
            (evt.EVT_C_ECHO, self.handle_echo),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_CONN_CLOSE, self._on_conn_close),
        ]
        handlers += self.auditor.handlers()  # after the association log's: rows exist
        address = (self.settings.host, self.settings.port)
        if self.reuse_port:
            self._server = ae.make_server(
                address,
                evt_handlers=handlers,
                server_class=ReusePortAssociationServer,
                guard=self.guard,
            )
            threading.Thread(
                target=self._server.serve_forever, name="ReusePortAcceptor", daemon=True
            ).start()
        else:
            self._server = ae.make_server(
                address,
                evt_handlers=handlers,
                server_class=GuardedAssociationServer,
                guard=self.guard,
            )
            threading.Thread(
                target=self._server.serve_forever, name="StorageSCPAcceptor", daemon=True
            ).start()
        logger.info(
            "Storage SCP %s listening on %s:%d",
            self.settings.ae_title,
            self.settings.host,
            self.port,
        )

    @property
    def port(self) -> int:
        """The TCP port actually bound (useful when configured as 0)."""
        if self._server is None:
            return self.settings.port
        return int(self._server.server_address[1])

    def stop(self) -> None:
        """Stop listening and close open associations."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _on_accepted(self, event: Event) -> None:
        requestor = event.assoc.requestor
        logger.info(
            "association accepted from %s (%s:%s)",
            requestor.ae_title,
            requestor.address,
            requestor.port,
        )
        try:
            row_id = self.associations.open(
                requestor.ae_title, f"{requestor.address}:{requestor.port}"
            )
        except Exception:  # untracked: its series fall back to the quiet time
            logger.exception("association from %s could not be logged", requestor.ae_title)
            row_id = None
        with self._open_lock:
            self._open[event.assoc] = [row_id, 0]

    def _on_released(self, event: Event) -> None:
        self._closed(event, AssociationOutcome.RELEASED)

    def _on_aborted(self, event: Event) -> None:
        self._closed(event, AssociationOutcome.ABORTED)

    def _on_conn_close(self, event: Event) -> None:
        # A connection closed right after the A-RELEASE-RP is a clean release, even when this
        # event (DUL thread) comes before EVT_RELEASED (association thread).
        released = bool(getattr(event.assoc, "is_released", False))
        self._closed(event, AssociationOutcome.RELEASED if released else AssociationOutcome.CLOSED)

    def _closed(self, event: Event, outcome: AssociationOutcome) -> None:
        with self._open_lock:
            entry = self._open.pop(event.assoc, None)
        if entry is None or entry[0] is None:
            return  # never accepted, not logged, or already closed
        row_id, stored = entry
        try:
            self.associations.close(row_id, outcome)
        except Exception:  # the row stays open until the next start
            logger.exception("closing association %d in the log failed", row_id)
            return
        logger.debug("association %d %s after %d instance(s)", row_id, outcome, stored)
        if stored and self.on_association_closed is not None:
            try:
                self.on_association_closed(row_id)
            except Exception:
                logger.exception("on_association_closed failed for association %d", row_id)

    @staticmethod
    def _on_rejected(event: Event) -> None:
        requestor = event.assoc.requestor
        logger.warning(
            "association rejected from %s (%s:%s)",
            requestor.ae_title,
            requestor.address,
            requestor.port,
        )

    @staticmethod
    def _part10(event: Event) -> bytes:
        """The received dataset as Part 10 bytes, as ``event.encoded_dataset()`` gives them."""
        request = cast(C_STORE, event.request)  # EVT_C_STORE carries a C-STORE request
        if request.DataSet is None:
            raise InvalidInstanceError("C-STORE request without a data set")
        meta = file_meta_information(
            str(request.AffectedSOPClassUID or ""),
            str(request.AffectedSOPInstanceUID or ""),
            str(event.context.transfer_syntax),
            PYNETDICOM_IMPLEMENTATION_UID,
            PYNETDICOM_IMPLEMENTATION_VERSION,
        )
        return b"".join((meta, request.DataSet.getvalue()))

    @staticmethod
    def handle_echo(event: Event) -> int:
        """Answer C-ECHO with Success (PS3.4 A.4)."""
        return STATUS_SUCCESS

    def handle_store(self, event: Event) -> int | Dataset:
        """Handle one C-STORE request: parse header, spool durably, record, answer.

        Parameters
        ----------
        event : pynetdicom.events.Event
            The EVT_C_STORE event.

        Returns
        -------
        int or pydicom.Dataset
            0x0000 on success (also for an instance already stored); a
            failure as a status Dataset whose Error Comment says why
            (:func:`failure_status`): 0xC210 if the dataset cannot be
            understood (not DICOM, missing or invalid UIDs, truncated Pixel
            Data), 0xA900 if it does not match the requested SOP class, 0xA700
            if it cannot be stored now (disk or database, or free disk space
            below ``dicom.min_free_disk_bytes`` / ``min_free_disk_percent``).
        """
        calling = event.assoc.requestor.ae_title
        request = cast(C_STORE, event.request)  # EVT_C_STORE carries a C-STORE request
        affected_uid = str(request.AffectedSOPInstanceUID or "")
        for name, uid in (
            ("Affected SOP Instance UID", affected_uid),
            ("Affected SOP Class UID", str(request.AffectedSOPClassUID or "")),
        ):
            if len(uid) > 64:
                logger.warning(
                    "C-STORE from %s refused (0xC210): %s of %d characters", calling, name, len(uid)
                )
                return failure_status(STATUS_CANNOT_UNDERSTAND, f"{name} longer than 64 characters")
        try:
            encoded = self._part10(event)
            header = parse_header(encoded, transfer_syntax_uid=str(event.context.transfer_syntax))
        except InvalidInstanceError as err:
            logger.warning("C-STORE from %s refused (0xC210): %s", calling, str(err))
            return failure_status(STATUS_CANNOT_UNDERSTAND, str(err))
        except Exception:  # nothing may escape into the association thread
            logger.exception("C-STORE from %s refused (0xC210): undecodable request", calling)
            return failure_status(STATUS_CANNOT_UNDERSTAND, "undecodable request")
        if header.sop_instance_uid != affected_uid:
            logger.warning(
                "C-STORE from %s refused (0xC210): SOPInstanceUID %s differs from the request's "
                "Affected SOP Instance UID %r",
                calling,
                header.sop_instance_uid,
                affected_uid[:64],
            )
            return failure_status(
                STATUS_CANNOT_UNDERSTAND, "SOP Instance UID differs from Affected SOP Instance UID"
            )
        if header.sop_class_uid != str(request.AffectedSOPClassUID):
            logger.warning(
                "C-STORE from %s refused (0xA900): SOPClassUID %s does not match the request",
                calling,
                header.sop_class_uid,
            )
            return failure_status(
                STATUS_DATASET_DOES_NOT_MATCH_SOP_CLASS,
                "SOP Class UID differs from Affected SOP Class UID",
            )
        with self._open_lock:
            entry = self._open.get(event.assoc)
        association_id = entry[0] if entry is not None else None
        room, why_not = self.disk.has_room(len(encoded))
        if not room:
            logger.error("C-STORE of %s refused (0xA700): %s", header.sop_instance_uid, why_not)
            return failure_status(STATUS_OUT_OF_RESOURCES, "not enough free disk space")
        try:
            stored = self.ingest.store(header, encoded, calling, association_id=association_id)
        except (InvalidUIDError, InvalidInstanceError) as err:
            logger.warning("C-STORE from %s refused (0xC210): %s", calling, str(err))
            return failure_status(STATUS_CANNOT_UNDERSTAND, str(err))
        except SpoolWriteError as err:
            logger.error("C-STORE of %s refused (0xA700): %s", header.sop_instance_uid, str(err))
            return failure_status(STATUS_OUT_OF_RESOURCES, "cannot write to the spool now")
        except SQLAlchemyError as err:
            logger.error(
                "C-STORE of %s refused (0xA700): database error %s",
                header.sop_instance_uid,
                err.__class__.__name__,
            )
            return failure_status(STATUS_OUT_OF_RESOURCES, "database busy or unavailable")
        except Exception:
            logger.exception("C-STORE of %s refused (0xA700)", header.sop_instance_uid)
            return failure_status(STATUS_OUT_OF_RESOURCES, "internal error")
        if stored:
            if entry is not None:
                entry[1] += 1
            logger.debug("stored %s from %s", header.sop_instance_uid, calling)
        return STATUS_SUCCESS
