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

Zip members are never unpacked into memory. Each one is read with
:meth:`zipfile.ZipFile.open` in chunks of :data:`READ_CHUNK_BYTES` into an
anonymous temporary file on the spool's disk, and the bytes actually produced
are counted while streaming (a zip's headers can lie): past
``web.upload_max_member_bytes`` for one member, ``web.upload_max_total_bytes``
for the whole upload, ``web.upload_max_compression_ratio`` unpacked bytes per
compressed byte of a member, or ``web.upload_max_members`` members, the upload
is refused (HTTP 413) and the partial file is removed. The free-disk watermark
of the Storage SCP (``dicom.min_free_disk_bytes``, ``dicom.min_free_disk_percent``)
is asked before and while writing (HTTP 507). A zip inside a zip is not
unpacked. At most ``web.upload_max_concurrent`` uploads run at once
(:meth:`UploadIngest.try_acquire`; the route answers 503 with ``Retry-After``).

References
----------
PKWARE, APPNOTE.TXT - .ZIP File Format Specification, 4.3.7 (local file
header), 4.3.12 (central directory), 4.3.16 (end of central directory).
OWASP File Upload Cheat Sheet (archive bombs: limit the unpacked size, the
number of files and the compression ratio).
"""

from __future__ import annotations

import copy
import logging
import tempfile
import threading
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO

from pydicom.uid import CTImageStorage, EnhancedCTImageStorage, SecondaryCaptureImageStorage
from sqlalchemy.exc import SQLAlchemyError

from dicom_node.errors import InvalidInstanceError, SpoolWriteError
from dicom_node.receive.header import parse_header
from dicom_node.receive.ingest import InstanceIngest
from dicom_node.receive.resources import DiskWatermark
from dicom_node.web.upload_limits import UploadLimits, UploadNoRoom, UploadRefused, UploadTooLarge

__all__ = [
    "FileOutcome",
    "UploadIngest",
    "UploadLimits",
    "UploadNoRoom",
    "UploadRefused",
    "UploadReport",
    "UploadTooLarge",
]

logger = logging.getLogger(__name__)

#: Calling AE title recorded for uploaded instances.
UPLOAD_CALLING_AE_TITLE = "WEB-UPLOAD"
#: Storage SOP classes an upload may carry: those of the Storage SCP
#: (``dicom_node.receive.scp.STORAGE_SOP_CLASSES``), named here through pydicom
#: so that the dashboard does not import pynetdicom; a test keeps the two equal.
STORAGE_SOP_CLASSES = (CTImageStorage, EnhancedCTImageStorage, SecondaryCaptureImageStorage)
_ACCEPTED = {str(uid): uid.name for uid in STORAGE_SOP_CLASSES}
#: Bytes read from a zip member (or an uploaded file) at a time.
READ_CHUNK_BYTES = 1 << 20
#: A member's compression ratio is judged once it has unpacked more than this
#: many bytes, so a small blank slice (deflate reaches ~1000:1 on a constant
#: image) is not refused; a bomb is refused a few MiB into its first member.
RATIO_GRACE_BYTES = 1 << 20
#: Seconds a client is asked to wait (``Retry-After``) when every upload slot is taken.
RETRY_AFTER_S = 30
_ZIP_LOCAL_MAGIC = b"PK\x03\x04"


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
    refused : str
        Why the upload was stopped (empty when it was not).
    """

    outcomes: list[FileOutcome] = field(default_factory=list)
    refused: str = ""

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


@dataclass
class _Budget:
    total: int = 0  # bytes unpacked so far in this upload
    members: int = 0  # zip members seen so far in this upload


def _declared_entries(handle: BinaryIO) -> int | None:
    """Entries the end of central directory record declares, before the directory is read."""
    try:
        # Private zipfile names, absent from typeshed: the EOCD (APPNOTE 4.3.16), no public API.
        endrec = zipfile._EndRecData(handle)  # type: ignore[attr-defined]
        if not endrec:
            return None
        return int(endrec[zipfile._ECD_ENTRIES_TOTAL])  # type: ignore[attr-defined]
    except (AttributeError, OSError, IndexError, TypeError, ValueError):
        return None
    finally:
        handle.seek(0)


class UploadIngest:
    """Stores uploaded files through an :class:`InstanceIngest`, within :class:`UploadLimits`.

    Parameters
    ----------
    ingest : InstanceIngest
        The same ingest the Storage SCP uses.
    limits : UploadLimits
        Caps of one upload, in bytes (ratio: unpacked per compressed byte).
    disk : DiskWatermark or None
        Free-disk watermark asked before and while writing; None: not checked.
    tmp_dir : pathlib.Path or None
        Where members are unpacked (anonymous files, gone when closed; put it on
        the spool's disk so the watermark sees them); None: the system's.

    References
    ----------
    PKWARE APPNOTE.TXT; OWASP File Upload Cheat Sheet.
    """

    def __init__(
        self,
        ingest: InstanceIngest,
        limits: UploadLimits | None = None,
        disk: DiskWatermark | None = None,
        tmp_dir: Path | None = None,
    ) -> None:
        self.ingest = ingest
        self.limits = limits or UploadLimits()
        self.disk = disk
        self.tmp_dir = Path(tmp_dir) if tmp_dir is not None else None
        if self.tmp_dir is not None:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
        #: One slot per upload handled at once (``web.upload_max_concurrent``).
        self.slots = threading.BoundedSemaphore(self.limits.max_concurrent)

    def try_acquire(self) -> bool:
        """Take an upload slot without waiting; False when all are taken (answer 503)."""
        return self.slots.acquire(blocking=False)

    def release(self) -> None:
        """Give back a slot taken by :meth:`try_acquire`."""
        self.slots.release()

    def check_room(self, size_bytes: int, what: str = "the upload") -> None:
        """Refuse when writing ``size_bytes`` would cross the free-disk watermark.

        Parameters
        ----------
        size_bytes : int
            Bytes about to be written.
        what : str
            Named in the message.

        Raises
        ------
        UploadNoRoom
            Below ``dicom.min_free_disk_bytes`` / ``dicom.min_free_disk_percent``.
        """
        if self.disk is None:
            return
        ok, why = self.disk.has_room(max(0, int(size_bytes)))
        if not ok:
            raise UploadNoRoom(f"{what}: not enough free disk space, {why}; try again later", what)

    def ingest_files(self, files: Iterable[tuple[str, BinaryIO]]) -> UploadReport:
        """Store every DICOM file given, unpacking zips (not zips inside zips).

        Parameters
        ----------
        files : iterable of (str, binary file)
            File name and a seekable binary file object.

        Returns
        -------
        UploadReport

        Raises
        ------
        UploadTooLarge
            A member or file unpacks past ``max_member_bytes``, the upload past
            ``max_total_bytes``, a member past ``max_compression_ratio``, or the
            zips hold more than ``max_members`` members (HTTP 413).
        UploadNoRoom
            The spool's disk is below the watermark (HTTP 507).

        The exception's ``report`` holds the outcomes up to the refusal, the
        refused file included; what was stored before stays stored.
        """
        report = UploadReport()
        budget = _Budget()
        try:
            for name, handle in files:
                handle.seek(0)
                if zipfile.is_zipfile(handle):
                    handle.seek(0)
                    self._ingest_zip(name, handle, report, budget)
                else:
                    handle.seek(0)
                    with self._stream(name, handle, None, budget) as (tmp, size):
                        report.outcomes.append(self._ingest_file(name, tmp, size))
        except UploadRefused as err:
            report.refused = err.message
            report.outcomes.append(
                FileOutcome(
                    err.name or "upload",
                    "error",
                    f"{err.message}; this file and the ones after it were not stored",
                )
            )
            err.report = report
            logger.warning("upload refused: %s", err.message)
            raise
        finally:
            logger.info(
                "upload: %d stored, %d duplicate, %d skipped, %d refused",
                report.count("stored"),
                report.count("duplicate"),
                report.count("skipped"),
                report.count("error"),
            )
        return report

    def _stream(self, label: str, source: IO[bytes], compressed: int | None, budget: _Budget):
        return _Streamed(self, label, source, compressed, budget)

    def _ingest_zip(
        self, name: str, handle: BinaryIO, report: UploadReport, budget: _Budget
    ) -> None:
        limit = self.limits.max_members
        declared = _declared_entries(handle)
        if declared is not None and budget.members + declared > limit:
            raise UploadTooLarge(
                f"{name}: more than web.upload_max_members members ({limit})", name
            )
        handle.seek(0, 2)
        archive_bytes = max(1, handle.tell())
        handle.seek(0)
        try:
            archive = zipfile.ZipFile(handle)
        except zipfile.BadZipFile as err:
            report.outcomes.append(FileOutcome(name, "error", f"not a readable zip: {err}"))
            return
        with archive:
            members = archive.infolist()
            if budget.members + len(members) > limit:
                raise UploadTooLarge(
                    f"{name}: more than web.upload_max_members members ({limit})", name
                )
            budget.members += len(members)
            for member in members:
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
                # The header's size is only a first filter; the bytes are counted below.
                self._check_size(label, member.file_size, budget)
                # Let the member unpack past what is allowed, whatever its header says, so
                # that a lying header is caught by the count (zipfile would stop at the
                # header's size and only report a bad CRC). Two chunks more: the read that
                # crosses the cap returns normally and is refused here.
                allowed = min(
                    self.limits.max_member_bytes, self.limits.max_total_bytes - budget.total
                )
                info = copy.copy(member)
                info.file_size = max(allowed, 0) + 2 * READ_CHUNK_BYTES
                compressed = max(1, min(member.compress_size, archive_bytes))
                try:
                    with (
                        archive.open(info) as source,
                        self._stream(label, source, compressed, budget) as (tmp, size),
                    ):
                        if size != member.file_size:
                            report.outcomes.append(FileOutcome(
                                label, "error",
                                f"not stored: its zip header declares {member.file_size} bytes "
                                f"but it unpacks to {size} (damaged or crafted zip)",
                            ))  # fmt: skip
                            continue
                        report.outcomes.append(self._ingest_file(label, tmp, size))
                except (zipfile.BadZipFile, NotImplementedError, RuntimeError, EOFError) as err:
                    report.outcomes.append(
                        FileOutcome(label, "error", f"cannot unpack this member: {err}")
                    )
                    continue

    def _check_size(self, label: str, size: int, budget: _Budget) -> None:
        if size > self.limits.max_member_bytes:
            raise UploadTooLarge(
                f"member {label} expands past web.upload_max_member_bytes "
                f"({self.limits.max_member_bytes} bytes)",
                label,
            )
        if budget.total + size > self.limits.max_total_bytes:
            raise UploadTooLarge(
                f"{label}: archive expands past web.upload_max_total_bytes "
                f"({self.limits.max_total_bytes} bytes)",
                label,
            )

    def _ingest_file(self, name: str, tmp: BinaryIO, size: int) -> FileOutcome:
        tmp.seek(0)
        head = tmp.read(132)
        if head.startswith(_ZIP_LOCAL_MAGIC):
            return FileOutcome(
                name, "error", "not accepted: a zip inside a zip is not unpacked; upload it alone"
            )
        if len(head) < 132 or head[128:132] != b"DICM":
            try:  # not Part 10: let the parser word the refusal, without reading the rest
                parse_header(head)
            except InvalidInstanceError as err:
                return FileOutcome(name, "error", f"not accepted: {err}")
        tmp.seek(0)
        data = tmp.read()
        self.check_room(len(data), name)
        return self._ingest_one(name, data)

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


class _Streamed:
    """Context manager: ``source`` copied into an anonymous temporary file within the caps.

    Yields ``(file, size)``; the file is closed (and so removed) on leaving, also
    on a refusal.
    """

    def __init__(
        self,
        owner: UploadIngest,
        label: str,
        source: IO[bytes],
        compressed: int | None,
        budget: _Budget,
    ) -> None:
        self.owner, self.label, self.source = owner, label, source
        self.compressed, self.budget = compressed, budget
        self.tmp: BinaryIO | None = None

    def __enter__(self) -> tuple[BinaryIO, int]:
        limits, label = self.owner.limits, self.label
        self.tmp = tempfile.TemporaryFile(dir=self.owner.tmp_dir, prefix="upload-")
        try:
            size = 0
            while True:
                chunk = self.source.read(READ_CHUNK_BYTES)
                if not chunk:
                    break
                size += len(chunk)
                if size > limits.max_member_bytes:
                    raise UploadTooLarge(
                        f"member {label} expands past web.upload_max_member_bytes "
                        f"({limits.max_member_bytes} bytes)",
                        label,
                    )
                if self.budget.total + size > limits.max_total_bytes:
                    raise UploadTooLarge(
                        f"{label}: archive expands past web.upload_max_total_bytes "
                        f"({limits.max_total_bytes} bytes)",
                        label,
                    )
                if (
                    self.compressed is not None
                    and size > RATIO_GRACE_BYTES
                    and size > limits.max_compression_ratio * self.compressed
                ):
                    raise UploadTooLarge(
                        f"{label}: compression ratio {size / self.compressed:.0f}:1 over "
                        f"web.upload_max_compression_ratio ({limits.max_compression_ratio:g}:1)",
                        label,
                    )
                self.owner.check_room(len(chunk), label)
                self.tmp.write(chunk)
            self.budget.total += size
            return self.tmp, size
        except BaseException:
            self.tmp.close()
            self.tmp = None
            raise

    def __exit__(self, *exc) -> None:
        if self.tmp is not None:
            self.tmp.close()
            self.tmp = None
