"""Logging set-up, done once in each entry point (CLI command, worker process).

The node's own log lines never contain patient name, ID or birth date (UIDs
are fine). Libraries are less careful: highdicom and pydicom warnings can quote
attribute values such as PatientName. So by default their warnings (logging
and ``warnings.warn``) are dropped and only their errors are logged; set
``log_library_warnings = true`` to see them when debugging.
"""

from __future__ import annotations

import logging

_LIBRARY_LOGGERS = ("highdicom", "pydicom", "py.warnings")


def configure_logging(level: str, *, log_library_warnings: bool = False) -> None:
    """Configure the root logger and the verbosity of DICOM libraries.

    Parameters
    ----------
    level : str
        Level of the node's loggers (``"DEBUG"``, ``"INFO"``, ``"WARNING"``...).
    log_library_warnings : bool
        Keep highdicom's and pydicom's warnings (they may quote patient data).
    """
    logging.basicConfig(
        level=level, format="%(asctime)s %(processName)s %(name)s %(levelname)s %(message)s"
    )
    logging.getLogger().setLevel(level)
    logging.captureWarnings(True)
    library_level = logging.WARNING if log_library_warnings else logging.ERROR
    for name in _LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(max(library_level, logging.getLevelName(level)))
    # APScheduler logs every sweep at INFO (several per second): only its warnings matter.
    logging.getLogger("apscheduler").setLevel(
        logging.DEBUG if level == "DEBUG" else logging.WARNING
    )
    # pynetdicom logs every association at INFO; keep that only when debugging.
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
