"""Free-disk watermark of the spool: below it, new instances are refused with 0xA700.

A full disk must not turn into a half-written spool or a database that
cannot commit. The Storage SCP asks :meth:`DiskWatermark.has_room` before it
writes an instance; below the watermark it answers 0xA700 (Refused: Out of
Resources) and the sender keeps the instance and retries later, which is
what modalities and PACS do with that status.

References
----------
DICOM PS3.4 B.2.3 (C-STORE status A7xx: Refused, Out of Resources).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)


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
    """

    def __init__(self, path: Path, min_free_bytes: int = 0, min_free_percent: float = 0.0) -> None:
        self.path = Path(path)
        self.min_free_bytes = int(min_free_bytes)
        self.min_free_percent = float(min_free_percent)

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
        try:
            free, total = self.free_bytes()
        except OSError as err:
            return False, f"free space of {self.path} unknown: {err}"
        after = free - size_bytes
        if self.min_free_bytes and after < self.min_free_bytes:
            return False, (
                f"{free} bytes free, {self.min_free_bytes} must remain "
                "(dicom.min_free_disk_bytes)"
            )
        if self.min_free_percent and total and 100.0 * after / total < self.min_free_percent:
            return False, (
                f"{100.0 * free / total:.2f} % free, {self.min_free_percent:g} % must remain "
                "(dicom.min_free_disk_percent)"
            )
        return True, ""
