"""A durable job queue in the job database.

A job is claimed by a compare-and-set UPDATE (``WHERE id = ? AND state = 'QUEUED'``),
which is atomic on SQLite and PostgreSQL alike, so two workers never run the
same job. A running job heartbeats; :func:`recover_stale_jobs` returns jobs
whose worker stopped heartbeating to QUEUED (the rq "registry sweep").
Failures are retried after the delay of a :class:`~dicom_node.retry.RetryPolicy`
(``workers.*``: capped exponential backoff with jitter) up to the job's
``max_attempts``; a permanent error fails the job at once.
"""

from __future__ import annotations

import hashlib
import logging
import random
import traceback
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.db.models import Job, JobState, Purge, StateChange, utcnow
from dicom_node.db.transitions import log_initial_state, set_state
from dicom_node.errors import IllegalTransitionError, SeriesPurgedError
from dicom_node.retry import RetryPolicy

logger = logging.getLogger(__name__)

#: States an operator may requeue a job from (:func:`requeue`): finished or canceled runs.
#: RUNNING -> QUEUED is a legal transition, but only for the retry and recovery paths.
REQUEUEABLE_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED})


def instance_set_digest(sop_instance_uids: list[str]) -> str:
    """Return the SHA-256 hex digest of a set of SOPInstanceUIDs (order-independent).

    Together with the series, the pipeline and its algorithm version it
    identifies a job, so a series sent twice is analysed once.
    """
    joined = "\n".join(sorted(sop_instance_uids)).encode("ascii")
    return hashlib.sha256(joined).hexdigest()


def enqueue(
    session: Session,
    *,
    series_id: int,
    pipeline: str,
    digest: str,
    max_attempts: int,
    priority: int = 0,
    now: datetime | None = None,
    pipeline_version: str = "",
    max_instance_id: int | None = None,
) -> tuple[Job, bool]:
    """Create a QUEUED job unless the same (series, pipeline, version, digest) job exists.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Open session; the caller commits.
    series_id : int
        Series row id.
    pipeline : str
        Pipeline name.
    digest : str
        :func:`instance_set_digest` of the series' instances.
    max_attempts : int
        Attempts before the job is FAILED.
    priority : int
        Higher runs first.
    now : datetime or None
        Creation time (UTC).
    pipeline_version : str
        Algorithm (model) version of the pipeline: a new version analyses
        the same instance set again.
    max_instance_id : int or None
        Newest instance row of the set (the job analyses only rows up to it).

    Returns
    -------
    (Job, bool)
        The job and whether it was created now.
    """
    identity = (
        Job.series_id == series_id,
        Job.pipeline == pipeline,
        Job.pipeline_version == pipeline_version,
        Job.instance_set_digest == digest,
    )
    existing = session.scalar(select(Job).where(*identity))
    if existing is not None:
        return existing, False
    now = now or utcnow()
    job = Job(
        series_id=series_id,
        pipeline=pipeline,
        pipeline_version=pipeline_version,
        instance_set_digest=digest,
        max_instance_id=max_instance_id,
        state=JobState.QUEUED,
        priority=priority,
        max_attempts=max_attempts,
        not_before=now,
        created_at=now,
    )
    try:
        with session.begin_nested():
            session.add(job)
            session.flush()
    except IntegrityError:
        # A concurrent enqueue inserted the same job first: return that one. Without such a
        # row the insert broke another constraint, and that error is the real one.
        existing = session.scalar(select(Job).where(*identity))
        if existing is None:
            raise
        return existing, False
    log_initial_state(session, job, now=now)
    return job, True


