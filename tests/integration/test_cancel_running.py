"""Cancel stops a RUNNING job at its next stage boundary; nothing is recorded or exported.

The real head CT is ingested as C-STORE would, dispatched by the real selection rules and
run by the real worker loop and executor in a thread. The pipeline is a test pipeline
registered for this test only: it blocks inside ``run`` until the test releases it. The
destination is a real pynetdicom Storage SCP on loopback.
"""

from __future__ import annotations

import json
import threading

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, AllStoragePresentationContexts, evt
from sqlalchemy import func, select
from typer.testing import CliRunner

from dicom_node.cli import app as cli_app
from dicom_node.config import load_settings
from dicom_node.db.engine import make_engine, make_session_factory
from dicom_node.db.models import Delivery, Job, JobState, ResultObject, StateChange
from dicom_node.errors import JobCanceledError
from dicom_node.export.exporter import deliver_due
from dicom_node.jobs import queue
from dicom_node.jobs.dispatch import sweep_series
from dicom_node.jobs.executor import JobExecutor
from dicom_node.jobs.worker import run_one
from dicom_node.pipelines.base import AlgorithmIdentity
from dicom_node.receive.header import parse_header
from dicom_node.receive.ingest import InstanceIngest
from dicom_node.receive.spool import Spool
from dicom_node.series.volume import read_datasets
from dicom_node.training.synthetic import with_new_uids
from tests.conftest import free_port

pytestmark = pytest.mark.integration


class BlockingPipeline:
    """A pipeline that signals ``started`` inside ``run`` and waits for ``release``."""

    name = "ich"
    algorithm = AlgorithmIdentity(name="blocking-test", version="0.0.1")
    finding_labels = ("intracranial hemorrhage",)

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.runs = 0

    def run(self, volume):
        self.runs += 1
        self.started.set()
        assert self.release.wait(60), "the test never released the pipeline"
        return None  # never used: the job is canceled right after inference


class RecordingPacs:
    """A real Storage SCP that records every SOP Instance UID it receives."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.port = free_port()
        ae = AE(ae_title="PACS")
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ExplicitVRLittleEndian)
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._store)])  # fmt: skip

    def _store(self, event) -> int:
        self.received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def pacs():
    server = RecordingPacs()
    yield server
    server.stop()


@pytest.fixture
def node(tmp_path, head_ct_dir, pacs):
    """Settings, a session factory and one QUEUED ``ich`` job of the real head CT."""
    settings = load_settings(overrides={
        "storage": {"base_dir": str(tmp_path)},
        "series": {"stable_after_s": 0.0, "early_completion": False},
        "results": {"validation": "off"},
        "export": {"destinations": [{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1",
                                     "port": pacs.port}]},
    })  # fmt: skip
    engine = make_engine(settings.storage.url)
    factory = make_session_factory(engine)
    ingest = InstanceIngest(Spool(settings.storage.spool_path), factory)
    for ds in with_new_uids(read_datasets(sorted(head_ct_dir.glob("*.dcm"))), seed=77):
        buffer = pydicom.filebase.DicomBytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        data = buffer.getvalue()
        assert ingest.store(parse_header(data), data, "CT_SCANNER")
    sweep_series(factory, settings)
    with factory() as session:
        (job,) = session.scalars(select(Job)).all()
    assert job.pipeline == "ich" and job.state == JobState.QUEUED
    yield settings, factory, job.id
    engine.dispose()


def _counts(factory) -> tuple[int, int]:
    with factory() as session:
        return (session.scalar(select(func.count()).select_from(ResultObject)),
                session.scalar(select(func.count()).select_from(Delivery)))  # fmt: skip


def test_cancel_while_running_ends_the_job_canceled_and_exports_nothing(node, pacs):
    settings, factory, job_id = node
    pipeline = BlockingPipeline()
    executor = JobExecutor(settings, factory, pipelines={"ich": pipeline})
    ran: list[int | None] = []
    worker = threading.Thread(target=lambda: ran.append(run_one(
        factory, executor.execute, executor.record, worker_id="test:w0",
        settings=settings.workers)))  # fmt: skip
    worker.start()
    try:
        assert pipeline.started.wait(120), "the job never reached the pipeline"
        with factory() as session:
            assert session.get(Job, job_id).state == JobState.RUNNING
        # The operator cancels from the command line while the pipeline runs.
        env = {"DICOM_NODE_STORAGE__BASE_DIR": str(settings.storage.base_dir)}
        answer = CliRunner().invoke(cli_app, ["jobs", "cancel", str(job_id), "--json"], env=env)
        assert answer.exit_code == 0, answer.output
        assert json.loads(answer.output) == {
            "job_id": job_id,
            "from": "RUNNING",
            "to": "RUNNING",
            "cancel_requested": True,
        }
        with factory() as session:
            job = session.get(Job, job_id)
            assert job.state == JobState.RUNNING and job.cancel_requested_at is not None
    finally:
        pipeline.release.set()
        worker.join(120)
    assert not worker.is_alive() and ran == [job_id]
    with factory() as session:
        job = session.get(Job, job_id)
        assert job.state == JobState.CANCELED and job.finished_at is not None
        assert job.result_summary is None and job.worker_id is None
        last = session.scalars(select(StateChange).where(
            StateChange.entity == "job", StateChange.entity_id == job_id)
            .order_by(StateChange.id.desc())).first()  # fmt: skip
    assert (last.from_state, last.to_state) == ("RUNNING", "CANCELED")
    assert "stopped after inference" in last.reason and "canceled by an operator" in last.reason
    assert pipeline.runs == 1
    assert _counts(factory) == (0, 0)  # no result objects, no deliveries
    assert not [p for p in settings.storage.outbox_path.rglob("*") if p.is_file()]
    assert (
        deliver_due(
            factory,
            settings.export.destinations,
            outbox=settings.storage.outbox_path,
            calling_ae_title="NODE",
        )
        == {}
    )
    assert pacs.received == []
    # A canceled job is not run again by the next worker pass, and can be requeued.
    assert run_one(factory, executor.execute, executor.record, worker_id="test:w0",
                   settings=settings.workers) is None  # fmt: skip
    with factory.begin() as session:
        job = session.get(Job, job_id)
        queue.requeue(session, job)
        assert job.cancel_requested_at is None


def test_a_cancel_requested_before_loading_finishes_stops_after_load(node):
    """The first boundary: the series is read, the pipeline never runs."""
    settings, factory, job_id = node
    pipeline = BlockingPipeline()
    pipeline.release.set()
    executor = JobExecutor(settings, factory, pipelines={"ich": pipeline})
    assert queue.claim_next(factory, "test:w0") == job_id
    with factory.begin() as session:
        assert queue.cancel(session, session.get(Job, job_id)) == JobState.RUNNING
    with pytest.raises(JobCanceledError, match="stopped after loading the series"):
        executor.execute(job_id)
    assert pipeline.runs == 0


def test_a_running_job_whose_worker_died_after_a_cancel_is_canceled_not_requeued(node):
    from datetime import timedelta

    from dicom_node.db.models import utcnow

    settings, factory, job_id = node
    assert queue.claim_next(factory, "test:w0") == job_id
    with factory.begin() as session:
        queue.cancel(session, session.get(Job, job_id))
    with factory.begin() as session:
        recovered = queue.recover_stale_jobs(session, 60, now=utcnow() + timedelta(seconds=61))
        assert recovered == [job_id]
        assert session.get(Job, job_id).state == JobState.CANCELED
