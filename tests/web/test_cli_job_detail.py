"""``dicom-node jobs show --json`` is the document ``/api/jobs/{id}`` serves (issue 14 item 2).

The CLI used to build its own job detail: its timeline had only the series and
job state changes, the web's also the deliveries, notifications and milestones.
Both now print :func:`dicom_node.queries.job_detail_document`. The job here
has a failed attempt and a retry, two result objects, a delivery that was
retried before it was sent and a webhook notification, written through the
queue and transition functions the node uses, with fixed timestamps.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from dicom_node.cli import app as cli_app
from dicom_node.db.engine import make_engine, make_session_factory
from dicom_node.db.models import (
    Delivery,
    DeliveryState,
    Job,
    Notification,
    NotificationState,
    ResultObject,
    Series,
    SeriesState,
    StateChange,
    Study,
)
from dicom_node.db.transitions import set_state
from dicom_node.jobs import queue
from dicom_node.retry import RetryPolicy
from dicom_node.web import create_app
from tests.web.conftest import PASSWORD, add_user, csrf_token, node_settings

T0 = datetime(2025, 3, 4, 10, 0, 0, tzinfo=UTC)
SERIES_UID = "1.2.826.0.1.3680043.8.498.1001"
FINDINGS = [{"label": "intracranial hemorrhage", "present": True, "volume_ml": 10.123456}]


def at(seconds: float) -> datetime:
    """``T0`` plus ``seconds``."""
    return T0 + timedelta(seconds=seconds)


def seed_job_history(session_factory) -> int:
    """One series, one job with a retried attempt, results, deliveries and a webhook; its id."""
    with session_factory.begin() as session:
        study = Study(study_instance_uid="1.2.826.0.1.3680043.8.498.1000",
                      accession_number="ACC42", study_date="20250304")  # fmt: skip
        session.add(study)
        session.flush()
        series = Series(study_id=study.id, series_instance_uid=SERIES_UID, modality="CT",
                        series_description="HEAD 5mm", instance_count=28,
                        first_instance_at=at(0), last_instance_at=at(4),
                        completion_basis="quiet for 2 s")  # fmt: skip
        session.add(series)
        session.flush()
        session.add(StateChange(entity="series", entity_id=series.id, from_state=None,
                                to_state="RECEIVING", at=at(0)))  # fmt: skip
        set_state(session, series, SeriesState.COMPLETE, reason="quiet for 2 s", now=at(6))
        set_state(session, series, SeriesState.DISPATCHED, reason="pipeline ich", now=at(6.5))
        job, _ = queue.enqueue(session, series_id=series.id, pipeline="ich", digest="d1",
                               max_attempts=3, now=at(6.5))  # fmt: skip
        job_id = job.id
    assert queue.claim_next(session_factory, "host:1:w0", now=at(7)) == job_id
    with session_factory.begin() as session:
        job = session.get(Job, job_id)
        queue.mark_failed(session, job, "out of memory", permanent=False,
                          policy=RetryPolicy(base_s=2.0, jitter=0.0), now=at(9))  # fmt: skip
    assert queue.claim_next(session_factory, "host:1:w1", now=at(12)) == job_id
    with session_factory.begin() as session:
        job = session.get(Job, job_id)
        summary = {"algorithm": {"name": "ich-resunet 1.2.0"}, "findings": FINDINGS,
                   "details": {"any_ich_probability": 0.987654321}}  # fmt: skip
        queue.mark_succeeded(session, job, summary, now=at(20))
        for n, kind in enumerate(("SEG", "SR")):
            obj = ResultObject(job_id=job_id, kind=kind, sop_class_uid="1.2.840.10008.5.1.4.1.1",
                               sop_instance_uid=f"1.2.826.0.1.3680043.8.498.20{n}",
                               series_instance_uid=f"1.2.826.0.1.3680043.8.498.30{n}",
                               study_instance_uid=study_uid(session, job),
                               path=f"{job_id}/{kind.lower()}.dcm", size_bytes=1000 + n,
                               created_at=at(20))  # fmt: skip
            session.add(obj)
            session.flush()
            delivery = Delivery(result_object_id=obj.id, destination="PACS", created_at=at(20),
                                next_attempt_at=at(20))  # fmt: skip
            session.add(delivery)
            session.flush()
            if kind == "SEG":
                delivery.attempts = 1
                delivery.last_error = "association rejected"
                set_state(session, delivery, DeliveryState.RETRYING,
                          reason="association rejected", now=at(21))  # fmt: skip
            delivery.attempts += 1
            delivery.sent_at = at(25 + n)
            set_state(session, delivery, DeliveryState.SENT, now=at(25 + n))
        session.add(Notification(job_id=job_id, webhook="ward", state=NotificationState.SENT,
                                 attempts=1, response_status=200, created_at=at(20),
                                 sent_at=at(22)))  # fmt: skip
    return job_id


def study_uid(session, job: Job) -> str:
    """The Study Instance UID of a job's series."""
    return session.get(Series, job.series_id).study.study_instance_uid


