"""The worker path with result profiles, quality gates and series preference, in-process.

Series are ingested as the Storage SCP stores them, swept, and run by the real
worker loop (:func:`run_one`) with dciodvfy validating every object written.
No network is used: the deliveries created are checked in the database.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from dicom_node.config import load_settings
from dicom_node.db.engine import make_engine, make_session_factory
from dicom_node.db.models import Delivery, Job, JobState, ResultObject, Series, SeriesState
from dicom_node.jobs.dispatch import sweep_series
from dicom_node.jobs.executor import JobExecutor
from dicom_node.jobs.worker import run_one
from dicom_node.receive.header import parse_header
from dicom_node.receive.ingest import InstanceIngest
from dicom_node.receive.spool import Spool
from dicom_node.series.volume import read_datasets
from dicom_node.training.synthetic import insert_ellipsoid_hemorrhage, with_new_uids

pytestmark = pytest.mark.integration

DESTINATIONS = [
    {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 104},
    {"name": "weasis", "ae_title": "WEASIS", "host": "127.0.0.1", "port": 105,
     "profile": "weasis"},
    {"name": "viewer", "ae_title": "VIEWER", "host": "127.0.0.1", "port": 106,
     "profile": "no-seg-viewer"},
]  # fmt: skip
PROFILES = {
    "weasis": {"seg_type": "LABELMAP", "compression": "rle-lossless", "max_frames": 10},
    "no-seg-viewer": {"send_seg": False, "send_sr": False, "send_overlay": True},
}


def _encode(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _position(ds: pydicom.Dataset) -> float:
    import numpy as np

    orientation = np.asarray(ds.ImageOrientationPatient, dtype=float)
    return float(np.cross(orientation[:3], orientation[3:]) @ np.asarray(ds.ImagePositionPatient))


def _node(base: Path, **selection):
    settings = load_settings(
        overrides={
            "log_level": "WARNING",
            "storage": {"base_dir": str(base)},
            "series": {"stable_after_s": 0.0, "early_completion": False},
            "export": {"destinations": DESTINATIONS},
            "results": {"profiles": PROFILES, "max_key_slices": 2},
            "selection": {"preference": selection} if selection else {},
        }
    )
    session_factory = make_session_factory(make_engine(settings.storage.url))
    ingest = InstanceIngest(Spool(settings.storage.spool_path), session_factory)
    return settings, session_factory, ingest


def _store(ingest: InstanceIngest, datasets) -> None:
    for ds in datasets:
        data = _encode(ds)
        ingest.store(parse_header(data), data, "CT_SCANNER_1")


@pytest.fixture(scope="module")
def ran(tmp_path_factory, head_ct_dir):
    """A synthetic bleed and a copy of the head with one slice removed, run by the worker."""
    settings, session_factory, ingest = _node(tmp_path_factory.mktemp("profiles"))
    head_files = sorted(head_ct_dir.glob("*.dcm"))
    bleed = insert_ellipsoid_hemorrhage(
        with_new_uids(read_datasets(head_files), seed=11), center_mm=None,
        semi_axes_mm=(15.0, 12.0, 13.26), hu=65.0, seed=11,
    )  # fmt: skip
    _store(ingest, bleed.datasets)
    gapped = sorted(with_new_uids(read_datasets(head_files), seed=12), key=_position)
    del gapped[20]
    _store(ingest, gapped)
    sweep_series(session_factory, settings)
    executor = JobExecutor(settings, session_factory)
    for _ in range(2):
        assert run_one(
            session_factory, executor.execute, executor.record, worker_id="test:w0",
            settings=settings.workers,
        ) is not None  # fmt: skip
    uids = {"bleed": bleed.datasets[0].SeriesInstanceUID, "gapped": gapped[0].SeriesInstanceUID}
    with session_factory() as session:
        jobs = {
            name: session.scalar(select(Job).join(Series).where(Series.series_instance_uid == uid))
            for name, uid in uids.items()
        }
        received = {}
        for name, job in jobs.items():
            rows = session.execute(
                select(Delivery.destination, ResultObject.kind, ResultObject.sop_class_uid)
                .join(ResultObject, Delivery.result_object_id == ResultObject.id)
                .where(ResultObject.job_id == job.id)
            ).all()
            received[name] = {
                d["name"]: sorted((kind, sop) for dest, kind, sop in rows if dest == d["name"])
                for d in DESTINATIONS
            }
        files = {
            name: session.scalars(select(ResultObject).where(ResultObject.job_id == job.id)).all()
            for name, job in jobs.items()
        }
    return {"jobs": jobs, "received": received, "files": files, "settings": settings}


SEG, LABELMAP_SEG = "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7"
SR, SC = "1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.7"


def test_each_destination_gets_what_its_profile_names(ran):
    job = ran["jobs"]["bleed"]
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.result_summary["findings"][0]["present"] is True
    received = ran["received"]["bleed"]
    assert received["pacs"] == [("SEG", SEG), ("SR", SR)]
    assert received["weasis"] == [("SEG", LABELMAP_SEG)] * 3 + [("SR", SR)]  # 28 frames / 10
    assert received["viewer"] == [("SC", SC)] * 3  # two key slices and the summary
    kinds = sorted(row.kind for row in ran["files"]["bleed"])
    assert kinds == ["SC"] * 3 + ["SEG"] * 4 + ["SR"] * 2
    outbox = ran["settings"].storage.outbox_path
    assert all((outbox / row.path).is_file() for row in ran["files"]["bleed"])


def test_a_series_with_a_missing_slice_gets_a_not_analysable_report(ran):
    job = ran["jobs"]["gapped"]
    assert job.state == JobState.SUCCEEDED, job.error
    summary = job.result_summary
    assert summary["findings"] == []
    assert summary["not_analysable"]["gate"] == "missing_slices"
    assert "14.0 mm between slices 20 and 21" in summary["not_analysable"]["reason"]
    received = ran["received"]["gapped"]
    assert received == {
        "pacs": [("SR", SR)],
        "weasis": [("SR", SR)],
        "viewer": [("SC", SC)],
    }
    (sr_row,) = [row for row in ran["files"]["gapped"] if row.kind == "SR"]
    sr = pydicom.dcmread(ran["settings"].storage.outbox_path / sr_row.path)
    text = [
        item.TextValue
        for container in sr.ContentSequence
        for item in container.get("ContentSequence", [])
        if item.ValueType == "TEXT"
    ]
    assert any(t.startswith("Not analysable: missing slices") for t in text)


def _two_series_of_one_study(head_ct_dir):
    first = with_new_uids(read_datasets(sorted(head_ct_dir.glob("*.dcm"))), seed=21)
    thin = [copy.deepcopy(ds) for ds in first]
    series_uid = generate_uid()
    for ds in thin:
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SliceThickness = "2.0"
    return first, thin


def _states(session_factory) -> dict[str, tuple[str, str]]:
    with session_factory() as session:
        return {
            s.series_instance_uid: (str(s.state), s.state_reason or "")
            for s in session.scalars(select(Series)).all()
        }


def test_of_two_eligible_series_the_thinnest_is_analysed(tmp_path, head_ct_dir):
    settings, session_factory, ingest = _node(tmp_path)
    standard, thin = _two_series_of_one_study(head_ct_dir)
    _store(ingest, standard + thin)
    sweep_series(session_factory, settings)
    states = _states(session_factory)
    assert states[thin[0].SeriesInstanceUID][0] == SeriesState.DISPATCHED
    state, reason = states[standard[0].SeriesInstanceUID]
    assert state == SeriesState.NOT_ELIGIBLE
    assert f"series {thin[0].SeriesInstanceUID} (no description, 2 mm" in reason
    assert reason.endswith("is preferred (thinnest)")


def test_a_series_arriving_after_the_choice_is_not_analysed_again(tmp_path, head_ct_dir):
    settings, session_factory, ingest = _node(tmp_path)
    standard, thin = _two_series_of_one_study(head_ct_dir)
    _store(ingest, standard)
    sweep_series(session_factory, settings)
    _store(ingest, thin)
    sweep_series(session_factory, settings)
    states = _states(session_factory)
    assert states[standard[0].SeriesInstanceUID][0] == SeriesState.DISPATCHED
    state, reason = states[thin[0].SeriesInstanceUID]
    assert state == SeriesState.NOT_ELIGIBLE and "analysed by 'ich' before" in reason


def test_multiple_series_all_analyses_each(tmp_path, head_ct_dir):
    settings, session_factory, ingest = _node(tmp_path, multiple_series="all")
    standard, thin = _two_series_of_one_study(head_ct_dir)
    _store(ingest, standard + thin)
    sweep_series(session_factory, settings)
    states = _states(session_factory)
    assert {state for state, _ in states.values()} == {SeriesState.DISPATCHED}


def test_jobs_list_and_show_say_why_a_series_was_not_analysable(ran, monkeypatch):
    from typer.testing import CliRunner

    from dicom_node.cli import app as cli_app

    monkeypatch.setenv("DICOM_NODE_STORAGE__BASE_DIR", str(ran["settings"].storage.base_dir))
    job_id = ran["jobs"]["gapped"].id
    listed = CliRunner().invoke(cli_app, ["jobs", "list"])
    assert listed.exit_code == 0, listed.output
    (line,) = [x for x in listed.output.splitlines() if x.strip().startswith(str(job_id))]
    assert "not analysable:" in line and "14.0 mm between slices 20 and 21" in line
    shown = CliRunner().invoke(cli_app, ["jobs", "show", str(job_id)])
    assert "not analysable: " in shown.output
