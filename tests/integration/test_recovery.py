"""Start-up recovery: spool and database agree again after a crash; interrupted jobs requeue."""

from __future__ import annotations

import pydicom
import pytest
from sqlalchemy import select

from dicom_node.db.engine import make_engine, make_session_factory
from dicom_node.db.models import Instance, Job, JobState, Series
from dicom_node.jobs.queue import claim_next, enqueue
from dicom_node.receive.header import parse_header
from dicom_node.receive.ingest import InstanceIngest
from dicom_node.receive.spool import Spool
from dicom_node.recovery import recover_at_start

pytestmark = pytest.mark.integration


@pytest.fixture
def node(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    factory = make_session_factory(engine)
    ingest = InstanceIngest(Spool(tmp_path / "spool"), factory)
    yield ingest, factory
    engine.dispose()


def test_spool_and_database_are_reconciled(node, head_ct_dir):
    ingest, factory = node
    files = sorted(head_ct_dir.glob("*.dcm"))
    for file in files[:3]:  # stored normally: file and row
        data = file.read_bytes()
        assert ingest.store(parse_header(data), data, "CT")
    # A crash after the durable write, before the commit: file without row.
    orphan = pydicom.dcmread(files[3])
    rel = ingest.spool.relative_path(
        orphan.StudyInstanceUID, orphan.SeriesInstanceUID, orphan.SOPInstanceUID
    )
    ingest.spool.write(rel, files[3].read_bytes())
    # An unreadable file at a UID path, an interrupted write, and a row whose file is gone.
    bad_rel = rel.parent / "1.2.3.4.5.dcm"
    ingest.spool.write(bad_rel, b"garbage")
    (ingest.spool.incoming / "x.part").write_bytes(b"half")
    with factory() as session:
        gone = session.scalars(select(Instance).order_by(Instance.id)).first()
    ingest.spool.absolute(gone.path).unlink()

    report = recover_at_start(ingest, factory, host="thishost")

    assert report.temp_files_removed == 1
    assert report.orphan_files_recorded == 1
    assert report.orphan_files_quarantined == [str(bad_rel)]
    assert report.rows_without_file == [gone.sop_instance_uid]
    with factory() as session:
        uids = set(session.scalars(select(Instance.sop_instance_uid)))
        series = session.scalars(select(Series)).one()
    assert str(orphan.SOPInstanceUID) in uids and gone.sop_instance_uid not in uids
    assert len(uids) == series.instance_count == 3
    assert (ingest.spool.root / ".quarantine" / "1.2.3.4.5.dcm").exists()
    # A second run finds nothing to do.
    again = recover_at_start(ingest, factory, host="thishost")
    assert again.orphan_files_recorded == 0
    assert again.rows_without_file == again.jobs_requeued == []


def test_running_jobs_of_this_host_are_requeued(node, head_ct_dir):
    ingest, factory = node
    data = (head_ct_dir / "01.dcm").read_bytes()
    ingest.store(parse_header(data), data, "CT")
    with factory.begin() as session:
        series_id = session.scalars(select(Series.id)).one()
        enqueue(session, series_id=series_id, pipeline="ich", digest="a", max_attempts=3)
        enqueue(session, series_id=series_id, pipeline="ich", digest="b", max_attempts=3)
    mine = claim_next(factory, "thishost:123:w0")
    theirs = claim_next(factory, "otherhost:9:w0")
    report = recover_at_start(ingest, factory, host="thishost")
    assert report.jobs_requeued == [mine]
    with factory() as session:
        assert session.get(Job, mine).state == JobState.QUEUED
        assert session.get(Job, mine).attempts == 0
        assert session.get(Job, theirs).state == JobState.RUNNING


def test_rows_of_purged_series_are_kept_without_files(node, head_ct_dir):
    """Retention deletes files on purpose; recovery must not treat that as loss."""
    from dicom_node.db.models import Purge

    ingest, factory = node
    data = (head_ct_dir / "01.dcm").read_bytes()
    ingest.store(parse_header(data), data, "CT")
    with factory.begin() as session:
        instance = session.scalars(select(Instance)).one()
        session.add(Purge(series_id=instance.series_id, spool_files=1))
    ingest.spool.absolute(instance.path).unlink()
    report = recover_at_start(ingest, factory, host="thishost")
    assert report.rows_without_file == []
    with factory() as session:
        assert session.scalars(select(Instance)).one().sop_instance_uid == instance.sop_instance_uid
