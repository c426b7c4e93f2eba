"""Idempotent jobs and result versions, with real jobs and a real Storage SCP as the PACS.

* Instances that arrive after a job was dispatched re-open the series: the
  running job analyses exactly the instance set it was queued for, and the
  next job produces result version 2 in new series whose Series Description
  says "v2, supersedes v1"; the PACS receives version 1 once and version 2
  once, never the same object twice.
* A job still QUEUED when the series changes is canceled as superseded.
* The pipeline's algorithm version is part of a job's identity: the same
  instance set is analysed once per version.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pynetdicom import AE, AllStoragePresentationContexts, evt
from sqlalchemy import select

from dicom_node.config import load_settings
from dicom_node.db.engine import make_engine, make_session_factory
from dicom_node.db.models import (
    Delivery,
    DeliveryState,
    Job,
    JobState,
    ResultObject,
    Series,
    SeriesState,
    StateChange,
)
from dicom_node.db.transitions import set_state
from dicom_node.export.exporter import deliver_due
from dicom_node.jobs.dispatch import sweep_series
from dicom_node.jobs.executor import JobExecutor
from dicom_node.jobs.worker import run_one
from dicom_node.receive.header import parse_header
from dicom_node.receive.ingest import InstanceIngest
from dicom_node.receive.spool import Spool
from dicom_node.results.validate import validate_result_file
from dicom_node.series.volume import read_datasets
from dicom_node.training.synthetic import with_new_uids
from tests.conftest import free_port
from tests.web.conftest import encode

pytestmark = pytest.mark.integration


class RecordingPacs:
    """A pynetdicom Storage SCP that keeps every SOP Instance UID and Series Description."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, str]] = []
        self.datasets: dict[str, pydicom.Dataset] = {}
        self.port = free_port()
        ae = AE(ae_title="PACS")
        ae.supported_contexts = AllStoragePresentationContexts
        self.server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)]
        )

    def _store(self, event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        self.datasets[str(ds.SOPInstanceUID)] = ds
        self.received.append(
            (
                str(ds.SOPInstanceUID),
                str(ds.SeriesInstanceUID),
                str(ds.get("SeriesDescription", "")),
            )
        )
        return 0x0000

    def stop(self) -> None:
        self.server.shutdown()


class Harness:
    """Receive, sweep, run and export in-process (what the node's parts do)."""

    def __init__(self, base: Path, pacs_port: int) -> None:
        self.settings = load_settings(
            overrides={
                "storage": {"base_dir": str(base)},
                "series": {"stable_after_s": 0.0, "early_completion": False},
                "export": {
                    "destinations": [
                        {
                            "name": "pacs",
                            "ae_title": "PACS",
                            "host": "127.0.0.1",
                            "port": pacs_port,
                            "backoff_initial_s": 1,
                            "backoff_max_s": 2,
                        }
                    ]
                },
            }
        )
        self.engine = make_engine(self.settings.storage.url)
        self.factory = make_session_factory(self.engine)
        self.ingest = InstanceIngest(Spool(self.settings.storage.spool_path), self.factory)
        self.executor = JobExecutor(self.settings, self.factory)

    def receive(self, datasets: list[pydicom.Dataset]) -> None:
        for ds in datasets:
            data = encode(ds)
            assert self.ingest.store(parse_header(data), data, "CT_SCANNER")

    def sweep(self) -> None:
        sweep_series(self.factory, self.settings)

    def run_job(self) -> int | None:
        return run_one(
            self.factory,
            self.executor.execute,
            self.executor.record,
            worker_id="test:w0",
            settings=self.settings.workers,
        )

    def export(self) -> dict[str, int]:
        return deliver_due(
            self.factory,
            self.settings.export.destinations,
            outbox=self.settings.storage.outbox_path,
            calling_ae_title="NODE",
        )

    def jobs(self, series_uid: str) -> list[Job]:
        with self.factory() as session:
            return list(
                session.scalars(
                    select(Job)
                    .join(Series)
                    .where(Series.series_instance_uid == series_uid)
                    .order_by(Job.id)
                )
            )

    def close(self) -> None:
        self.engine.dispose()


@pytest.fixture
def pacs():
    server = RecordingPacs()
    yield server
    server.stop()


@pytest.fixture
def harness(tmp_path, pacs):
    instance = Harness(tmp_path / "node", pacs.port)
    yield instance
    instance.close()


@pytest.fixture(scope="module")
def head(head_ct_dir) -> list[pydicom.Dataset]:
    return read_datasets(sorted(head_ct_dir.glob("*.dcm")))


def test_late_instances_make_a_second_result_version_and_nothing_is_sent_twice(harness, pacs, head):
    series = with_new_uids(head, seed=101)
    series_uid = str(series[0].SeriesInstanceUID)
    harness.receive(series[:27])
    harness.sweep()
    [first] = harness.jobs(series_uid)
    assert first.state == JobState.QUEUED and first.pipeline_version
    # The 28th slice arrives after the job was queued and before it runs.
    harness.receive(series[27:])
    with harness.factory() as session:
        assert session.get(Series, first.series_id).state == SeriesState.RECEIVING
        analysed = JobExecutor._instance_set(session, session.get(Job, first.id))
    assert len(analysed) == 27  # exactly the set the job was queued for
    assert harness.run_job() == first.id
    assert harness.export() == {"SENT": 2}
    harness.sweep()  # the re-opened series is complete again: a second job
    jobs = harness.jobs(series_uid)
    assert [j.state for j in jobs] == [JobState.SUCCEEDED, JobState.QUEUED]
    second = jobs[1]
    assert second.instance_set_digest != first.instance_set_digest
    assert harness.run_job() == second.id
    assert harness.export() == {"SENT": 2}
    assert harness.export() == {}  # nothing due any more

    with harness.factory() as session:
        summaries = {j.id: session.get(Job, j.id).result_summary for j in jobs}
        objects = session.scalars(select(ResultObject).order_by(ResultObject.id)).all()
        deliveries = session.scalars(select(Delivery).order_by(Delivery.id)).all()
    assert summaries[first.id]["result_version"] == 1
    assert summaries[second.id]["result_version"] == 2
    assert summaries[second.id]["supersedes"] == {"version": 1, "job_id": first.id}
    assert all(d.state == DeliveryState.SENT and d.attempts == 1 for d in deliveries)
    # Each object reached the PACS exactly once; version 2 is in new series and says so.
    received_uids = [uid for uid, _, _ in pacs.received]
    assert sorted(received_uids) == sorted(o.sop_instance_uid for o in objects)
    assert len(set(received_uids)) == len(received_uids) == 4
    by_job = {o.sop_instance_uid: o.job_id for o in objects}
    descriptions = {by_job[uid]: [] for uid in by_job}
    series_by_job: dict[int, set[str]] = {}
    for uid, series_instance_uid, description in pacs.received:
        descriptions[by_job[uid]].append(description)
        series_by_job.setdefault(by_job[uid], set()).add(series_instance_uid)
    assert not series_by_job[first.id] & series_by_job[second.id]
    assert all("supersedes" not in d for d in descriptions[first.id])
    assert all(
        d.endswith("v2, supersedes v1 (not for diagnostic use)") and len(d) <= 64
        for d in descriptions[second.id]
    ), descriptions[second.id]
    print("\nresult versions: " + " | ".join(sorted(set(descriptions[second.id]))))
    # ... and says so in DICOM: the v2 SR names the v1 SR as its predecessor document, and
    # every v2 object has its own Series Number and the Series Date/Time of version 2.
    kinds = {o.sop_instance_uid: o.kind for o in objects}
    by_version = {
        job_id: {kinds[uid]: pacs.datasets[uid] for uid in by_job if by_job[uid] == job_id}
        for job_id in (first.id, second.id)
    }
    v1_sr, v2_sr = by_version[first.id]["SR"], by_version[second.id]["SR"]
    assert "PredecessorDocumentsSequence" not in v1_sr
    [study] = v2_sr.PredecessorDocumentsSequence
    assert study.StudyInstanceUID == v1_sr.StudyInstanceUID
    [series_ref] = study.ReferencedSeriesSequence
    assert series_ref.SeriesInstanceUID == v1_sr.SeriesInstanceUID
    [sop_ref] = series_ref.ReferencedSOPSequence
    assert sop_ref.ReferencedSOPInstanceUID == v1_sr.SOPInstanceUID
    assert sop_ref.ReferencedSOPClassUID == v1_sr.SOPClassUID
    for kind, v2 in by_version[second.id].items():
        v1 = by_version[first.id][kind]
        assert int(v2.SeriesNumber) != int(v1.SeriesNumber), kind
        assert v2.SeriesDate and v2.SeriesTime, kind
    assert hd.sr.srread(_as_file(v2_sr, harness.settings.storage.base_dir / "v2-sr.dcm"))
    report = validate_result_file(harness.settings.storage.base_dir / "v2-sr.dcm")
    assert not report.errors, [m.text for m in report.errors]


def _as_file(ds: pydicom.Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def test_a_queued_job_is_superseded_when_the_series_changes(harness, head):
    series = with_new_uids(head, seed=102)
    series_uid = str(series[0].SeriesInstanceUID)
    harness.receive(series[:20])
    harness.sweep()
    harness.receive(series[20:])
    harness.sweep()
    old, new = harness.jobs(series_uid)
    assert (old.state, new.state) == (JobState.CANCELED, JobState.QUEUED)
    with harness.factory() as session:
        reason = session.scalars(
            select(StateChange.reason).where(
                StateChange.entity == "job",
                StateChange.entity_id == old.id,
                StateChange.to_state == "CANCELED",
            )
        ).one()
        dispatched = session.scalars(
            select(Series.state_reason).where(Series.series_instance_uid == series_uid)
        ).one()
    assert reason == f"superseded by job {new.id}: the series changed before it ran"
    assert f"supersedes queued job {old.id}" in dispatched


def test_the_algorithm_version_is_part_of_the_job_identity(harness, head, monkeypatch):
    series = with_new_uids(head, seed=103)
    series_uid = str(series[0].SeriesInstanceUID)
    harness.receive(series)
    harness.sweep()

    def complete_again() -> None:
        with harness.factory.begin() as session:
            row = session.scalars(
                select(Series).where(Series.series_instance_uid == series_uid)
            ).one()
            set_state(session, row, SeriesState.RECEIVING, reason="test")
            set_state(session, row, SeriesState.COMPLETE, reason="test")

    complete_again()
    harness.sweep()  # same instances, same version: no new job
    [job] = harness.jobs(series_uid)
    with harness.factory() as session:
        reason = session.scalars(
            select(Series.state_reason).where(Series.series_instance_uid == series_uid)
        ).one()
    assert "already analysed for this instance set" in reason
    monkeypatch.setattr(
        "dicom_node.jobs.dispatch.algorithm_version", lambda pipeline, ich_model_dir=None: "99.0.0"
    )
    complete_again()
    harness.sweep()  # a new algorithm version analyses the same instances again
    jobs = harness.jobs(series_uid)
    assert [(j.pipeline_version, j.instance_set_digest) for j in jobs] == [
        (job.pipeline_version, job.instance_set_digest),
        ("99.0.0", job.instance_set_digest),
    ]