def cancel_superseded(session: Session, job: Job, now: datetime | None = None) -> list[int]:
    """Cancel the QUEUED jobs of the same series and pipeline that ``job`` supersedes.

    A job still waiting in the queue when instances arrive would analyse a set
    that is no longer the series: the newer job, created for the new set,
    replaces it. A RUNNING job is left alone; its results are delivered and
    the newer job's results supersede them as the next result version.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Open session; the caller commits.
    job : Job
        The newer job (already flushed).
    now : datetime or None
        Time of the change (UTC).

    Returns
    -------
    list of int
        Ids of the jobs canceled.
    """
    older = session.scalars(
        select(Job).where(
            Job.series_id == job.series_id,
            Job.pipeline == job.pipeline,
            Job.state == JobState.QUEUED,
            Job.id < job.id,
        )
    ).all()
    for stale in older:
        set_state(
            session,
            stale,
            JobState.CANCELED,
            reason=f"superseded by job {job.id}: the series changed before it ran",
            now=now,
        )
        stale.finished_at = now or utcnow()
        logger.info("job %d superseded by job %d before it ran", stale.id, job.id)
    return [stale.id for stale in older]


def claim_next(
    session_factory: sessionmaker[Session], worker_id: str, now: datetime | None = None
) -> int | None:
    """Atomically claim the next due QUEUED job for ``worker_id``.

    Returns
    -------
    int or None
        The claimed job's id, or None when no job is due.
    """
    now = now or utcnow()
    with session_factory.begin() as session:
        candidates = session.scalars(
            select(Job.id)
            .where(Job.state == JobState.QUEUED, Job.not_before <= now)
            .order_by(Job.priority.desc(), Job.id)
            .limit(5)
        ).all()
        for job_id in candidates:
            result = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.state == JobState.QUEUED)
                .values(
                    state=JobState.RUNNING,
                    worker_id=worker_id,
                    heartbeat_at=now,
                    started_at=now,
                    attempts=Job.attempts + 1,
                    error=None,
                    error_traceback=None,
                    cancel_requested_at=None,
                )
                .execution_options(synchronize_session=False)
            )
            # A DML statement's result is a CursorResult (it has rowcount); execute() is
            # typed as Result.
            if cast(CursorResult[Any], result).rowcount == 1:
                session.add(
                    StateChange(
                        entity="job",
                        entity_id=job_id,
                        from_state="QUEUED",
                        to_state="RUNNING",
                        reason=f"claimed by {worker_id}",
                        at=now,
                    )
                )
                return job_id
    return None


def heartbeat(session_factory: sessionmaker[Session], job_id: int, worker_id: str) -> bool:
    """Refresh a running job's heartbeat; return False if the job is no longer ours."""
    with session_factory.begin() as session:
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.RUNNING, Job.worker_id == worker_id)
            .values(heartbeat_at=utcnow())
        )
        # A DML statement's result is a CursorResult (it has rowcount); execute() is typed
        # as Result.
        return cast(CursorResult[Any], result).rowcount == 1


def mark_succeeded(session: Session, job: Job, summary: dict, now: datetime | None = None) -> None:
    """RUNNING -> SUCCEEDED with the result summary (findings, result objects)."""
    now = now or utcnow()
    set_state(session, job, JobState.SUCCEEDED, now=now)
    job.result_summary = summary
    job.finished_at = now
    job.error = None
    job.error_traceback = None


#: Longest traceback kept with a failed job, in characters (its head and tail are kept).
TRACEBACK_MAX_CHARS = 8000
_TRACEBACK_HEAD_CHARS = 1500


def format_traceback(err: BaseException, max_chars: int = TRACEBACK_MAX_CHARS) -> str:
    """The formatted traceback of ``err`` (with its causes), at most about ``max_chars`` long.

    What :func:`traceback.format_exception` prints, without local variables:
    file names, line numbers, source lines and each exception's own text.
    Patient identifiers can only be in it where an exception's message holds
    them; the node's messages name UIDs, never patient names or IDs. A longer
    traceback keeps its first 1500 characters (where the job started) and its
    end (where it failed), with the number of characters left out between.

    Parameters
    ----------
    err : BaseException
        The exception the job raised.
    max_chars : int
        Characters kept from a longer traceback (> 1500).

    Returns
    -------
    str

    References
    ----------
    Python :mod:`traceback`, ``format_exception``.
    """
    text = "".join(traceback.format_exception(err))
    if len(text) <= max_chars:
        return text
    tail = max_chars - _TRACEBACK_HEAD_CHARS
    cut = len(text) - _TRACEBACK_HEAD_CHARS - tail
    return text[:_TRACEBACK_HEAD_CHARS] + f"\n[... {cut} characters left out ...]\n" + text[-tail:]


