"""PACS outage recovery (issue 13 item 9): DEAD deliveries resume when the PACS answers C-ECHO.

Real pynetdicom peers on loopback: first no one listens on the port (the
transport error must be kept as text), then a Storage SCP that answers C-ECHO
and C-STORE. Bulk requeue from the CLI and the dashboard, and the jobs list's
"undelivered" mark, on the same database.
"""

from __future__ import annotations

import json
import re

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification
from sqlalchemy import select
from typer.testing import CliRunner

from dicom_node.audit import AuditLog
from dicom_node.cli import app as cli_app
from dicom_node.config import Destination, load_settings
from dicom_node.db.engine import make_engine, make_session_factory
from dicom_node.db.models import (
    AuditEvent,
    Delivery,
    DeliveryState,
    Job,
    JobState,
    StateChange,
)
from dicom_node.export.exporter import RESUMED_REASON, DeadDeliveryResumer, deliver_due
from dicom_node.export.scu import echo
from tests.conftest import free_port
from tests.factories import add_result_with_deliveries

pytestmark = pytest.mark.integration
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


class Clock:
    """Monotonic seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _pacs(port: int, received: list[str], *, sop_class: str = CT_IMAGE_STORAGE):
    ae = AE(ae_title="PACS")
    ae.add_supported_context(sop_class, ExplicitVRLittleEndian)
    ae.add_supported_context(Verification)
    return ae.start_server(
        ("127.0.0.1", port), block=False,
        evt_handlers=[(evt.EVT_C_STORE, lambda e: received.append("x") or 0x0000)],
    )  # fmt: skip


@pytest.fixture
def dead_setup(tmp_path, head_ct_dir, monkeypatch):
    """Two result objects whose deliveries went DEAD while no PACS listened on the port."""
    monkeypatch.setenv("DICOM_NODE_STORAGE__BASE_DIR", str(tmp_path))
    settings = load_settings()
    outbox = settings.storage.outbox_path
    outbox.mkdir(parents=True)
    ds = pydicom.dcmread(head_ct_dir / "10.dcm")
    ds.save_as(outbox / "obj.dcm")
    engine = make_engine(settings.storage.url)
    factory = make_session_factory(engine)
    with factory.begin() as session:
        _, deliveries = add_result_with_deliveries(session, ds)
        job = session.get(Job, deliveries[0].result_object.job_id)
        job.state = JobState.SUCCEEDED
        ids = [d.id for d in deliveries]
    port = free_port()
    destination = Destination(name="pacs", ae_title="PACS", host="127.0.0.1", port=port,
                              max_attempts=1, timeout_s=5)  # fmt: skip
    assert deliver_due(factory, [destination], outbox=outbox, calling_ae_title="NODE") == {
        "DEAD": 1
    }
    yield settings, factory, destination, outbox, ids
    engine.dispose()


def test_a_refused_connection_is_kept_as_text(dead_setup):
    _, factory, destination, _, ids = dead_setup
    with factory() as session:
        delivery = session.get(Delivery, ids[0])
        assert delivery.state == DeliveryState.DEAD
        error = delivery.last_error
    # Before: "association to PACS@127.0.0.1:port aborted or unreachable", no cause.
    assert f"PACS@127.0.0.1:{destination.port} failed" in error, error
    assert "Connection refused" in error, error


def test_dead_deliveries_resume_when_the_pacs_answers_c_echo(dead_setup):
    settings, factory, destination, outbox, ids = dead_setup
    clock, echoes = Clock(), []

    def counted_echo(peer):
        echoes.append(peer.port)
        return echo(peer)

    resumer = DeadDeliveryResumer(
        factory, [destination], calling_ae_title="NODE", interval_s=60, clock=clock,
        echoer=counted_echo, audit=AuditLog(session_factory=factory),
    )  # fmt: skip
    # PACS still down: nothing is requeued, and the next look within 60 s sends no C-ECHO.
    assert resumer.run() == {}
    assert resumer.run() == {}
    assert len(echoes) == 1
    received: list[str] = []
    server = _pacs(destination.port, received)
    try:
        clock.now += 30
        assert resumer.run() == {}, "C-ECHO sent before export.echo_interval_s had passed"
        clock.now += 31
        assert resumer.run() == {"pacs": 1}
        assert len(echoes) == 2
        assert deliver_due(factory, [destination], outbox=outbox,
                           calling_ae_title="NODE") == {"SENT": 1}  # fmt: skip
        clock.now += 61
        assert resumer.run() == {}  # nothing DEAD left: no C-ECHO at all
        assert len(echoes) == 2
    finally:
        server.shutdown()
    assert received == ["x"]
    with factory() as session:
        delivery = session.get(Delivery, ids[0])
        reasons = session.scalars(select(StateChange.reason).where(
            StateChange.entity == "delivery", StateChange.entity_id == ids[0])
            .order_by(StateChange.id)).all()  # fmt: skip
        audits = session.scalars(
            select(AuditEvent).where(AuditEvent.direction == "out").order_by(AuditEvent.id)
        ).all()
    assert (delivery.state, delivery.attempts, delivery.last_error) == (DeliveryState.SENT, 1, None)
    resumed = [r for r in reasons if r and r.startswith(RESUMED_REASON)]
    assert len(resumed) == 1 and "Connection refused" in resumed[0], reasons
    assert [a.outcome for a in audits] == ["FAILED", "RELEASED"]
    assert "C-ECHO" in audits[0].reason and "Connection refused" in audits[0].reason


def test_a_refused_delivery_is_not_resumed_by_c_echo(tmp_path, head_ct_dir, monkeypatch):
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
    port = free_port()
    destination = Destination(name="pacs", ae_title="PACS", host="127.0.0.1", port=port)
    # A PACS that answers C-ECHO but does not take CT images: refused, DEAD at once.
    server = _pacs(port, [], sop_class="1.2.840.10008.5.1.4.1.1.7")
    try:
        assert deliver_due(factory, [destination], outbox=outbox,
                           calling_ae_title="NODE") == {"DEAD": 1}  # fmt: skip
        resumer = DeadDeliveryResumer(factory, [destination], calling_ae_title="NODE",
                                      interval_s=1)  # fmt: skip
        assert resumer.run() == {}
    finally:
        server.shutdown()
    with factory() as session:
        assert session.get(Delivery, delivery_id).state == DeliveryState.DEAD
    engine.dispose()


def test_bulk_requeue_and_the_undelivered_mark(dead_setup):
    settings, factory, destination, outbox, ids = dead_setup
    runner = CliRunner()
    listed = runner.invoke(cli_app, ["jobs", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    (job,) = json.loads(listed.stdout)["jobs"]
    assert job["undelivered"] == "undelivered: 1 DEAD", job
    assert job["deliveries"] == {"DEAD": 1}
    table = runner.invoke(cli_app, ["jobs", "list"])
    assert "[undelivered: 1 DEAD]" in table.output, table.output

    assert runner.invoke(cli_app, ["deliveries", "requeue"]).exit_code == 2
    assert runner.invoke(cli_app, ["deliveries", "requeue", "1", "--all-dead"]).exit_code == 2
    other = runner.invoke(cli_app, ["deliveries", "requeue", "--all-dead", "--destination",
                                    "elsewhere", "--json"])  # fmt: skip
    assert json.loads(other.stdout) == {"requeued": [], "destination": "elsewhere"}
    bulk = runner.invoke(cli_app, ["deliveries", "requeue", "--all-dead", "--json"])
    assert bulk.exit_code == 0, bulk.output
    assert json.loads(bulk.stdout) == {"requeued": ids, "destination": None}
    (job,) = json.loads(runner.invoke(cli_app, ["jobs", "list", "--json"]).stdout)["jobs"]
    assert job["undelivered"] == "delivery pending: 1 PENDING", job
    assert "[delivery pending: 1 PENDING]" in runner.invoke(cli_app, ["jobs", "list"]).output

    # Dead again, then the dashboard's bulk button (admins only, with CSRF).
    assert deliver_due(factory, [destination], outbox=outbox, calling_ae_title="NODE") == {
        "DEAD": 1
    }
    from dicom_node.users import create_user
    from dicom_node.web.app import create_app

    with factory.begin() as session:
        create_user(session, "ada", "correct horse battery", "admin")
        create_user(session, "vic", "correct horse battery", "viewer")
    app = create_app(settings, session_factory=factory)

    def login(name):
        client = TestClient(app)
        page = client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        response = client.post("/login", data={"username": name, "password":
                               "correct horse battery", "csrf_token": token},
                               follow_redirects=False)  # fmt: skip
        assert response.status_code == 303
        return client

    viewer = login("vic")
    jobs_page = viewer.get("/jobs").text
    assert "undelivered: 1 DEAD" in jobs_page
    page = viewer.get("/deliveries").text
    assert "requeue-dead" not in page
    token = re.search(r'name="csrf_token" value="([^"]+)"', viewer.get("/").text).group(1)
    assert viewer.post("/deliveries/requeue-dead", data={"csrf_token": token},
                       follow_redirects=False).status_code == 403  # fmt: skip
    admin = login("ada")
    page = admin.get("/deliveries").text
    assert "Requeue all 1 to pacs" in page, page
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert admin.post("/deliveries/requeue-dead", data={"destination": "pacs"},
                      follow_redirects=False).status_code == 403  # fmt: skip
    response = admin.post("/deliveries/requeue-dead", data={"destination": "pacs",
                          "csrf_token": token}, follow_redirects=False)  # fmt: skip
    assert response.status_code == 303
    assert "1 DEAD deliveries to pacs requeued." in admin.get(response.headers["location"]).text
    with factory() as session:
        assert session.get(Delivery, ids[0]).state == DeliveryState.PENDING
