"""Free-disk watermark of the spool: below it, new instances are refused with 0xA700.

A full disk must not turn into a half-written spool or a database that
cannot commit. The Storage SCP asks :meth:`DiskWatermark.has_room` before it
writes an instance; below the watermark it answers 0xA700 (Refused: Out of
Resources) and the sender keeps the instance and retries later, which is
what modalities and PACS do with that status.

``statvfs`` is not asked for every instance: the answer is reused, less the
bytes admitted since, for at most :data:`RECHECK_INTERVAL_S` seconds or
:data:`RECHECK_BYTES` admitted bytes, whichever comes first. A refusal is
always decided on a fresh answer, so a disk below the watermark is refused
with 0xA700 at once and a disk that was freed is noticed at the next
instance. Between two checks another program on the same file system can
take space unseen: the node may then write up to ``RECHECK_BYTES`` (or half a
second of instances) below the watermark, a small part of the 1 GiB default.

References
----------
DICOM PS3.4 B.2.3 (C-STORE status A7xx: Refused, Out of Resources).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

logger = logging.getLogger(__name__)

#: Longest time a ``statvfs`` answer is reused, in s.
RECHECK_INTERVAL_S = 0.5
#: Most bytes admitted on one ``statvfs`` answer before asking again.
RECHECK_BYTES = 64 * 1024**2


class DiskWatermark:
    """Minimum free space on the spool's file system.

    Parameters
    ----------
    path : pathlib.Path
        A directory on the file system to watch (the spool).
    min_free_bytes : int
        Free bytes that must remain after the write; 0 disables this check.
    min_free_percent : float
        Free space, in percent of the file system's size, that must remain;
        0 disables this check.
    recheck_interval_s : float
        Longest time, in s, a ``statvfs`` answer is reused; 0 asks for every
        instance.
    recheck_bytes : int
        Most bytes admitted on one answer before asking again.
    """

    def __init__(
        self,
        path: Path,
        min_free_bytes: int = 0,
        min_free_percent: float = 0.0,
        *,
        recheck_interval_s: float = RECHECK_INTERVAL_S,
        recheck_bytes: int = RECHECK_BYTES,
    ) -> None:
        self.path = Path(path)
        self.min_free_bytes = int(min_free_bytes)
        self.min_free_percent = float(min_free_percent)
        self.recheck_interval_s = float(recheck_interval_s)
        self.recheck_bytes = int(recheck_bytes)
        self._lock = threading.Lock()
        self._checked_at: float | None = None  # time.monotonic() of the last statvfs
        self._free = 0  # free bytes at the last statvfs, less the bytes admitted since
        self._total = 0
        self._admitted = 0  # bytes admitted since the last statvfs

    def free_bytes(self) -> tuple[int, int]:
        """Return (free bytes available to the node, file-system size in bytes).

        Raises
        ------
        OSError
            If the file system cannot be queried.
        """
        stats = os.statvfs(self.path)
        return stats.f_bavail * stats.f_frsize, stats.f_blocks * stats.f_frsize

    def has_room(self, size_bytes: int) -> tuple[bool, str]:
        """Return whether ``size_bytes`` can be written without crossing the watermark, and why not.

        Parameters
        ----------
        size_bytes : int
            Size of the instance about to be written.

        Returns
        -------
        (bool, str)
            True and ``""`` when there is room; False and the reason otherwise
            (also when the file system cannot be queried).
        """
        if not self.min_free_bytes and not self.min_free_percent:
            return True, ""
        with self._lock:
            if self._fresh_enough() and self._room(self._free, self._total, size_bytes) is None:
                self._admit(size_bytes)
                return True, ""
            try:  # no recent answer, or the estimate says no: ask the file system
                free, total = self.free_bytes()
            except OSError as err:
                self._checked_at = None
                return False, f"free space of {self.path} unknown: {err}"
            self._checked_at, self._free, self._total, self._admitted = (
                time.monotonic(),
                free,
                total,
                0,
            )
            why_not = self._room(free, total, size_bytes)
            if why_not is not None:
                return False, why_not
            self._admit(size_bytes)
            return True, ""

    def _fresh_enough(self) -> bool:
        return (
            self._checked_at is not None
            and time.monotonic() - self._checked_at < self.recheck_interval_s
            and self._admitted < self.recheck_bytes
        )

    def _admit(self, size_bytes: int) -> None:
        self._free -= size_bytes
        self._admitted += size_bytes

    def _room(self, free: int, total: int, size_bytes: int) -> str | None:
        """Return why ``size_bytes`` would cross the watermark, or None when it would not."""
        after = free - size_bytes
        if self.min_free_bytes and after < self.min_free_bytes:
            return (
                f"{free} bytes free, {self.min_free_bytes} must remain (dicom.min_free_disk_bytes)"
            )
        if self.min_free_percent and total and 100.0 * after / total < self.min_free_percent:
            return (
                f"{100.0 * free / total:.2f} % free, {self.min_free_percent:g} % must remain "
                "(dicom.min_free_disk_percent)"
            )
        return None
