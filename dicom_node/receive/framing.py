"""PS3.8 framing of the bytes an association receives, and the limits enforced on them.

Pure upper-layer protocol: no pynetdicom here. :class:`PduStreamGuard`
follows the PDU headers (PS3.8 9.3.1) and the presentation data value items
of each P-DATA-TF (PS3.8 9.3.5, Annex E.2) of a byte stream fed to it in
chunks of any size, and reports the first limit of :class:`ReceiveLimits`
that the stream exceeds; :mod:`dicom_node.receive.transport` feeds it every
byte an association reads and aborts the association on a violation.

References
----------
DICOM PS3.8 9.3.1 (PDU header), 9.3.5 (P-DATA-TF), 9.3.8 (A-ABORT), Annex E.2
(message control header).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

#: PDU header: type (1), reserved (1), length (4) (PS3.8 9.3.1).
PDU_HEADER_BYTES = 6
#: PDV item header: item length (4), presentation context ID (1), message control header (1).
PDV_HEADER_BYTES = 6
P_DATA_TF = 0x04
#: A-ABORT PDU: source 2 (DICOM UL service-provider), reason 6 (invalid PDU parameter value).
A_ABORT_INVALID_PARAMETER = bytes((0x07, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x02, 0x06))
#: Largest command set accepted (a C-STORE-RQ command is about 200 bytes).
MAX_COMMAND_BYTES = 65536


@dataclass(frozen=True)
class ReceiveLimits:
    """Limits on what one association may make the node buffer.

    Parameters
    ----------
    max_pdu_bytes : int
        Largest PDU length field accepted (any PDU type), in bytes.
    max_dataset_bytes : int
        Largest dataset of one DIMSE message (all its P-DATA fragments), in bytes.
    max_command_bytes : int
        Largest command set of one DIMSE message, in bytes.
    stall_timeout_s : float or None
        Longest wait (s) for the rest of a PDU whose first bytes arrived; a
        peer that stops inside a PDU (a header, part of a body, part of a
        P-DATA) is aborted after it. None waits forever.
    """

    max_pdu_bytes: int = 4 * 1024**2
    max_dataset_bytes: int = 1024**3
    max_command_bytes: int = MAX_COMMAND_BYTES
    stall_timeout_s: float | None = 60.0


class PduStreamGuard:
    """Follows the PDU framing of one association's received bytes and enforces limits.

    Feed it every byte in order (:meth:`feed`), in chunks of any size; it
    keeps a few header bytes and counters, never the data.

    Parameters
    ----------
    limits : ReceiveLimits
        The limits enforced.

    References
    ----------
    DICOM PS3.8 9.3.1 (PDU header), 9.3.5 (P-DATA-TF and PDV items), E.2
    (message control header: bit 0 command/dataset, bit 1 last fragment).
    """

    def __init__(self, limits: ReceiveLimits) -> None:
        self.limits = limits
        self.violation: str | None = None
        self.bytes_received = 0
        self._header = bytearray()
        self._pdu_type = 0
        self._pdu_left = 0
        self._pdv_header = bytearray()
        self._pdv_left = 0
        self._pdv_is_command = False
        self._pdv_is_last = False
        self._command_bytes = 0
        self._dataset_bytes = 0

    def feed(self, data: bytes | bytearray | memoryview) -> str | None:
        """Account for received bytes; return the violation, or None while within limits.

        Parameters
        ----------
        data : bytes-like
            The next bytes received on the association.

        Returns
        -------
        str or None
            Why the association must be aborted (also kept in
            :attr:`violation`); None when the bytes are within the limits.
        """
        if self.violation is not None:
            return self.violation
        view = memoryview(data)
        self.bytes_received += len(view)
        position, end = 0, len(view)
        while position < end:
            if self._pdu_left == 0:
                take = min(PDU_HEADER_BYTES - len(self._header), end - position)
                self._header += view[position : position + take]
                position += take
                if len(self._header) < PDU_HEADER_BYTES:
                    break
                self._pdu_type, _, length = struct.unpack(">BBL", self._header)
                self._header.clear()
                if length > self.limits.max_pdu_bytes:
                    self.violation = (
                        f"PDU type 0x{self._pdu_type:02X} announces {length} bytes, over "
                        f"the limit of {self.limits.max_pdu_bytes} (dicom.max_accepted_pdu_bytes)"
                    )
                    return self.violation
                self._pdu_left = length
                self._pdv_header.clear()
                self._pdv_left = 0
                continue
            if self._pdu_type != P_DATA_TF:
                skip = min(self._pdu_left, end - position)
                position += skip
                self._pdu_left -= skip
                continue
            if self._pdv_left == 0:
                take = min(PDV_HEADER_BYTES - len(self._pdv_header), end - position, self._pdu_left)
                self._pdv_header += view[position : position + take]
                position += take
                self._pdu_left -= take
                if len(self._pdv_header) == PDV_HEADER_BYTES:
                    item_length = struct.unpack(">L", self._pdv_header[:4])[0]
                    control = self._pdv_header[5]
                    self._pdv_header.clear()
                    self._pdv_is_command = bool(control & 0x01)
                    self._pdv_is_last = bool(control & 0x02)
                    self._pdv_left = max(0, item_length - 2)
                    if self._pdv_left == 0:
                        self._fragment_done()
                elif self._pdu_left == 0:
                    self._pdv_header.clear()  # malformed item: pynetdicom refuses the PDU
                continue
            take = min(self._pdv_left, end - position, self._pdu_left)
            position += take
            self._pdv_left -= take
            self._pdu_left -= take
            if self._pdv_is_command:
                self._command_bytes += take
                if self._command_bytes > self.limits.max_command_bytes:
                    self.violation = f"command set over {self.limits.max_command_bytes} bytes"
                    return self.violation
            else:
                self._dataset_bytes += take
                if self._dataset_bytes > self.limits.max_dataset_bytes:
                    self.violation = (
                        f"dataset over {self.limits.max_dataset_bytes} bytes "
                        "(dicom.max_dataset_bytes)"
                    )
                    return self.violation
            if self._pdv_left == 0:
                self._fragment_done()
            elif self._pdu_left == 0:
                self._pdv_left = 0  # item longer than its PDU: malformed, pynetdicom refuses
        return None

    def _fragment_done(self) -> None:
        if self._pdv_is_last:
            if self._pdv_is_command:
                self._command_bytes = 0
            else:
                self._dataset_bytes = 0
