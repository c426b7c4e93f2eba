"""The exporter against real Storage SCPs on loopback: sent, retried with backoff, dead."""

from __future__ import annotations

from datetime import timedelta

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from sqlalchemy import select

from dicom_node.config import Destination
from dicom_node.db.engine import make_engine, make_session_factory
from dicom_node.db.models import (
    Delivery,
    DeliveryState,
    StateChange,
    utcnow,
)
from dicom_node.export.exporter import deliver_due
from tests.conftest import free_port
from tests.factories import add_result_with_deliveries

pytestmark = pytest.mark.integration
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


class FakePacs:
    """A real pynetdicom Storage SCP whose answer to C-STORE the test chooses."""

    def __init__(self, status: int = 0x0000, sop_classes=(CT_IMAGE_STORAGE,)):
        self.status = status
        self.received: list[str] = []
        self.port = free_port()
        ae = AE(ae_title="FAKEPACS")
        for sop_class in sop_classes:
            ae.add_supported_context(sop_class, ExplicitVRLittleEndian)
        self.server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)]
        )

    def _store(self, event):
        self.received.append(str(event.request.AffectedSOPInstanceUID))
        return self.status

    def destination(self, **kwargs) -> Destination:
        return Destination(
            name="pacs",
            ae_title="FAKEPACS",
            host="127.0.0.1",
            port=self.port,
            backoff_initial_s=10,
            backoff_max_s=100,
            **kwargs,
        )

    def stop(self):
        self.server.shutdown()


@pytest.fixture
def outbox_with_delivery(tmp_path, head_ct_dir):
    """A DB with one result object (a real CT file copied to the outbox) and one delivery."""
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    ds = pydicom.dcmread(head_ct_dir / "05.dcm")
    ds.save_as(outbox / "obj.dcm")
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    factory = make_session_factory(engine)
    with factory.begin() as session:
        add_result_with_deliveries(session, ds)
    yield factory, outbox, str(ds.SOPInstanceUID)
    engine.dispose()


def delivery(factory) -> Delivery:
    with factory() as session:
        return session.scalars(select(Delivery)).one()


def test_delivery_is_sent_and_recorded(outbox_with_delivery):
    factory, outbox, sop_instance_uid = outbox_with_delivery
    pacs = FakePacs()
    try:
        counts = deliver_due(factory, [pacs.destination()], outbox=outbox, calling_ae_title="N")
    finally:
        pacs.stop()
    assert counts == {"SENT": 1}
    assert pacs.received == [sop_instance_uid]
    sent = delivery(factory)
    assert sent.state == DeliveryState.SENT and sent.attempts == 1 and sent.sent_at is not None


def test_failure_status_retries_with_backoff_then_dead(outbox_with_delivery):
    factory, outbox, _ = outbox_with_delivery
    pacs = FakePacs(status=0xA700)
    try:
        dest = pacs.destination(max_attempts=2)
        deliver_due(factory, [dest], outbox=outbox, calling_ae_title="N")
        first = delivery(factory)
        assert first.state == DeliveryState.RETRYING and "0xA700" in first.last_error
        wait_s = (first.next_attempt_at - utcnow()).total_seconds()
        assert 4 <= wait_s <= 10  # initial 10 s with jitter in [0.5, 1]
        # Not due yet: nothing is attempted.
        assert deliver_due(factory, [dest], outbox=outbox, calling_ae_title="N") == {}
        later = utcnow() + timedelta(seconds=11)
        deliver_due(factory, [dest], outbox=outbox, calling_ae_title="N", now=later)
    finally:
        pacs.stop()
    dead = delivery(factory)
    assert dead.state == DeliveryState.DEAD and dead.attempts == 2
    with factory() as session:
        states = [
            c.to_state
            for c in session.scalars(
                select(StateChange).where(StateChange.entity == "delivery").order_by(StateChange.id)
            )
        ]
    assert states == ["RETRYING", "DEAD"]


def test_unreachable_destination_is_retried(outbox_with_delivery):
    factory, outbox, _ = outbox_with_delivery
    dest = Destination(
        name="pacs", ae_title="NOBODY", host="127.0.0.1", port=free_port(), timeout_s=2
    )
    deliver_due(factory, [dest], outbox=outbox, calling_ae_title="N")
    assert delivery(factory).state == DeliveryState.RETRYING


def test_refused_sop_class_is_dead_at_once(outbox_with_delivery):
    factory, outbox, _ = outbox_with_delivery
    pacs = FakePacs(sop_classes=("1.2.840.10008.5.1.4.1.1.7",))  # SC only, not CT
    try:
        deliver_due(factory, [pacs.destination()], outbox=outbox, calling_ae_title="N")
    finally:
        pacs.stop()
    dead = delivery(factory)
    assert dead.state == DeliveryState.DEAD and "does not accept SOP class" in dead.last_error


def test_backoff_grows_and_is_capped():
    dest = Destination(
        name="d", ae_title="A", host="h", port=1, backoff_initial_s=5, backoff_max_s=60
    )
    for attempts, ceiling in [(1, 5), (2, 10), (3, 20), (5, 60), (12, 60)]:
        value = dest.retry_policy().delay(attempts)
        assert ceiling / 2 <= value <= ceiling
