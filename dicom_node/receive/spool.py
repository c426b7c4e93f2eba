"""The spool: received instances on disk, at paths built only from validated UIDs.

Layout: ``<spool>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``.
Writes are durable before the C-STORE response: the bytes go to a temporary
file in ``<spool>/.incoming``, are fsynced, renamed into place (atomic on one
file system) and the directory is fsynced, so an instance answered with
0x0000 survives a crash or power loss.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from dicom_node.errors import SpoolWriteError
from dicom_node.uids import validate_uid


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Durable file store for received instances.

    Parameters
    ----------
    root : pathlib.Path
        Spool directory; created if missing.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.incoming = self.root / ".incoming"
        self.incoming.mkdir(parents=True, exist_ok=True)

    def relative_path(
        self, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str
    ) -> Path:
        """Return the spool-relative path of an instance.

        Raises
        ------
        InvalidUIDError
            If any of the three UIDs is invalid (PS3.5 9.1); nothing else can
            form a path, so ``../`` and similar never reach the file system.
        """
        return (
            Path(validate_uid(study_instance_uid, keyword="StudyInstanceUID"))
            / validate_uid(series_instance_uid, keyword="SeriesInstanceUID")
            / f"{validate_uid(sop_instance_uid, keyword='SOPInstanceUID')}.dcm"
        )

    def absolute(self, relative: str | Path) -> Path:
        """Return the absolute path of a spool-relative path (as stored in the DB)."""
        return self.root / relative

    def write(self, relative: Path, data: bytes) -> Path:
        """Write ``data`` durably at ``relative`` (temp file, fsync, rename, fsync dir).

        Parameters
        ----------
        relative : pathlib.Path
            Path from :meth:`relative_path`.
        data : bytes
            The encoded instance.

        Returns
        -------
        pathlib.Path
            Absolute path of the stored file.

        Raises
        ------
        SpoolWriteError
            If the disk is full or the write fails otherwise; no partial file
            is left at the final path.
        """
        target = self.root / relative
        # A lexical check (no file-system calls): paths are built from validated UIDs only,
        # so this is defence in depth against a caller passing "..".
        if not os.path.normpath(target).startswith(f"{self.root}{os.sep}"):
            raise SpoolWriteError(f"refusing to write outside the spool: {relative}")
        tmp_name = None
        try:
            new_dirs = not target.parent.is_dir()
            if new_dirs:
                target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(
                dir=self.incoming, prefix=target.stem[:40], suffix=".part", delete=False
            ) as handle:
                tmp_name = handle.name
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, target)
            tmp_name = None
            _fsync_dir(target.parent)
            if new_dirs:
                _fsync_dir(target.parent.parent)
                _fsync_dir(self.root)
        except OSError as err:
            raise SpoolWriteError(f"cannot write {relative} to the spool: {err}") from err
        finally:
            if tmp_name is not None:
                try:
                    os.unlink(tmp_name)
                except OSError:
                    pass
        return target
