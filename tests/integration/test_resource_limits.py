"""Resource limits over real associations: the free-disk watermark and the dataset cap.

* Below ``dicom.min_free_disk_bytes`` every new instance is answered 0xA700
  (Refused: Out of Resources, PS3.4 B.2.3) and nothing is written; the same
  node with a reachable watermark stores it.
* A C-STORE whose dataset is larger than ``dicom.max_dataset_bytes`` is
  aborted while it is being received (the node never holds it whole), and the
  next association stores normally.
"""

from __future__ import annotations

import time
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.dimse_primitives import C_STORE
from sqlalchemy import func, select

from dicom_node.config import load_settings
from dicom_node.db.engine import make_engine, make_session_factory
from dicom_node.db.models import AuditEvent, Instance
from dicom_node.receive.ingest import InstanceIngest
from dicom_node.receive.resources import DiskWatermark
from dicom_node.receive.scp import StorageSCP
from dicom_node.receive.spool import Spool
from tests.dimse import encode_explicit_le

pytestmark = pytest.mark.integration
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def make_scp(base, **dicom):
    settings = load_settings(
        overrides={"storage": {"base_dir": str(base)}, "dicom": {"port": 0, **dicom}}
    )
    engine = make_engine(settings.storage.url)
    factory = make_session_factory(engine)
    scp = StorageSCP(settings.dicom, InstanceIngest(Spool(settings.storage.spool_path), factory))
    scp.start()
    return scp, engine, factory


def count(factory) -> int:
    with factory() as session:
        return int(session.scalar(select(func.count(Instance.id))))


def associate(port: int):
    ae = AE(ae_title="CT_SCANNER")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(CT_IMAGE_STORAGE, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOM_NODE")
    assert assoc.is_established
    return assoc


def test_below_the_free_disk_watermark_instances_get_0xA700(tmp_path, head_ct_dir):
    dataset = pydicom.dcmread(head_ct_dir / "11.dcm")
    scp, engine, factory = make_scp(tmp_path / "full", min_free_disk_bytes=2**62)
    try:
        assoc = associate(scp.port)
        assert assoc.send_c_store(dataset).Status == 0xA700
        assoc.release()
        assert count(factory) == 0
        assert not any(p.suffix == ".dcm" for p in scp.ingest.spool.root.rglob("*"))
    finally:
        scp.stop()
        engine.dispose()
    scp, engine, factory = make_scp(tmp_path / "room", min_free_disk_percent=0.01)
    try:
        assoc = associate(scp.port)
        assert assoc.send_c_store(dataset).Status == 0x0000
        assoc.release()
        assert count(factory) == 1
    finally:
        scp.stop()
        engine.dispose()


def test_a_dataset_over_the_cap_is_aborted_while_it_arrives(tmp_path, head_ct_dir, shared_data):
    scp, engine, factory = make_scp(tmp_path / "n", max_dataset_bytes=256 * 1024)
    dataset = pydicom.dcmread(head_ct_dir / "12.dcm")  # 0.5 MiB: over the 256 KiB cap
    try:
        assoc = associate(scp.port)
        request = C_STORE()
        request.MessageID = 1
        request.AffectedSOPClassUID = CT_IMAGE_STORAGE
        request.AffectedSOPInstanceUID = dataset.SOPInstanceUID
        request.Priority = 2
        request.DataSet = BytesIO(encode_explicit_le(dataset))
        context = assoc.accepted_contexts[0].context_id
        assoc.dimse.send_msg(request, context)
        deadline = time.monotonic() + 10
        while assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.05)
        assert assoc.is_aborted
        assert count(factory) == 0
        small = pydicom.dcmread(shared_data / "seg-sr-examples" / "highdicom" / "ct_image.dcm")
        assoc = associate(scp.port)  # the node still serves: a 32 KiB instance is stored
        assert assoc.send_c_store(small).Status == 0x0000
        assoc.release()
        assert count(factory) == 1
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with factory() as session:
                reasons = session.scalars(select(AuditEvent.reason)).all()
            if any(r and "max_dataset_bytes" in r for r in reasons):
                break
            time.sleep(0.05)
        assert any(r and "dataset over 262144 bytes" in r for r in reasons), reasons
    finally:
        scp.stop()
        engine.dispose()


class CountingWatermark(DiskWatermark):
    """A watermark whose file system is a settable figure; counts the ``statvfs`` calls."""

    def __init__(self, free: int, total: int = 10**12, **kwargs):
        super().__init__(Path("."), **kwargs)
        self.free, self.total, self.calls = free, total, 0

    def free_bytes(self):
        self.calls += 1
        return self.free, self.total


def test_the_watermark_reuses_statvfs_within_its_interval_and_bytes():
    disk = CountingWatermark(
        10**10, min_free_bytes=10**9, recheck_interval_s=60, recheck_bytes=10 * 10**6
    )
    for _ in range(9):
        assert disk.has_room(10**6) == (True, "")
    assert disk.calls == 1  # one statvfs for 9 MB
    assert disk.has_room(10**6)[0] and disk.has_room(10**6)[0]
    assert disk.calls == 2  # 10 MB admitted on one answer: asked again


def test_the_watermark_asks_again_before_refusing_and_after_its_interval():
    disk = CountingWatermark(10**9 + 3 * 10**6, min_free_bytes=10**9, recheck_interval_s=60)
    assert disk.has_room(2 * 10**6)[0]
    disk.free = 10**10  # another program freed space: the estimate alone would refuse
    assert disk.has_room(2 * 10**6) == (True, "")
    assert disk.calls == 2
    disk.free = 10**9  # the disk filled up: refused on a fresh answer, every time
    disk.recheck_interval_s = 0.05
    time.sleep(0.06)
    room, why_not = disk.has_room(1)
    assert not room and "dicom.min_free_disk_bytes" in why_not
    assert not disk.has_room(1)[0]
    assert disk.calls == 4


def test_a_disk_filling_during_an_association_gets_0xA700(tmp_path, head_ct_dir):
    """The statvfs cache does not let instances through once the disk is below the watermark."""
    first, second = (pydicom.dcmread(head_ct_dir / name) for name in ("11.dcm", "12.dcm"))
    scp, engine, factory = make_scp(tmp_path / "filling", min_free_disk_bytes=1)
    try:
        assoc = associate(scp.port)
        assert assoc.send_c_store(first).Status == 0x0000
        scp.disk.free_bytes = lambda: (0, 10**12)  # the file system is full now
        scp.disk.recheck_interval_s = 0.01
        time.sleep(0.02)
        assert assoc.send_c_store(second).Status == 0xA700
        assert assoc.send_c_store(second).Status == 0xA700
        assoc.release()
        assert count(factory) == 1
        written = [p for p in scp.ingest.spool.root.rglob("*.dcm")]
        assert len(written) == 1
    finally:
        scp.stop()
        engine.dispose()
