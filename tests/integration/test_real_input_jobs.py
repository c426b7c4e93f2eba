"""Real input as it comes, through the worker: no Frame of Reference UID, one or two slices.

Series are ingested as the Storage SCP stores them, swept and run by the real
worker loop with the real :class:`~dicom_node.jobs.executor.JobExecutor` (dciodvfy on
every object written); no network. The non-contrast head CT rule is pointed
at ``ich-baseline`` to keep the run short.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from sqlalchemy import select

from dicom_node.config import embedded_defaults, load_settings
from dicom_node.db.engine import make_engine, make_session_factory
from dicom_node.db.models import Job, JobState, ResultObject, Series, SeriesState
from dicom_node.jobs.dispatch import sweep_series
from dicom_node.jobs.executor import JobExecutor
from dicom_node.jobs.worker import run_one
from dicom_node.receive.header import parse_header
from dicom_node.receive.ingest import InstanceIngest
from dicom_node.receive.spool import Spool
from dicom_node.results.validate import validate_result_file
from dicom_node.series.volume import derived_frame_of_reference_uid, read_datasets
from dicom_node.training.synthetic import with_new_uids

pytestmark = pytest.mark.integration


def _rules(min_slices: int | None = None) -> list[dict]:
    rules = copy.deepcopy(embedded_defaults()["selection"]["rules"])
    for rule in rules:
        if rule["pipeline"] == "ich":
            rule["pipeline"] = "ich-baseline"
        if min_slices is not None:
            rule["min_slices"] = min_slices
    return rules


def _node(base: Path, *, min_slices: int | None = None):
    overrides = {
        "log_level": "WARNING",
        "storage": {"base_dir": str(base)},
        "series": {"stable_after_s": 0.0, "early_completion": False},
        "selection": {"rules": _rules(min_slices)},
    }
    if min_slices is not None:
        overrides["quality"] = {"min_slices": min_slices}
    settings = load_settings(overrides=overrides)
    session_factory = make_session_factory(make_engine(settings.storage.url))
    ingest = InstanceIngest(Spool(settings.storage.spool_path), session_factory)
    return settings, session_factory, ingest


def _store(ingest: InstanceIngest, datasets) -> None:
    for ds in datasets:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        data = buffer.getvalue()
        ingest.store(parse_header(data), data, "CT_SCANNER_1")


def _run_all(settings, session_factory) -> None:
    sweep_series(session_factory, settings)
    executor = JobExecutor(settings, session_factory)
    while (
        run_one(
            session_factory,
            executor.execute,
            executor.record,
            worker_id="test:w0",
            settings=settings.workers,
        )
        is not None
    ):
        pass


def _job(session, series_instance_uid: str) -> Job | None:
    return session.scalar(
        select(Job).join(Series).where(Series.series_instance_uid == series_instance_uid)
    )


def test_series_without_frame_of_reference_is_analysed(tmp_path, head_ct_dir, dciodvfy):
    settings, session_factory, ingest = _node(tmp_path)
    datasets = with_new_uids(read_datasets(sorted(head_ct_dir.glob("*.dcm"))), seed=31)
    for ds in datasets:
        del ds.FrameOfReferenceUID
    series_uid = str(datasets[0].SeriesInstanceUID)
    _store(ingest, datasets)
    _run_all(settings, session_factory)
    with session_factory() as session:
        job = _job(session, series_uid)
        assert job is not None and job.state == JobState.SUCCEEDED, job and job.error
        assert job.pipeline == "ich-baseline"
        assert "not_analysable" not in job.result_summary
        assert len(job.result_summary["findings"]) == 1
        objects = {
            o.kind: settings.storage.outbox_path / o.path
            for o in session.scalars(select(ResultObject).where(ResultObject.job_id == job.id))
        }
    assert sorted(objects) == ["SEG", "SR"]
    for path in objects.values():
        assert validate_result_file(path, executable=dciodvfy).errors == ()
    seg = hd.seg.segread(objects["SEG"])
    assert seg.FrameOfReferenceUID == derived_frame_of_reference_uid(series_uid)
    source_uids = {str(ds.SOPInstanceUID) for ds in datasets}
    assert {sop for _, _, sop in seg.get_source_image_uids()} == source_uids
    sr = hd.sr.srread(objects["SR"])
    assert source_uids <= {
        i.ReferencedSOPInstanceUID
        for s in sr.CurrentRequestedProcedureEvidenceSequence
        for r in s.ReferencedSeriesSequence
        for i in r.ReferencedSOPSequence
    }
    # The spool keeps the bytes as received: still no Frame of Reference UID.
    spooled = list(settings.storage.spool_path.rglob("*.dcm"))
    assert len(spooled) == 28
    assert not any(
        "FrameOfReferenceUID" in pydicom.dcmread(p, stop_before_pixels=True) for p in spooled
    )


def _few_slices(head_ct_dir: Path, count: int, seed: int) -> list[pydicom.Dataset]:
    datasets = with_new_uids(read_datasets(sorted(head_ct_dir.glob("*.dcm"))), seed=seed)
    orientation = np.asarray(datasets[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    datasets.sort(key=lambda ds: float(normal @ np.asarray(ds.ImagePositionPatient, float)))
    return datasets[12 : 12 + count]


def test_one_or_two_slices_are_not_eligible_with_the_reason(tmp_path, head_ct_dir):
    settings, session_factory, ingest = _node(tmp_path)
    series = {count: _few_slices(head_ct_dir, count, seed=40 + count) for count in (1, 2)}
    for datasets in series.values():
        _store(ingest, datasets)
    _run_all(settings, session_factory)
    with session_factory() as session:
        for count, datasets in series.items():
            row = session.scalar(
                select(Series).where(Series.series_instance_uid == datasets[0].SeriesInstanceUID)
            )
            assert row.state == SeriesState.NOT_ELIGIBLE
            assert f"{count} slices, fewer than the 10 required" in row.state_reason
            assert _job(session, str(datasets[0].SeriesInstanceUID)) is None


def test_one_or_two_slices_selected_anyway_get_a_not_analysable_report(tmp_path, head_ct_dir):
    """With the slice minimums lowered to 1, the volume rule still names what is wrong."""
    settings, session_factory, ingest = _node(tmp_path, min_slices=1)
    series = {count: _few_slices(head_ct_dir, count, seed=50 + count) for count in (1, 2)}
    for datasets in series.values():
        _store(ingest, datasets)
    _run_all(settings, session_factory)
    with session_factory() as session:
        for count, datasets in series.items():
            job = _job(session, str(datasets[0].SeriesInstanceUID))
            assert job is not None and job.state == JobState.SUCCEEDED, job and job.error
            assert job.result_summary["not_analysable"] == {
                "gate": "volume",
                "reason": "the series cannot form a volume: rule 'at least 3 slices' broken: "
                f"series has {count}",
            }
            kinds = session.scalars(select(ResultObject.kind).where(ResultObject.job_id == job.id))
            assert list(kinds) == ["SR"]
