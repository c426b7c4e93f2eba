"""The read functions the CLI's list commands moved into the library (issue 14 item 2).

``jobs list``'s not-eligible series, ``series list``, ``users list`` and the
demo's wait read the job database through :mod:`dicom_node.queries`,
:mod:`dicom_node.users` and :mod:`dicom_node.demo`; these tests hold those
functions to what the commands printed before.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dicom_node import demo
from dicom_node.db.engine import make_engine, make_session_factory
from dicom_node.db.models import JobState, Series, SeriesState, Study
from dicom_node.db.transitions import set_state
from dicom_node.errors import ConfigurationError
from dicom_node.jobs import queue
from dicom_node.queries import (
    latest_job_of_series,
    list_series,
    not_eligible_series,
    result_objects_of_job,
    series_summary,
)
from dicom_node.retry import RetryPolicy
from dicom_node.users import create_user, list_users, user_summary

T0 = datetime(2025, 3, 4, 10, 0, 0, tzinfo=UTC)


@pytest.fixture
def factory(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    yield make_session_factory(engine)
    engine.dispose()


def add_series(session, uid: str, last_s: float, *, refused: str | None = None) -> Series:
    """A series whose last instance came ``last_s`` after T0; NOT_ELIGIBLE when ``refused``."""
    study = Study(study_instance_uid=uid + ".0")
    session.add(study)
    session.flush()
    series = Series(study_id=study.id, series_instance_uid=uid, modality="CT",
                    series_description="HEAD", instance_count=3, first_instance_at=T0,
                    last_instance_at=T0 + timedelta(seconds=last_s))  # fmt: skip
    session.add(series)
    session.flush()
    set_state(session, series, SeriesState.COMPLETE)
    if refused:
        set_state(session, series, SeriesState.NOT_ELIGIBLE, reason=refused)
        series.state_reason = refused
    return series


def test_not_eligible_series_are_newest_first_and_filtered_by_their_last_instance(factory):
    with factory.begin() as session:
        add_series(session, "1.2.3.1", 10, refused="ImageType contains LOCALIZER")
        add_series(session, "1.2.3.2", 20)
        add_series(session, "1.2.3.3", 30, refused="BodyPartExamined 'CHEST'")
    with factory() as session:
        rows = not_eligible_series(session)
        assert [r["series_instance_uid"] for r in rows] == ["1.2.3.3", "1.2.3.1"]
        assert rows[1] == {"series_instance_uid": "1.2.3.1", "state": "NOT_ELIGIBLE",
                           "modality": "CT", "series_description": "HEAD",
                           "reason": "ImageType contains LOCALIZER"}  # fmt: skip
        since = T0 + timedelta(seconds=15)
        assert [r["series_instance_uid"] for r in not_eligible_series(session, since=since)] == [
            "1.2.3.3"
        ]
        assert len(not_eligible_series(session, limit=1)) == 1
        page, total = list_series(session, limit=2)
        assert total == 3
        assert [series_summary(s)["series_instance_uid"] for s, _ in page] == [
            "1.2.3.3", "1.2.3.2",
        ]  # fmt: skip
        assert series_summary(page[0][0])["last_instance_at"] == "2025-03-04T10:00:30+00:00"


def test_latest_job_of_series_is_the_newest_and_demo_waits_for_it(factory):
    with factory.begin() as session:
        series = add_series(session, "1.2.3.9", 5)
        first, _ = queue.enqueue(session, series_id=series.id, pipeline="ich", digest="a",
                                 max_attempts=1)  # fmt: skip
        second, _ = queue.enqueue(session, series_id=series.id, pipeline="ich", digest="b",
                                  max_attempts=1)  # fmt: skip
        assert latest_job_of_series(session, "1.2.3.9").id == second.id
        assert latest_job_of_series(session, "9.9.9") is None
        assert result_objects_of_job(session, second.id) == []
        queue.cancel(session, first)
    # The newest job is still QUEUED: the wait gives up and reports nothing finished.
    assert demo.wait_for_finished_jobs(factory, {"case": "1.2.3.9"}, timeout_s=0.6) == {}
    job_id = queue.claim_next(factory, "w")
    with factory.begin() as session:
        job = session.get(type(second), job_id)
        queue.mark_failed(
            session, job, "boom", permanent=True, policy=RetryPolicy(base_s=1.0, jitter=0.0)
        )
        assert job.state == JobState.FAILED
    assert demo.wait_for_finished_jobs(factory, {"case": "1.2.3.9"}, timeout_s=5) == {
        "case": job_id
    }


def test_demo_empties_only_its_own_folder(tmp_path):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(ConfigurationError, match="is not a demo folder"):
        demo.prepare_workdir(foreign)
    assert (foreign / "holiday.jpg").exists()
    work = tmp_path / "demo"
    demo.prepare_workdir(work)
    (work / "db.sqlite").write_bytes(b"old run")
    demo.prepare_workdir(work)
    assert sorted(p.name for p in work.iterdir()) == [demo.MARKER_NAME]


def test_user_rows_are_ordered_by_name_and_carry_no_password_hash(factory):
    with factory.begin() as session:
        create_user(session, "vic", "a long enough password", "viewer")
        create_user(session, "ada", "a long enough password", "admin")
    with factory() as session:
        rows = [user_summary(u) for u in list_users(session)]
    assert [(r["username"], r["role"], r["last_login_at"]) for r in rows] == [
        ("ada", "admin", None), ("vic", "viewer", None),
    ]  # fmt: skip
    assert set(rows[0]) == {"username", "role", "created_at", "last_login_at"}
