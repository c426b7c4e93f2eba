"""The durable job queue: idempotent enqueue, atomic claim, retries, recovery, transitions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from dicom_node.db.engine import make_engine, make_session_factory
from dicom_node.db.models import Job, JobState, Series, StateChange, Study, utcnow
from dicom_node.db.transitions import set_state
from dicom_node.errors import IllegalTransitionError
from dicom_node.jobs.queue import (
    can_requeue,
    cancel,
    claim_next,
    enqueue,
    instance_set_digest,
    mark_failed,
    mark_succeeded,
    recover_stale_jobs,
    requeue,
)
from dicom_node.retry import RetryPolicy


@pytest.fixture
def factory(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def series_id(factory):
    with factory.begin() as session:
        study = Study(study_instance_uid="1.2.3")
        session.add(study)
        session.flush()
        series = Series(study_id=study.id, series_instance_uid="1.2.3.4")
        session.add(series)
        session.flush()
        return series.id


def test_sqlite_runs_in_wal_mode(factory):
    with factory() as session:
        assert session.connection().exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_digest_is_order_independent():
    assert instance_set_digest(["1.2", "1.3"]) == instance_set_digest(["1.3", "1.2"])
    assert instance_set_digest(["1.2"]) != instance_set_digest(["1.2", "1.3"])


def test_enqueue_is_idempotent_per_series_pipeline_and_instance_set(factory, series_id):
    with factory.begin() as session:
        first, created = enqueue(
            session, series_id=series_id, pipeline="ich", digest="a", max_attempts=3
        )
        assert created
        again, created_again = enqueue(
            session, series_id=series_id, pipeline="ich", digest="a", max_attempts=3
        )
        assert not created_again and again.id == first.id
        other, created_other = enqueue(
            session, series_id=series_id, pipeline="ich", digest="b", max_attempts=3
        )
        assert created_other and other.id != first.id
    with factory() as session:
        assert len(session.scalars(select(Job)).all()) == 2


def test_a_job_is_claimed_once(factory, series_id):
    with factory.begin() as session:
        enqueue(session, series_id=series_id, pipeline="ich", digest="a", max_attempts=3)
    assert claim_next(factory, "w1") is not None
    assert claim_next(factory, "w2") is None
    with factory() as session:
        job = session.scalars(select(Job)).one()
        assert job.state == JobState.RUNNING and job.worker_id == "w1" and job.attempts == 1
        assert job.started_at is not None and job.started_at.tzinfo is not None


def test_failures_retry_with_backoff_then_fail(factory, series_id):
    with factory.begin() as session:
        enqueue(session, series_id=series_id, pipeline="ich", digest="a", max_attempts=2)
    job_id = claim_next(factory, "w1")
    with factory.begin() as session:
        job = session.get(Job, job_id)
        mark_failed(
            session,
            job,
            "OSError: disk",
            permanent=False,
            policy=RetryPolicy(base_s=30, jitter=0.0),
        )
        assert job.state == JobState.QUEUED
        assert job.not_before > utcnow() + timedelta(seconds=25)
    assert claim_next(factory, "w1") is None  # not due yet
    later = utcnow() + timedelta(seconds=31)
    assert claim_next(factory, "w1", now=later) == job_id
    with factory.begin() as session:
        job = session.get(Job, job_id)
        mark_failed(
            session,
            job,
            "OSError: disk",
            permanent=False,
            policy=RetryPolicy(base_s=30, jitter=0.0),
        )
        assert job.state == JobState.FAILED and "disk" in job.error


def test_permanent_error_fails_at_once(factory, series_id):
    with factory.begin() as session:
        enqueue(session, series_id=series_id, pipeline="ich", digest="a", max_attempts=5)
    job_id = claim_next(factory, "w1")
    with factory.begin() as session:
        job = session.get(Job, job_id)
        mark_failed(
            session,
            job,
            "SeriesLoadError: mixed orientation",
            permanent=True,
            policy=RetryPolicy(base_s=1, jitter=0.0),
        )
        assert job.state == JobState.FAILED


def test_stale_running_job_is_recovered(factory, series_id):
    with factory.begin() as session:
        enqueue(session, series_id=series_id, pipeline="ich", digest="a", max_attempts=3)
    job_id = claim_next(factory, "w1")
    with factory.begin() as session:
        assert recover_stale_jobs(session, heartbeat_timeout_s=60) == []
        recovered = recover_stale_jobs(session, 60, now=utcnow() + timedelta(seconds=61))
        assert recovered == [job_id]
        assert session.get(Job, job_id).state == JobState.QUEUED


def test_transitions_are_checked_and_logged(factory, series_id):
    with factory.begin() as session:
        job, _ = enqueue(session, series_id=series_id, pipeline="ich", digest="a", max_attempts=3)
        with pytest.raises(IllegalTransitionError):
            set_state(session, job, JobState.SUCCEEDED)
        with pytest.raises(IllegalTransitionError):
            mark_succeeded(session, job, {})
        cancel(session, job)
        requeue(session, job)
        assert job.state == JobState.QUEUED
    with factory() as session:
        states = [
            c.to_state
            for c in session.scalars(
                select(StateChange).where(StateChange.entity == "job").order_by(StateChange.id)
            )
        ]
        assert states == ["QUEUED", "CANCELED", "QUEUED"]


def test_a_job_of_a_purged_series_cannot_be_requeued(factory, series_id):
    """The rule lives in the queue, so CLI, web and any other caller keep it."""
    from dicom_node.db.models import Purge
    from dicom_node.errors import SeriesPurgedError

    with factory.begin() as session:
        job, _ = enqueue(session, series_id=series_id, pipeline="ich", digest="p", max_attempts=3)
        cancel(session, job)
        session.add(Purge(series_id=series_id, reason="retention"))
    with factory.begin() as session:
        job = session.scalars(select(Job)).one()
        assert not can_requeue(session, job)
        with pytest.raises(SeriesPurgedError, match="purged"):
            requeue(session, job)
        assert job.state == JobState.CANCELED


def test_a_queued_or_running_job_cannot_be_requeued(factory, series_id):
    """RUNNING -> QUEUED is legal for retries and recovery, not for an operator's requeue."""
    with factory.begin() as session:
        enqueue(session, series_id=series_id, pipeline="ich", digest="r", max_attempts=3)
    with factory.begin() as session:
        job = session.scalars(select(Job)).one()
        assert not can_requeue(session, job)
        with pytest.raises(IllegalTransitionError, match="QUEUED job cannot be requeued"):
            requeue(session, job)
    job_id = claim_next(factory, "w1")
    with factory.begin() as session:
        job = session.get(Job, job_id)
        assert not can_requeue(session, job)
        with pytest.raises(IllegalTransitionError, match="RUNNING job cannot be requeued"):
            requeue(session, job)
        assert job.state == JobState.RUNNING and job.attempts == 1
        mark_succeeded(session, job, {})
        assert can_requeue(session, job)


def test_a_long_traceback_keeps_its_head_and_its_end():
    from dicom_node.jobs.queue import TRACEBACK_MAX_CHARS, format_traceback

    def deep(n: int):  # distinct messages: Python folds only identical repeated frames
        if n == 0:
            raise ValueError("the last words")
        try:
            deep(n - 1)
        except ValueError as err:
            raise ValueError(f"level {n}") from err

    try:
        deep(60)
    except ValueError as err:
        text = format_traceback(err)
        whole = "".join(__import__("traceback").format_exception(err))
    assert len(whole) > TRACEBACK_MAX_CHARS
    assert len(text) < TRACEBACK_MAX_CHARS + 100
    assert text.startswith("Traceback (most recent call last):")
    assert "ValueError: the last words" in text  # the root cause, first in the chain
    assert text.rstrip().endswith("ValueError: level 60")  # what the job raised, at the end
    assert f"[... {len(whole) - TRACEBACK_MAX_CHARS} characters left out ...]" in text
