"""Log noise: a sweep that outlasts its interval is skipped silently, other warnings stay."""

from __future__ import annotations

import logging
import threading
import time

from apscheduler.schedulers.background import BackgroundScheduler

from dicom_node.logs import configure_logging


def _skipped_runs(caplog, level: str) -> list[str]:
    configure_logging(level)
    release = threading.Event()
    scheduler = BackgroundScheduler()
    scheduler.add_job(
        release.wait,
        "interval",
        seconds=0.2,
        max_instances=1,
        coalesce=True,
        args=(3.0,),
        id="slow-sweep",
    )
    with caplog.at_level(logging.DEBUG):
        scheduler.start()
        time.sleep(1.5)  # the job blocks; the scheduler tries to start it again several times
        release.set()
        scheduler.shutdown(wait=True)
        logging.getLogger("apscheduler.scheduler").warning("a warning that must stay")
    return [r.getMessage() for r in caplog.records if r.name == "apscheduler.scheduler"]


def test_skipped_run_warnings_are_dropped_unless_debugging(caplog):
    quiet = _skipped_runs(caplog, "INFO")
    assert not [m for m in quiet if "maximum number of running instances" in m], quiet
    assert "a warning that must stay" in quiet
    caplog.clear()
    debug = _skipped_runs(caplog, "DEBUG")
    assert [m for m in debug if "maximum number of running instances" in m], debug
    configure_logging("INFO")