def mark_failed(
    session: Session,
    job: Job,
    error: str,
    *,
    permanent: bool,
    policy: RetryPolicy,
    error_traceback: str | None = None,
    now: datetime | None = None,
    rng: random.Random | None = None,
) -> None:
    """Record a failed attempt: back to QUEUED after the policy's delay, or FAILED.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Open session; the caller commits.
    job : Job
        A RUNNING job.
    error : str
        What went wrong, stored in ``job.error`` (first 4000 characters).
    permanent : bool
        True for a :class:`~dicom_node.errors.PermanentError`: no retry.
    policy : RetryPolicy
        Delay before the next attempt (``workers.retry_policy()``); the job
        row's own ``max_attempts`` decides when it is FAILED.
    error_traceback : str or None
        The failure's formatted traceback (:func:`format_traceback`), kept in
        ``job.error_traceback`` for admins until the next attempt starts.
    now : datetime or None
        Time of the failure (UTC).
    rng : random.Random or None
        Source of the jitter (tests).

    Raises
    ------
    IllegalTransitionError
        If the job is not RUNNING.
    """
    now = now or utcnow()
    job.error = error[:4000]
    job.error_traceback = error_traceback
    if permanent or job.attempts >= job.max_attempts:
        why = "permanent error" if permanent else f"{job.attempts} attempts"
        set_state(session, job, JobState.FAILED, reason=f"{why}: {error[:500]}", now=now)
        job.finished_at = now
    else:
        delay_s = policy.delay(job.attempts, rng)
        set_state(
            session,
            job,
            JobState.QUEUED,
            reason=f"attempt {job.attempts} failed, retry in {delay_s:.0f} s",
            now=now,
        )
        job.not_before = now + timedelta(seconds=delay_s)
    job.worker_id = None


def recover_stale_jobs(
    session: Session, heartbeat_timeout_s: float, now: datetime | None = None
) -> list[int]:
    """Return RUNNING jobs whose heartbeat is older than the timeout to QUEUED.

    A job an operator asked to cancel (:func:`cancel`) is CANCELED instead.

    Returns
    -------
    list of int
        Ids of the jobs recovered (requeued or, when a cancel was requested, canceled).
    """
    now = now or utcnow()
    limit = now - timedelta(seconds=heartbeat_timeout_s)
    stale = session.scalars(
        select(Job).where(Job.state == JobState.RUNNING, Job.heartbeat_at < limit)
    ).all()
    for job in stale:
        if job.cancel_requested_at is not None:  # the operator wanted it stopped anyway
            logger.warning("job %d: worker %s stopped heartbeating, canceled as requested",
                           job.id, job.worker_id)  # fmt: skip
            mark_canceled(session, job, f"when worker {job.worker_id} stopped heartbeating",
                          now=now)  # fmt: skip
            continue
        logger.warning("job %d: worker %s stopped heartbeating, requeued", job.id, job.worker_id)
        set_state(
            session,
            job,
            JobState.QUEUED,
            reason=f"worker {job.worker_id} stopped heartbeating",
            now=now,
        )
        job.worker_id = None
        job.not_before = now
    return [job.id for job in stale]


def series_purged(session: Session, job: Job) -> bool:
    """Whether retention purged the files of ``job``'s series (a Purge row exists)."""
    return session.scalar(select(Purge.id).where(Purge.series_id == job.series_id)) is not None


