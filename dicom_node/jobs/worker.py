"""The worker loop: claim a job, run it while heartbeating, record the outcome.

Outcomes: SUCCEEDED (results recorded with their deliveries), a retry or
FAILED after an exception (with its traceback), or CANCELED when an operator
canceled the running job (:func:`dicom_node.jobs.queue.cancel`): the executor
raises :class:`~dicom_node.errors.JobCanceledError` at a stage boundary, and
the transaction that would record the results checks the request once more.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from dicom_node.config import WorkerSettings
from dicom_node.db.models import Job, JobState
from dicom_node.errors import JobCanceledError, PermanentError
from dicom_node.jobs.queue import (
    claim_next,
    format_traceback,
    heartbeat,
    mark_canceled,
    mark_failed,
    mark_succeeded,
)

logger = logging.getLogger(__name__)


class StopFlag(Protocol):
    """``threading.Event`` or ``multiprocessing.Event``."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


def _heartbeat_until(
    done: threading.Event,
    session_factory: sessionmaker[Session],
    job_id: int,
    worker_id: str,
    interval_s: float,
) -> None:
    while not done.wait(interval_s):
        try:
            if not heartbeat(session_factory, job_id, worker_id):
                logger.warning("job %d is no longer ours (canceled or recovered)", job_id)
                return
        except Exception:  # a missed heartbeat must not kill the worker
            logger.exception("heartbeat of job %d failed", job_id)


def run_one(
    session_factory: sessionmaker[Session],
    execute: Callable[[int], Any],
    record: Callable[[Session, Job, Any], dict],
    *,
    worker_id: str,
    settings: WorkerSettings,
) -> int | None:
    """Claim and run at most one job.

    Parameters
    ----------
    session_factory : sqlalchemy.orm.sessionmaker
        Sessions on the job database.
    execute : callable
        ``execute(job_id) -> output``: the work (outside any DB transaction).
    record : callable
        ``record(session, job, output) -> summary``: stores the output's rows in
        the same transaction that marks the job SUCCEEDED.
    worker_id : str
        Identifies this worker in the job row and the logs.
    settings : WorkerSettings
        Heartbeat interval and the retry policy (:meth:`WorkerSettings.retry_policy`).

    Returns
    -------
    int or None
        The id of the job run, or None if none was due.
    """
    job_id = claim_next(session_factory, worker_id)
    if job_id is None:
        return None
    logger.info("worker %s runs job %d", worker_id, job_id)
    done = threading.Event()
    beat = threading.Thread(
        target=_heartbeat_until,
        args=(done, session_factory, job_id, worker_id, settings.heartbeat_interval_s),
        daemon=True,
    )
    beat.start()
    job: Job | None  # the row, looked up again after the run (it may be gone by then)
    try:
        output = execute(job_id)
    except JobCanceledError as err:
        done.set()
        with session_factory.begin() as session:
            job = session.get_one(Job, job_id)
            if job.state == JobState.RUNNING and job.worker_id == worker_id:
                mark_canceled(session, job, err.stage)
        logger.info("job %d canceled by an operator (stopped %s)", job_id, err.stage)
        return job_id
    except Exception as err:  # noqa: BLE001 - every failure is recorded on the job
        done.set()
        permanent = isinstance(err, PermanentError)
        message = f"{err.__class__.__name__}: {err}"
        logger.error(
            "job %d failed (%s): %s", job_id, "permanent" if permanent else "will retry", message
        )
        with session_factory.begin() as session:
            job = session.get(Job, job_id)
            if job is None:  # its row was deleted while it ran: nothing to record the failure on
                logger.warning("job %d is gone from the database; its failure is not recorded",
                               job_id)  # fmt: skip
            elif job.state != JobState.RUNNING or job.worker_id != worker_id:
                pass
            elif job.cancel_requested_at is not None:  # no retry for a job the operator stopped
                mark_canceled(session, job, f"when the attempt failed ({message[:200]})")
            else:
                mark_failed(
                    session,
                    job,
                    message,
                    permanent=permanent,
                    policy=settings.retry_policy(),
                    error_traceback=format_traceback(err),
                )
        return job_id
    finally:
        done.set()
        beat.join(timeout=5)
    with session_factory.begin() as session:
        job = session.get(Job, job_id)
        if job is None:  # its row was deleted while it ran
            logger.warning("job %d finished but is gone from the database; its output is "
                           "discarded", job_id)  # fmt: skip
            return job_id
        if job.state != JobState.RUNNING or job.worker_id != worker_id:
            logger.warning(
                "job %d finished but is %s now; its output is discarded", job_id, job.state
            )
            return job_id
        if job.cancel_requested_at is not None:  # the last boundary: nothing recorded or sent
            mark_canceled(session, job, "before export")
            logger.info("job %d canceled by an operator before its results were recorded",
                        job_id)  # fmt: skip
            return job_id
        summary = record(session, job, output)
        mark_succeeded(session, job, summary)
    logger.info("job %d succeeded", job_id)
    return job_id


def run_worker(
    session_factory: sessionmaker[Session],
    execute: Callable[[int], Any],
    record: Callable[[Session, Job, Any], dict],
    *,
    worker_id: str,
    settings: WorkerSettings,
    stop: StopFlag,
) -> None:
    """Run jobs until ``stop`` is set, polling every ``settings.poll_interval_s`` when idle."""
    logger.info("worker %s started", worker_id)
    while not stop.is_set():
        try:
            ran = run_one(session_factory, execute, record, worker_id=worker_id, settings=settings)
        except Exception:  # e.g. database briefly unavailable
            logger.exception("worker %s: claiming or recording a job failed", worker_id)
            ran = None
        if ran is None:
            stop.wait(settings.poll_interval_s)
    logger.info("worker %s stopped", worker_id)
