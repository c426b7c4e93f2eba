"""Upload: DICOM files, or zips of them, enter the node like C-STORE instances.

Each instance goes through the same code as the Storage SCP: the header is
parsed and its UIDs validated (:func:`~dicom_node.receive.header.parse_header`),
the SOP class is checked against the classes the SCP accepts, and
:meth:`~dicom_node.receive.ingest.InstanceIngest.store` writes the unchanged
bytes durably to the spool and records the row, with the calling AE title
``WEB-UPLOAD``. From there the series is completed, selected and analysed
exactly like a received one.

Every file gets its own outcome: a file that is not DICOM, has an invalid UID
or an SOP class the node does not accept is reported and skipped; the others
are stored. Nothing is lost silently.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

from sqlalchemy.exc import SQLAlchemyError

from dicom_node.errors import InvalidInstanceError, SpoolWriteError
from dicom_node.receive.header import parse_header
from dicom_node.receive.ingest import InstanceIngest
from dicom_node.receive.scp import STORAGE_SOP_CLASSES

logger = logging.getLogger(__name__)

#: Calling AE title recorded for uploaded instances.
UPLOAD_CALLING_AE_TITLE = "WEB-UPLOAD"
_ACCEPTED = {str(uid): uid.name for uid in STORAGE_SOP_CLASSES}
_READ_CHUNK_BYTES = 1 << 20


class UploadTooLarge(Exception):  # noqa: N818 - reported to the user as HTTP 413
    """The upload (or the unpacked content of a zip) exceeds ``web.max_upload_bytes``."""


@dataclass
class FileOutcome:
    """What happened to one uploaded file or zip member.

    Parameters
    ----------
    name : str
        File name (``archive.zip:folder/file.dcm`` for zip members).
    status : str
        ``stored``, ``duplicate`` (already stored, not stored twice),
        ``skipped`` (e.g. a DICOMDIR) or ``error``.
    message : str
    series_instance_uid : str or None
    """

    name: str
    status: str
    message: str = ""
    series_instance_uid: str | None = None


@dataclass
class UploadReport:
    """Outcome of one upload.

    Parameters
    ----------
    outcomes : list of FileOutcome
    """

    outcomes: list[FileOutcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        """Number of files with ``status``."""
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def series_instance_uids(self) -> list[str]:
        """Series that received stored or duplicate instances, in upload order."""
        seen: dict[str, None] = {}
        for o in self.outcomes:
            if o.series_instance_uid and o.status in ("stored", "duplicate"):
                seen.setdefault(o.series_instance_uid, None)
        return list(seen)


class UploadIngest:
    """Stores uploaded files through an :class:`InstanceIngest`.

    Parameters
    ----------
    ingest : InstanceIngest
        The same ingest the Storage SCP uses.
    max_bytes : int
        Limit of the unpacked bytes of one upload.
    """

    def __init__(self, ingest: InstanceIngest, max_bytes: int) -> None:
        self.ingest = ingest
        self.max_bytes = max_bytes

    def ingest_files(self, files: Iterable[tuple[str, BinaryIO]]) -> UploadReport:
        """Store every DICOM file given, unpacking zips.

        Parameters
        ----------
        files : iterable of (str, binary file)
            File name and a seekable binary file object.

        Returns
        -------
        UploadReport

        When the unpacked bytes exceed ``max_bytes``, the file that crosses the
        limit and every later one are reported as errors and not stored; what
        was stored before stays stored.
        """
        report = UploadReport()
        budget = [self.max_bytes]
        for name, handle in files:
            try:
                handle.seek(0)
                if zipfile.is_zipfile(handle):
                    handle.seek(0)
                    self._ingest_zip(name, handle, report, budget)
                else:
                    handle.seek(0)
                    data = self._read_limited(handle, budget)
                    report.outcomes.append(self._ingest_one(name, data))
            except UploadTooLarge as err:
                report.outcomes.append(
                    FileOutcome(
                        name,
                        "error",
                        f"{err}: this file and the ones after it were "
                        "not stored; upload them separately",
                    )
                )
                break
        logger.info(
            "upload: %d stored, %d duplicate, %d skipped, %d refused",
            report.count("stored"),
            report.count("duplicate"),
            report.count("skipped"),
            report.count("error"),
        )
        return report

    def _read_limited(self, handle: BinaryIO, budget: list[int]) -> bytes:
        chunks = []
        while True:
            chunk = handle.read(_READ_CHUNK_BYTES)
            if not chunk:
                break
            budget[0] -= len(chunk)
            if budget[0] < 0:
                raise UploadTooLarge(f"the upload exceeds {self.max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _ingest_zip(
        self, name: str, handle: BinaryIO, report: UploadReport, budget: list[int]
    ) -> None:
        try:
            archive = zipfile.ZipFile(handle)
        except zipfile.BadZipFile as err:
            report.outcomes.append(FileOutcome(name, "error", f"not a readable zip: {err}"))
            return
        with archive:
            for member in archive.infolist():
                label = f"{name}:{member.filename}"
                if member.is_dir():
                    continue
                base = member.filename.rsplit("/", 1)[-1]
                if member.filename.startswith("__MACOSX/") or base.startswith("._"):
                    report.outcomes.append(FileOutcome(label, "skipped", "macOS metadata"))
                    continue
                if base.upper() == "DICOMDIR":
                    report.outcomes.append(
                        FileOutcome(label, "skipped", "DICOMDIR (media directory, not an image)")
                    )
                    continue
                if member.file_size > budget[0]:
                    raise UploadTooLarge(f"the unpacked upload exceeds {self.max_bytes} bytes")
                try:
                    with archive.open(member) as source:
                        data = self._read_limited(source, budget)
                except (zipfile.BadZipFile, NotImplementedError, RuntimeError) as err:
                    report.outcomes.append(
                        FileOutcome(label, "error", f"cannot unpack this member: {err}")
                    )
                    continue
                report.outcomes.append(self._ingest_one(label, data))

    def _ingest_one(self, name: str, data: bytes) -> FileOutcome:
        try:
            header = parse_header(data)
        except InvalidInstanceError as err:
            return FileOutcome(name, "error", f"not accepted: {err}")
        if header.sop_class_uid not in _ACCEPTED:
            accepted = ", ".join(sorted(_ACCEPTED.values()))
            return FileOutcome(
                name,
                "error",
                f"SOP class {header.sop_class_uid} is not accepted by this node ({accepted})",
                header.series_instance_uid,
            )
        try:
            stored = self.ingest.store(header, data, UPLOAD_CALLING_AE_TITLE)
        except SpoolWriteError as err:
            logger.error("upload of %s: %s", header.sop_instance_uid, err)
            return FileOutcome(name, "error", f"could not be stored now, try again: {err}")
        except SQLAlchemyError as err:
            logger.error("upload of %s: database error %s", header.sop_instance_uid, err)
            return FileOutcome(name, "error", "could not be recorded now (database), try again")
        if not stored:
            return FileOutcome(
                name,
                "duplicate",
                "already stored (same SOPInstanceUID)",
                header.series_instance_uid,
            )
        return FileOutcome(name, "stored", "", header.series_instance_uid)
