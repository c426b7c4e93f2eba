"""Caps of one upload and the refusals that stop it (HTTP 413 and 507).

:class:`UploadLimits` comes from the ``web.upload_*`` settings;
:class:`~dicom_node.web.upload.UploadIngest` raises :class:`UploadTooLarge`
past a cap and :class:`UploadNoRoom` below the free-disk watermark. Both carry
the report of what was stored before the refusal.

References
----------
OWASP File Upload Cheat Sheet (archive bombs: limit the unpacked size, the
number of files and the compression ratio).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dicom_node.web.upload import UploadReport


@dataclass(frozen=True)
class UploadLimits:
    """Caps of one upload, counted on the bytes actually unpacked.

    Parameters
    ----------
    max_member_bytes : int
        Most bytes one file or zip member may unpack to (``web.upload_max_member_bytes``).
    max_total_bytes : int
        Most bytes all files and members of one upload may unpack to
        (``web.upload_max_total_bytes``).
    max_compression_ratio : float
        Most unpacked bytes per compressed byte of one member
        (``web.upload_max_compression_ratio``), judged past
        :data:`~dicom_node.web.upload.RATIO_GRACE_BYTES`.
    max_members : int
        Most members in the zips of one upload (``web.upload_max_members``).
    max_concurrent : int
        Uploads handled at once (``web.upload_max_concurrent``).

    References
    ----------
    OWASP File Upload Cheat Sheet; PKWARE APPNOTE.TXT 4.4.8-4.4.9 (sizes in the headers).
    """

    max_member_bytes: int = 1024**3
    max_total_bytes: int = 8 * 1024**3
    max_compression_ratio: float = 200.0
    max_members: int = 10000
    max_concurrent: int = 2

    @classmethod
    def from_settings(cls, web) -> UploadLimits:
        """Limits from the ``[web]`` settings.

        Parameters
        ----------
        web : dicom_node.config.WebSettings
            The ``[web]`` section (``upload_max_*`` settings).

        Returns
        -------
        UploadLimits
        """
        return cls(
            max_member_bytes=web.upload_max_member_bytes,
            max_total_bytes=web.upload_max_total_bytes,
            max_compression_ratio=web.upload_max_compression_ratio,
            max_members=web.upload_max_members,
            max_concurrent=web.upload_max_concurrent,
        )


class UploadRefused(Exception):  # noqa: N818 - a refusal reported to the user
    """The upload was stopped; what was stored before the refusal stays stored.

    Parameters
    ----------
    message : str
        Names the file or member and the rule (the setting) that refused it.
    name : str
        The file or member refused (``archive.zip:member``).

    Attributes
    ----------
    status : int
        HTTP status of the answer.
    report : UploadReport or None
        Outcomes up to the refusal (set by
        :meth:`~dicom_node.web.upload.UploadIngest.ingest_files`).
    """

    status = 413

    def __init__(self, message: str, name: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.name = name
        self.report: UploadReport | None = None


class UploadTooLarge(UploadRefused):
    """A member, the upload, a ratio or the member count is over a ``web.upload_*`` cap (413)."""

    status = 413


class UploadNoRoom(UploadRefused):
    """The spool's disk is below the free-disk watermark (507 Insufficient Storage)."""

    status = 507