def can_requeue(session: Session, job: Job) -> bool:
    """Whether :func:`requeue` would accept ``job`` (the dashboard's Requeue button).

    True for a job in :data:`REQUEUEABLE_STATES` whose series' files are still there.
    """
    return job.state in REQUEUEABLE_STATES and not series_purged(session, job)


def requeue(session: Session, job: Job, now: datetime | None = None) -> None:
    """Put a finished or canceled job back in the queue with fresh attempts.

    This is the one place the operator's requeue rules are kept; the CLI and
    the dashboard call it and report its errors.

    Raises
    ------
    dicom_node.errors.SeriesPurgedError
        If retention purged the series' files (a Purge row): there is nothing
        left to analyse.
    dicom_node.errors.IllegalTransitionError
        If the job is not in :data:`REQUEUEABLE_STATES` (a QUEUED or RUNNING job).
    """
    if series_purged(session, job):
        raise SeriesPurgedError(
            f"the files of job {job.id}'s series were purged by retention; it cannot be "
            "analysed again"
        )
    if job.state not in REQUEUEABLE_STATES:
        raise IllegalTransitionError(f"job {job.id}: a {job.state} job cannot be requeued")
    now = now or utcnow()
    set_state(session, job, JobState.QUEUED, reason="requeued by an operator", now=now)
    job.attempts = 0
    job.not_before = now
    job.error = None
    job.error_traceback = None
    job.cancel_requested_at = None


def cancel(session: Session, job: Job, now: datetime | None = None) -> JobState:
    """Cancel a QUEUED job at once, or ask a RUNNING one to stop at its next stage boundary.

    A RUNNING job gets ``cancel_requested_at``; its worker checks it after
    loading the series, after inference, after writing the results and in
    the transaction that would record them, and then ends the job CANCELED
    (:func:`mark_canceled`) without result rows or deliveries, so nothing is
    exported. A pipeline's inference is not interrupted: a cancel during it
    takes effect when it returns. Asking again is harmless.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Session owning ``job``; the caller commits.
    job : Job
        The job to cancel.
    now : datetime or None
        Time of the request (UTC).

    Returns
    -------
    JobState
        CANCELED for a QUEUED job; RUNNING for a running one (cancel requested).

    Raises
    ------
    IllegalTransitionError
        If the job is SUCCEEDED, FAILED or CANCELED already.
    """
    now = now or utcnow()
    if job.state == JobState.RUNNING:
        if job.cancel_requested_at is None:
            job.cancel_requested_at = now
            logger.info("job %d: cancel requested while running on %s", job.id, job.worker_id)
        return job.state
    set_state(session, job, JobState.CANCELED, reason="canceled by an operator", now=now)
    job.finished_at = now
    return job.state


def cancel_requested(session_factory: sessionmaker[Session], job_id: int) -> bool:
    """Whether an operator asked the RUNNING job ``job_id`` to stop (:func:`cancel`)."""
    with session_factory() as session:
        return session.scalar(select(Job.cancel_requested_at).where(Job.id == job_id)) is not None


def mark_canceled(session: Session, job: Job, stage: str, now: datetime | None = None) -> None:
    """RUNNING -> CANCELED after a cancel request: the worker stopped at ``stage``.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Open session; the caller commits.
    job : Job
        A RUNNING job with ``cancel_requested_at`` set.
    stage : str
        Where the worker stopped (``"after load"``, ``"after inference"``, ...),
        put into the state change's reason.
    now : datetime or None
        Time of the change (UTC).

    Raises
    ------
    IllegalTransitionError
        If the job is not RUNNING.
    """
    now = now or utcnow()
    requested = job.cancel_requested_at.isoformat() if job.cancel_requested_at else "?"
    set_state(
        session,
        job,
        JobState.CANCELED,
        reason=f"canceled by an operator while running (requested {requested}); "
        f"stopped {stage}, no results recorded",
        now=now,
    )
    job.finished_at = now
    job.worker_id = None
