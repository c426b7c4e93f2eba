"""Operations without a browser: webhooks, retention, stage durations, the job database CLI.

Series are ingested from the real files through the same ingest as C-STORE; job
outcomes are recorded with the queue's own functions, so the rows are those the node
writes. Webhooks are received by a real HTTP server on loopback.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import pydicom
from prometheus_client import generate_latest
from sqlalchemy import select
from typer.testing import CliRunner

from dicom_node.cli import app as cli_app
from dicom_node.db.engine import make_engine, make_session_factory
from dicom_node.db.models import (
    Delivery,
    DeliveryState,
    Instance,
    Job,
    JobState,
    Notification,
    NotificationState,
    Purge,
    ResultObject,
    Series,
    SeriesState,
    StateChange,
    utcnow,
)
from dicom_node.db.transitions import log_initial_state, set_state
from dicom_node.jobs.dispatch import sweep_series
from dicom_node.jobs.queue import claim_next, mark_failed, mark_succeeded, requeue
from dicom_node.metrics import make_registry
from dicom_node.notifications import queue_notifications, send_due_notifications
from dicom_node.receive.header import parse_header
from dicom_node.receive.ingest import InstanceIngest
from dicom_node.receive.spool import Spool
from dicom_node.retention import purge
from dicom_node.retry import RetryPolicy
from dicom_node.series.volume import read_datasets
from dicom_node.stats import milestones_for_jobs
from dicom_node.training.synthetic import with_new_uids
from tests.web.conftest import PASSWORD, encode, node_settings

POSITIVE = {
    "pipeline": "ich",
    "algorithm": {"name": "ich-baseline", "version": "test"},
    "findings": [{"label": "intracranial hemorrhage", "present": True, "volume_ml": 9.7}],
}
NEGATIVE = {**POSITIVE, "findings": [{**POSITIVE["findings"][0], "present": False}]}


class Db:
    """A job database of a test node with helpers to put series and jobs in chosen states."""

    def __init__(self, base: Path, **overrides) -> None:
        self.settings = node_settings(base, **overrides)
        self.session_factory = make_session_factory(make_engine(self.settings.storage.url))
        self.ingest = InstanceIngest(Spool(self.settings.storage.spool_path), self.session_factory)
        self.env = {"DICOM_NODE_STORAGE__BASE_DIR": str(base)}

    def ingest_files(self, datasets) -> str:
        for ds in datasets:
            data = encode(ds)
            self.ingest.store(parse_header(data), data, "CT_SCANNER_1")
        return str(datasets[0].SeriesInstanceUID)

    def succeed_next(self, summary: dict, *, webhooks=(), delivery_states=()) -> int:
        """Claim the next job, mark it SUCCEEDED with one SEG whose deliveries end as given."""
        job_id = claim_next(self.session_factory, "test:w0")
        assert job_id is not None
        outbox = self.settings.storage.outbox_path
        with self.session_factory.begin() as session:
            job = session.get(Job, job_id)
            mark_succeeded(session, job, summary)
            obj = ResultObject(
                job_id=job_id, kind="SEG", sop_class_uid="1.2.840.10008.5.1.4.1.1.66.4",
                sop_instance_uid=f"2.25.{job_id}{time.monotonic_ns()}",
                series_instance_uid="2.25.1", study_instance_uid="2.25.2",
                path=f"2.25.2/2.25.1/seg-{job_id}.dcm", size_bytes=4, created_at=utcnow(),
            )  # fmt: skip
            session.add(obj)
            session.flush()
            (outbox / obj.path).parent.mkdir(parents=True, exist_ok=True)
            (outbox / obj.path).write_bytes(b"SEG!")
            for index, state in enumerate(delivery_states):
                delivery = Delivery(result_object_id=obj.id, destination=f"pacs{index}")
                session.add(delivery)
                session.flush()
                log_initial_state(session, delivery)
                set_state(session, delivery, state, reason="test")
                if state == DeliveryState.SENT:
                    delivery.sent_at = utcnow()
            queue_notifications(session, job, summary, list(webhooks))
        return job_id

    def cli(self, *args: str, input: str | None = None):
        return CliRunner().invoke(cli_app, list(args), env=self.env, input=input)


def head_series(head_ct_dir: Path, seed: int, count: int = 12):
    """``count`` slices of the real head CT with new UIDs (a new eligible series)."""
    return with_new_uids(read_datasets(sorted(head_ct_dir.glob("*.dcm"))[:count]), seed=seed)


def test_a_positive_finding_is_posted_with_retries_and_without_patient_identifiers(
    tmp_path, head_ct_dir, webhook_server
):
    hooks = [
        {"name": "team", "url": webhook_server.url, "backoff_initial_s": 0.05, "max_attempts": 3},
        {"name": "ris", "url": webhook_server.url, "include_patient_identifiers": True},
    ]
    db = Db(tmp_path, notifications={"webhooks": hooks})
    datasets = head_series(head_ct_dir, seed=1)
    db.ingest_files(datasets)
    sweep_series(db.session_factory, db.settings)
    webhooks = db.settings.notifications.webhooks
    job_id = db.succeed_next(POSITIVE, webhooks=webhooks)
    webhook_server.statuses[:] = [503]  # the first attempt meets a busy receiver
    # One attempt per sweep: "team" is retried at a later sweep, "ris" is sent now.
    assert send_due_notifications(db.session_factory, db.settings) == {"PENDING": 1, "SENT": 1}
    with db.session_factory() as session:
        team = session.scalars(select(Notification).where(Notification.webhook == "team")).one()
    assert team.attempts == 1 and team.last_error.startswith("HTTP 503")
    time.sleep(0.06)  # backoff_initial_s = 0.05: the retry is due
    assert send_due_notifications(db.session_factory, db.settings) == {"SENT": 1}
    with db.session_factory() as session:
        rows = {n.webhook: n for n in session.scalars(select(Notification))}
    assert rows["team"].state == NotificationState.SENT and rows["team"].attempts == 2
    assert rows["team"].response_status == 200 and rows["team"].last_error is None
    assert rows["ris"].attempts == 1
    identified, plain = webhook_server.received
    assert plain["event"] == "dicom-node.finding.positive" and plain["job_id"] == job_id
    assert plain["findings"][0]["present"] is True
    assert plain["series_instance_uid"] == str(datasets[0].SeriesInstanceUID)
    assert "patient" not in plain
    original = pydicom.dcmread(sorted(head_ct_dir.glob("*.dcm"))[0], stop_before_pixels=True)
    for value in (str(original.PatientName), str(original.PatientID)):
        if value:
            assert value.encode() not in webhook_server.raw[1]  # the plain message
    assert identified["patient"]["patient_id"] == str(datasets[0].PatientID)
    # Sent once: another sweep sends nothing, and a requeued job that succeeds again is not
    # announced twice.
    assert send_due_notifications(db.session_factory, db.settings) == {}
    with db.session_factory.begin() as session:
        job = session.get(Job, job_id)
        requeue(session, job)
    db.succeed_next(POSITIVE, webhooks=webhooks)
    assert send_due_notifications(db.session_factory, db.settings) == {}
    assert len(webhook_server.received) == 2


def test_a_refusing_webhook_fails_without_retry_and_negatives_are_not_sent(
    tmp_path, head_ct_dir, webhook_server
):
    db = Db(tmp_path, notifications={"webhooks": [
        {"name": "team", "url": webhook_server.url, "backoff_initial_s": 0.01}]})  # fmt: skip
    db.ingest_files(head_series(head_ct_dir, seed=2))
    db.ingest_files(head_series(head_ct_dir, seed=3))
    sweep_series(db.session_factory, db.settings)
    webhooks = db.settings.notifications.webhooks
    db.succeed_next(NEGATIVE, webhooks=webhooks)
    db.succeed_next(POSITIVE, webhooks=webhooks)
    webhook_server.statuses[:] = [404]
    assert send_due_notifications(db.session_factory, db.settings) == {"FAILED": 1}
    with db.session_factory() as session:
        (row,) = session.scalars(select(Notification)).all()
    assert row.attempts == 1 and row.last_error.startswith("HTTP 404")
    assert webhook_server.received == []


def test_a_failing_webhook_gets_the_message_on_the_third_sweep_without_blocking_one(
    tmp_path, head_ct_dir, webhook_server
):
    """Two 503s, then 200: one attempt per sweep, the backoff waited between sweeps, not in one.

    With a 2 s backoff (no jitter), tenacity inside the sweep would have slept 2 + 4 s in
    the first sweep; here every sweep returns at once and the retries wait in the database.
    """
    hooks = [{"name": "team", "url": webhook_server.url, "max_attempts": 5,
              "backoff_initial_s": 2.0, "backoff_max_s": 4.0, "backoff_jitter": 0}]  # fmt: skip
    db = Db(tmp_path, notifications={"webhooks": hooks})
    db.ingest_files(head_series(head_ct_dir, seed=4))
    sweep_series(db.session_factory, db.settings)
    job_id = db.succeed_next(POSITIVE, webhooks=db.settings.notifications.webhooks)
    webhook_server.statuses[:] = [503, 503]
    t0 = utcnow()

    def sweep(at_s: float) -> tuple[dict, float, Notification]:
        started = time.monotonic()
        counts = send_due_notifications(
            db.session_factory, db.settings, now=t0 + timedelta(seconds=at_s)
        )
        took = time.monotonic() - started
        with db.session_factory() as session:
            return counts, took, session.scalars(select(Notification)).one()

    counts, took, row = sweep(0)  # attempt 1: 503
    assert counts == {"PENDING": 1} and took < 1.0
    assert row.attempts == 1 and row.next_attempt_at == t0 + timedelta(seconds=2)
    assert "HTTP 503" in row.last_error and "next attempt in 2.0 s" in row.last_error
    counts, took, row = sweep(1.0)  # not due yet: nothing is sent, nothing waits
    assert counts == {} and took < 1.0 and row.attempts == 1
    counts, took, row = sweep(2.0)  # attempt 2: 503, the next one 4 s later (the cap)
    assert counts == {"PENDING": 1} and took < 1.0
    assert row.attempts == 2 and row.next_attempt_at == t0 + timedelta(seconds=6)
    assert webhook_server.received == []
    counts, took, row = sweep(6.0)  # attempt 3: delivered
    assert counts == {"SENT": 1} and took < 1.0
    assert row.state == NotificationState.SENT and row.attempts == 3
    assert row.response_status == 200 and row.last_error is None
    assert [m["job_id"] for m in webhook_server.received] == [job_id]
    assert sweep(60.0)[0] == {}  # sent once


def test_a_webhook_that_keeps_failing_is_failed_after_its_attempts(
    tmp_path, head_ct_dir, webhook_server
):
    hooks = [{"name": "team", "url": webhook_server.url, "max_attempts": 2,
              "backoff_initial_s": 1.0, "backoff_jitter": 0}]  # fmt: skip
    db = Db(tmp_path, notifications={"webhooks": hooks})
    db.ingest_files(head_series(head_ct_dir, seed=5))
    sweep_series(db.session_factory, db.settings)
    db.succeed_next(POSITIVE, webhooks=db.settings.notifications.webhooks)
    webhook_server.statuses[:] = [500, 500, 500]
    t0 = utcnow()
    assert send_due_notifications(db.session_factory, db.settings, now=t0) == {"PENDING": 1}
    assert send_due_notifications(
        db.session_factory, db.settings, now=t0 + timedelta(seconds=1)
    ) == {"FAILED": 1}
    with db.session_factory() as session:
        row = session.scalars(select(Notification)).one()
    assert row.attempts == 2 and row.last_error.startswith("HTTP 500")
    assert webhook_server.statuses == [500]  # no third attempt


def test_retention_purges_delivered_old_files_and_keeps_rows(tmp_path, head_ct_dir, shared_data):
    db = Db(tmp_path)
    delivered = db.ingest_files(head_series(head_ct_dir, seed=4))
    dead = db.ingest_files(head_series(head_ct_dir, seed=5))
    localizer = [
        pydicom.dcmread(p) for p in sorted((shared_data / "head-phantom-philips/S1000").iterdir())
    ]
    not_eligible = db.ingest_files(localizer)
    sweep_series(db.session_factory, db.settings)
    receiving = db.ingest_files(head_series(head_ct_dir, seed=6))
    first = db.succeed_next(POSITIVE, delivery_states=[DeliveryState.SENT, DeliveryState.SENT])
    db.succeed_next(NEGATIVE, delivery_states=[DeliveryState.SENT, DeliveryState.DEAD])
    with db.session_factory() as session:
        states = {s.series_instance_uid: s.state for s in session.scalars(select(Series))}
        spool_before = {uid: [i.path for i in session.scalars(
            select(Instance).join(Series).where(Series.series_instance_uid == uid))]
            for uid in states}  # fmt: skip
    assert states[not_eligible] == SeriesState.NOT_ELIGIBLE
    assert states[receiving] == SeriesState.RECEIVING
    spool = db.settings.storage.spool_path
    assert purge(db.session_factory, db.settings, dry_run=True) == []  # nothing is old yet
    later = utcnow() + timedelta(days=31)
    planned = purge(db.session_factory, db.settings, dry_run=True, now=later)
    assert {c.series_instance_uid for c in planned} == {delivered, not_eligible}
    assert all((spool / p).exists() for p in spool_before[delivered])
    purged = purge(db.session_factory, db.settings, now=later)
    assert {c.series_instance_uid for c in purged} == {delivered, not_eligible}
    for uid in (delivered, not_eligible):
        assert not any((spool / p).exists() for p in spool_before[uid])
    for uid in (dead, receiving):
        assert all((spool / p).exists() for p in spool_before[uid])
    with db.session_factory() as session:
        seg = session.scalar(select(ResultObject).where(ResultObject.job_id == first))
        assert not (db.settings.storage.outbox_path / seg.path).exists()
        assert session.scalar(select(Instance).where(Instance.path == spool_before[delivered][0]))
        rows = session.scalars(select(Purge)).all()
        assert len(rows) == 2 and all(r.bytes_freed > 0 for r in rows)
    assert purge(db.session_factory, db.settings, now=later) == []  # purged once
    # The operator cannot requeue a job whose files are gone.
    result = db.cli("jobs", "requeue", str(first))
    assert result.exit_code == 1 and "purged" in result.output


def test_retention_cli_dry_run_lists_and_deletes_nothing(tmp_path, head_ct_dir):
    db = Db(tmp_path)
    uid = db.ingest_files(head_series(head_ct_dir, seed=8))
    sweep_series(db.session_factory, db.settings)
    db.succeed_next(NEGATIVE)  # no destinations: delivered once the results exist
    time.sleep(1.0)
    db.env["DICOM_NODE_RETENTION__MAX_AGE_DAYS"] = "0.00001"  # 0.86 s
    listed = db.cli("retention", "--dry-run", "--json")
    assert listed.exit_code == 0, listed.output
    data = json.loads(listed.output)
    assert data["dry_run"] is True
    assert [s["series_instance_uid"] for s in data["series"]] == [uid]
    assert data["series"][0]["spool_files"] == 12 and data["series"][0]["outbox_files"] == 1
    assert sum(1 for p in db.settings.storage.spool_path.rglob("*.dcm")) == 12
    text = db.cli("retention")
    assert text.exit_code == 0 and f"purged series {uid}" in text.output
    assert not any(db.settings.storage.spool_path.rglob("*.dcm"))


def test_stage_milestones_follow_the_latest_run(tmp_path, head_ct_dir):
    db = Db(tmp_path)
    db.ingest_files(head_series(head_ct_dir, seed=9))
    sweep_series(db.session_factory, db.settings)
    job_id = claim_next(db.session_factory, "test:w0")
    with db.session_factory.begin() as session:
        mark_failed(
            session,
            session.get(Job, job_id),
            "boom",
            permanent=False,
            policy=RetryPolicy(base_s=0, jitter=0.0),
        )
    with db.session_factory() as session:
        first_queued = session.scalar(
            select(StateChange.at)
            .where(StateChange.entity == "job", StateChange.to_state == "QUEUED")
            .order_by(StateChange.id)
        )
    assert claim_next(db.session_factory, "test:w0") == job_id  # the retry
    with db.session_factory.begin() as session:
        mark_succeeded(session, session.get(Job, job_id), NEGATIVE)
    with db.session_factory() as session:
        runs = session.scalars(select(StateChange.at).where(
            StateChange.entity == "job", StateChange.to_state == "RUNNING").order_by(StateChange.id)
        ).all()  # fmt: skip
        m = milestones_for_jobs(session, [job_id])[job_id]
    assert m.queued == first_queued  # a retry stays in the same run ...
    assert m.started == runs[1]  # ... whose analysis is the attempt that succeeded
    assert m.results is not None and m.delivered is None  # no result objects: not delivered
    with db.session_factory.begin() as session:
        requeue(session, session.get(Job, job_id))
    with db.session_factory() as session:
        m2 = milestones_for_jobs(session, [job_id])[job_id]
    assert m2.queued > m.results and m2.started is None and m2.results is None
    assert m2.requeued and "total" not in m2.durations_s() and "receiving" in m2.durations_s()


def test_job_database_cli(tmp_path, head_ct_dir):
    db = Db(tmp_path)
    db.ingest_files(head_series(head_ct_dir, seed=10))
    db.ingest_files(head_series(head_ct_dir, seed=12))
    sweep_series(db.session_factory, db.settings)
    positive = db.succeed_next(POSITIVE, delivery_states=[DeliveryState.DEAD])
    with db.session_factory() as session:
        queued = session.scalar(select(Job.id).where(Job.state == JobState.QUEUED))
    listed = json.loads(db.cli("jobs", "list", "--json", "--finding", "present").output)
    assert [j["job_id"] for j in listed["jobs"]] == [positive]
    assert listed["not_eligible_series"] == []
    since = json.loads(
        db.cli("jobs", "list", "--json", "--since", "1h", "--pipeline", "ich").output
    )
    assert {j["job_id"] for j in since["jobs"]} == {positive, queued}
    assert json.loads(db.cli("jobs", "list", "--json", "--pipeline", "cta").output)["jobs"] == []
    assert db.cli("jobs", "list", "--since", "last tuesday").exit_code == 2
    # The table keeps a UID's end (what tells series apart) and marks the cut.
    uid = listed["jobs"][0]["series_instance_uid"]
    table = db.cli("jobs", "list").output
    assert len(uid) > 40 and ("..." + uid[-37:]) in table, table
    canceled = db.cli("jobs", "cancel", str(queued), "--json")
    assert json.loads(canceled.output) == {"job_id": queued, "from": "QUEUED", "to": "CANCELED"}
    again = db.cli("jobs", "cancel", str(queued))
    assert again.exit_code == 1 and "cannot be canceled" in again.output
    assert db.cli("jobs", "requeue", str(queued)).output.strip() == (
        f"job {queued}: CANCELED -> QUEUED"
    )
    assert db.cli("jobs", "requeue", "999").exit_code == 1
    dead = json.loads(db.cli("deliveries", "list", "--json", "--state", "DEAD").output)
    assert dead["total"] == 1 and dead["deliveries"][0]["job_id"] == positive
    assert "pacs0" in db.cli("deliveries", "list").output


def test_jobs_are_listed_with_accession_number_and_study_date(tmp_path, head_ct_dir):
    """The order a radiologist knows (accession number, study date), not only a cut UID."""
    db = Db(tmp_path)
    series = head_series(head_ct_dir, seed=31)
    for ds in series:
        ds.AccessionNumber = "ACC-2024-0131"
        ds.StudyDate = "20240131"
    db.ingest_files(series)
    db.ingest_files(head_series(head_ct_dir, seed=32))  # the GE head carries neither
    sweep_series(db.session_factory, db.settings)
    listed = json.loads(db.cli("jobs", "list", "--json").output)["jobs"]
    by_accession = {j["accession_number"]: j for j in listed}
    assert set(by_accession) == {"ACC-2024-0131", ""}
    assert by_accession["ACC-2024-0131"]["study_date"] == "20240131"
    assert by_accession["ACC-2024-0131"]["study_instance_uid"] == str(series[0].StudyInstanceUID)
    table = db.cli("jobs", "list").output
    row = next(line for line in table.splitlines() if "ACC-2024-0131" in line)
    assert "2024-01-31" in row, table
    assert "STUDY DATE" in table and "ACCESSION" in table


def test_users_cli(tmp_path):
    db = Db(tmp_path)
    assert db.cli("users", "add", "ada", "--role", "admin", "--password-stdin",
                  input=PASSWORD + "\n").exit_code == 0  # fmt: skip
    duplicate = db.cli("users", "add", "ada", "--role", "viewer", "--password-stdin",
                       input=PASSWORD + "\n")  # fmt: skip
    assert duplicate.exit_code == 1 and "exists already" in duplicate.output
    short = db.cli("users", "add", "bob", "--role", "viewer", "--password-stdin", input="short\n")
    assert short.exit_code == 1 and "at least 8" in short.output
    assert db.cli("users", "add", "x/y", "--role", "viewer", "--password-stdin",
                  input=PASSWORD + "\n").exit_code == 1  # fmt: skip
    assert db.cli("users", "add", "eve", "--role", "root", "--password-stdin",
                  input=PASSWORD + "\n").exit_code == 1  # fmt: skip
    # Interactive: the password is asked twice and never echoed.
    added = db.cli("users", "add", "vic", "--role", "viewer", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert added.exit_code == 0 and PASSWORD not in added.output
    users = json.loads(db.cli("users", "list", "--json").output)
    assert [(u["username"], u["role"]) for u in users] == [("ada", "admin"), ("vic", "viewer")]
    assert db.cli("users", "set-password", "vic", "--password-stdin",
                  input="another good one\n").exit_code == 0  # fmt: skip
    assert db.cli("users", "remove", "vic").exit_code == 0
    assert db.cli("users", "remove", "vic").exit_code == 1


def test_each_node_has_its_own_metrics_registry(tmp_path, head_ct_dir):
    one, two = Db(tmp_path / "one"), Db(tmp_path / "two")
    one.ingest_files(head_series(head_ct_dir, seed=13, count=3))
    two.ingest_files(head_series(head_ct_dir, seed=14, count=5))
    texts = [generate_latest(make_registry(db.session_factory, db.settings)).decode()
             for db in (one, two)]  # fmt: skip
    assert "dicom_node_instances_received_total 3.0" in texts[0]
    assert "dicom_node_instances_received_total 5.0" in texts[1]
