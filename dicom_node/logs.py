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


class SkippedRunFilter(logging.Filter):
    """Drop APScheduler's "skipped: maximum number of running instances reached" warnings.

    A sweep that is still running when its next interval comes is skipped on
    purpose (``max_instances=1, coalesce=True``): the next run catches up. In
    normal work that happens many times an hour and says nothing an admin can
    act on. With ``level = "DEBUG"`` the records pass.

    References
    ----------
    APScheduler 3 ``BaseScheduler._process_jobs`` (the warning and
    ``EVENT_JOB_MAX_INSTANCES``).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Return False for the skipped-run warning, True for every other record."""
        return "maximum number of running instances reached" not in str(record.msg)


_SKIPPED_RUN_FILTER = SkippedRunFilter()


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
    scheduler_logger = logging.getLogger("apscheduler.scheduler")
    if level == "DEBUG":
        scheduler_logger.removeFilter(_SKIPPED_RUN_FILTER)
    else:
        scheduler_logger.addFilter(_SKIPPED_RUN_FILTER)
    # pynetdicom logs every association at INFO; keep that only when debugging.
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
