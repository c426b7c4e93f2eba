"""The Storage SCP over real loopback associations: dcmtk storescu in, spool + DB rows out."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from sqlalchemy import func, select
from typer.testing import CliRunner

from dicom_node.cli import app as cli_app
from dicom_node.config import load_settings
from dicom_node.db.engine import make_engine, make_session_factory
from dicom_node.db.models import Instance, Series, SeriesState
from dicom_node.receive.ingest import InstanceIngest
from dicom_node.receive.scp import StorageSCP
from dicom_node.receive.spool import Spool
from tests.conftest import run_storescu
from tests.dimse import encode_explicit_le, send_raw_c_store, send_raw_c_store_response

pytestmark = pytest.mark.integration
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


class Receiver:
    """A Storage SCP with its spool and database, without workers or scheduler."""

    def __init__(self, base_dir: Path, **dicom):
        self.settings = load_settings(
            overrides={"storage": {"base_dir": str(base_dir)}, "dicom": {"port": 0, **dicom}}
        )
        self.engine = make_engine(self.settings.storage.url)
        self.factory = make_session_factory(self.engine)
        self.spool = Spool(self.settings.storage.spool_path)
        self.scp = StorageSCP(self.settings.dicom, InstanceIngest(self.spool, self.factory))

    def count(self) -> int:
        with self.factory() as session:
            return session.scalar(select(func.count(Instance.id)))


@pytest.fixture
def receiver(tmp_path):
    node = Receiver(tmp_path / "node")
    node.scp.start()
    yield node
    node.scp.stop()
    node.engine.dispose()


def test_storescu_series_is_spooled_and_recorded(receiver, head_ct_dir, storescu):
    files = sorted(head_ct_dir.glob("*.dcm"))
    result = run_storescu(storescu, receiver.scp.port, files)
    assert result.returncode == 0, result.stderr
    assert receiver.count() == len(files) == 28
    with receiver.factory() as session:
        series = session.scalars(select(Series)).one()
        assert series.state == SeriesState.RECEIVING
        assert series.instance_count == 28
        assert series.body_part_examined == "HEAD"
        instances = session.scalars(select(Instance)).all()
    original = {str(pydicom.dcmread(f).SOPInstanceUID): pydicom.dcmread(f) for f in files}
    for instance in instances:
        path = receiver.spool.absolute(instance.path)
        assert path.parent.parent.parent == receiver.spool.root
        stored = pydicom.dcmread(path)
        assert stored.PixelData == original[instance.sop_instance_uid].PixelData
        assert instance.transfer_syntax_uid == "1.2.840.10008.1.2.1"
        assert instance.calling_ae_title == "STORESCU"


def test_resent_instances_are_not_stored_twice(receiver, head_ct_dir, storescu):
    files = sorted(head_ct_dir.glob("*.dcm"))[:5]
    assert run_storescu(storescu, receiver.scp.port, files).returncode == 0
    with receiver.factory() as session:
        paths = [receiver.spool.absolute(p) for p in session.scalars(select(Instance.path))]
    mtimes = {p: p.stat().st_mtime_ns for p in paths}
    again = run_storescu(storescu, receiver.scp.port, files)
    assert again.returncode == 0, again.stderr
    assert receiver.count() == 5
    assert {p: p.stat().st_mtime_ns for p in paths} == mtimes


def test_jpeg_lossless_is_accepted_without_decoding(receiver, shared_data, storescu):
    files = sorted((shared_data / "chest-ct" / "jpeg-lossless-40").iterdir())[:3]
    result = run_storescu(storescu, receiver.scp.port, files, extra=("-xs",))
    assert result.returncode == 0, result.stderr
    with receiver.factory() as session:
        syntaxes = set(session.scalars(select(Instance.transfer_syntax_uid)))
    assert syntaxes == {"1.2.840.10008.1.2.4.70"}


def test_bad_input_is_refused_and_the_node_keeps_serving(receiver, head_ct_dir, tmp_path):
    good = pydicom.dcmread(head_ct_dir / "01.dcm")
    no_uid = copy.deepcopy(good)
    del no_uid.SOPInstanceUID
    traversal = copy.deepcopy(good)
    traversal.SOPInstanceUID = "../../x"
    ae = AE(ae_title="BADSENDER")
    ae.add_requested_context(CT_IMAGE_STORAGE, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", receiver.scp.port, ae_title="DICOM_NODE")
    assert assoc.is_established
    try:
        assert send_raw_c_store(assoc, CT_IMAGE_STORAGE, "1.2.3.4", b"not DICOM" * 50) == 0xC210
        assert (
            send_raw_c_store(assoc, CT_IMAGE_STORAGE, "1.2.3.5", encode_explicit_le(no_uid))
            == 0xC210
        )
        assert (
            send_raw_c_store(assoc, CT_IMAGE_STORAGE, "../../x", encode_explicit_le(traversal))
            == 0xC210
        )
        # The same association still works for a good instance.
        assert (
            send_raw_c_store(
                assoc, CT_IMAGE_STORAGE, str(good.SOPInstanceUID), encode_explicit_le(good)
            )
            == 0x0000
        )
    finally:
        assoc.release()
    assert receiver.count() == 1
    written = [p for p in receiver.settings.storage.base_dir.rglob("*") if p.is_file()]
    assert all(
        receiver.spool.root in p.parents or p.name.startswith("dicom-node.sqlite") for p in written
    )
    assert not (receiver.spool.root.parent.parent / "x").exists()
    assert not any(p.name == "x" or p.name == "x.dcm" for p in tmp_path.rglob("*"))


def test_disk_full_answers_out_of_resources(receiver, head_ct_dir, storescu, monkeypatch):
    """ENOSPC cannot be produced safely here, so the spool's write is made to fail (a mock)."""

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("dicom_node.receive.spool.tempfile.NamedTemporaryFile", full)
    good = pydicom.dcmread(head_ct_dir / "02.dcm")
    ae = AE(ae_title="SENDER")
    ae.add_requested_context(CT_IMAGE_STORAGE, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", receiver.scp.port, ae_title="DICOM_NODE")
    try:
        assert (
            send_raw_c_store(
                assoc, CT_IMAGE_STORAGE, str(good.SOPInstanceUID), encode_explicit_le(good)
            )
            == 0xA700
        )
    finally:
        assoc.release()
    assert receiver.count() == 0


def _make_spool_writes_fail(monkeypatch) -> None:
    """The spool's temporary file cannot be created, as on a full disk (a mock: ENOSPC
    cannot be produced safely here)."""

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("dicom_node.receive.spool.tempfile.NamedTemporaryFile", full)


def test_a_sender_reads_why_its_instance_was_refused(receiver, head_ct_dir, monkeypatch):
    """pynetdicom's public send_c_store gets the handler's status Dataset: Status and
    Error Comment (PS3.7 9.1.1.1.4, C.4.2.1.4), for a refusal of each kind."""
    _make_spool_writes_fail(monkeypatch)
    good = pydicom.dcmread(head_ct_dir / "03.dcm")
    ae = AE(ae_title="SENDER")
    ae.add_requested_context(CT_IMAGE_STORAGE, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", receiver.scp.port, ae_title="DICOM_NODE")
    assert assoc.is_established
    try:
        full = assoc.send_c_store(good)
        not_dicom = send_raw_c_store_response(assoc, CT_IMAGE_STORAGE, "1.2.3.4", b"not DICOM" * 50)
        other = copy.deepcopy(good)
        other.SOPInstanceUID = "1.2.3.4.5"
        mismatch = send_raw_c_store_response(
            assoc, CT_IMAGE_STORAGE, "1.2.3.4.6", encode_explicit_le(other)
        )
    finally:
        assoc.release()
    assert int(full.Status) == 0xA700
    assert str(full.ErrorComment) == "cannot write to the spool now", full
    assert int(not_dicom.Status) == 0xC210 and str(not_dicom.ErrorComment), not_dicom
    assert int(mismatch.Status) == 0xC210
    assert str(mismatch.ErrorComment) == (
        "SOP Instance UID differs from Affected SOP Instance UID"
    ), mismatch
    assert receiver.count() == 0


def test_storescu_shows_the_error_comment(receiver, head_ct_dir, storescu, monkeypatch):
    """dcmtk's storescu, a sender that is not pynetdicom, receives the Error Comment too."""
    _make_spool_writes_fail(monkeypatch)
    result = run_storescu(storescu, receiver.scp.port, [head_ct_dir / "04.dcm"], extra=("-d",))
    output = result.stdout + result.stderr
    assert "cannot write to the spool now" in output, output[-3000:]
    assert "0xa700" in output.lower(), output[-3000:]
    assert receiver.count() == 0


def test_calling_ae_allow_list(tmp_path, head_ct_dir, storescu):
    node = Receiver(tmp_path / "node", allowed_calling_ae_titles=["CT_SCANNER"])
    node.scp.start()
    try:
        file = [head_ct_dir / "03.dcm"]
        refused = run_storescu(storescu, node.scp.port, file, calling="INTRUDER")
        assert refused.returncode != 0
        assert node.count() == 0
        accepted = run_storescu(storescu, node.scp.port, file, calling="CT_SCANNER")
        assert accepted.returncode == 0, accepted.stderr
        assert node.count() == 1
    finally:
        node.scp.stop()
        node.engine.dispose()


def test_echo_cli(receiver):
    runner = CliRunner()
    ok = runner.invoke(
        cli_app, ["echo", "127.0.0.1", str(receiver.scp.port), "--aet", "DICOM_NODE"]
    )
    assert ok.exit_code == 0, ok.output
    assert "status 0x0000" in ok.output
    closed = subprocess.run(
        [sys.executable, "-m", "dicom_node.cli", "--help"], capture_output=True, text=True
    )
    assert closed.returncode == 0