@pytest.fixture
def node(tmp_path):
    """Settings, a session factory and the seeded job's id, with the viewer ``vic``."""
    settings = node_settings(tmp_path)
    engine = make_engine(settings.storage.url)
    factory = make_session_factory(engine)
    job_id = seed_job_history(factory)
    add_user(settings, "vic", "viewer")
    yield settings, factory, job_id
    engine.dispose()


def cli(settings, *args: str):
    """Run ``dicom-node ARGS`` against the node's database."""
    return CliRunner().invoke(
        cli_app, list(args),
        env={"DICOM_NODE_STORAGE__BASE_DIR": str(settings.storage.base_dir)},
    )  # fmt: skip


def test_jobs_show_json_is_the_web_api_document(node):
    settings, factory, job_id = node
    client = TestClient(create_app(settings, factory))
    page = client.get("/login")
    assert client.post("/login", data={"username": "vic", "password": PASSWORD, "next": "/",
                                       "csrf_token": csrf_token(page.text)},
                       follow_redirects=False).status_code == 303  # fmt: skip
    response = client.get(f"/api/jobs/{job_id}")
    assert response.status_code == 200, response.text
    shown = cli(settings, "jobs", "show", str(job_id), "--json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output) == response.json()
    # The document has what the CLI's own used to lack: deliveries, the webhook, the stages.
    whats = [e["what"] for e in response.json()["timeline"]]
    assert whats[0] == "first instance received"
    assert "SEG delivery retrying (PACS)" in whats and "SR delivered (PACS)" in whats
    assert "webhook ward notified" in whats
    assert [e["to"] for e in response.json()["timeline"] if e["entity"] == "job"] == [
        "QUEUED", "RUNNING", "QUEUED", "RUNNING", "SUCCEEDED",
    ]  # fmt: skip
    assert response.json()["stages_s"]["total"] == pytest.approx(22.0)


def test_jobs_show_text_renders_the_same_timeline(node):
    settings, factory, job_id = node
    shown = cli(settings, "jobs", "show", str(job_id))
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0] == f"job {job_id}  SUCCEEDED  pipeline ich (ich-resunet 1.2.0)  attempts 2"
    assert lines[1] == f"series {SERIES_UID}  28 instances"
    timeline = lines[lines.index("timeline:") + 1 :]
    assert timeline[0].startswith(f"  {at(0).isoformat()}  series ")
    assert any("job      RUNNING      -> QUEUED       attempt 1 failed" in x for x in timeline)
    assert any("delivery RETRYING     -> SENT" in x for x in timeline)
    assert any("webhook ward notified" in x for x in timeline)
    assert any(x.endswith("-> PACS: SENT after 2 attempt(s); association rejected")
               for x in lines)  # fmt: skip


def test_jobs_show_of_an_unknown_job_exits_1(node):
    settings, _, _ = node
    shown = cli(settings, "jobs", "show", "424242")
    assert shown.exit_code == 1
    assert "error: no job 424242" in shown.output
