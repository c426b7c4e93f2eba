"""A DEAD delivery requeued from the command line is sent again, once, with fresh attempts."""

from __future__ import annotations

import json

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from sqlalchemy import select
from typer.testing import CliRunner

from dicom_node.cli import app as cli_app
from dicom_node.config import Destination, load_settings
from dicom_node.db.engine import make_engine, make_session_factory
from dicom_node.db.models import (
    Delivery,
    DeliveryState,
    StateChange,
)
from dicom_node.export.exporter import deliver_due
from tests.conftest import free_port
from tests.factories import add_result_with_deliveries

pytestmark = pytest.mark.integration
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def test_dead_delivery_requeued_from_the_cli_is_delivered(tmp_path, head_ct_dir, monkeypatch):
    monkeypatch.setenv("DICOM_NODE_STORAGE__BASE_DIR", str(tmp_path))
    settings = load_settings()
    outbox = settings.storage.outbox_path
    outbox.mkdir(parents=True)
    ds = pydicom.dcmread(head_ct_dir / "10.dcm")
    ds.save_as(outbox / "obj.dcm")
    engine = make_engine(settings.storage.url)
    factory = make_session_factory(engine)
    with factory.begin() as session:
        _, (delivery,) = add_result_with_deliveries(session, ds)
        delivery_id = delivery.id

    received: list[str] = []
    port = free_port()
    # First a peer that refuses the SOP class: a permanent failure, DEAD at once.
    refusing = AE(ae_title="PACS")
    refusing.add_supported_context("1.2.840.10008.5.1.4.1.1.7", ExplicitVRLittleEndian)
    server = refusing.start_server(("127.0.0.1", port), block=False)
    destination = Destination(name="pacs", ae_title="PACS", host="127.0.0.1", port=port)
    try:
        assert deliver_due(factory, [destination], outbox=outbox, calling_ae_title="NODE") == {
            "DEAD": 1
        }
    finally:
        server.shutdown()

    runner = CliRunner()
    result = runner.invoke(cli_app, ["deliveries", "requeue", str(delivery_id), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "delivery_id": delivery_id,
        "from": "DEAD",
        "to": "PENDING",
    }
    again = runner.invoke(cli_app, ["deliveries", "requeue", str(delivery_id)])
    assert again.exit_code == 1 and "only DEAD ones" in again.output
    assert runner.invoke(cli_app, ["deliveries", "requeue", "999"]).exit_code == 1

    # The PACS now takes the object: the requeued delivery is sent, once.
    accepting = AE(ae_title="PACS")
    accepting.add_supported_context(CT_IMAGE_STORAGE, ExplicitVRLittleEndian)
    server = accepting.start_server(
        ("127.0.0.1", port),
        block=False,
        evt_handlers=[(evt.EVT_C_STORE, lambda e: received.append("x") or 0x0000)],
    )
    try:
        assert deliver_due(factory, [destination], outbox=outbox, calling_ae_title="NODE") == {
            "SENT": 1
        }
        assert deliver_due(factory, [destination], outbox=outbox, calling_ae_title="NODE") == {}
    finally:
        server.shutdown()
    assert received == ["x"]
    with factory() as session:
        row = session.get(Delivery, delivery_id)
        reasons = session.scalars(
            select(StateChange.reason)
            .where(StateChange.entity == "delivery", StateChange.entity_id == delivery_id)
            .order_by(StateChange.id)
        ).all()
    assert (row.state, row.attempts, row.last_error) == (DeliveryState.SENT, 1, None)
    assert any(r and r.startswith("requeued by an operator (was:") for r in reasons)
    engine.dispose()
