"""Admins requeue a DEAD delivery from the dashboard (POST with the session's CSRF token)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from dicom_node.db.engine import make_engine, make_session_factory
from dicom_node.db.models import Delivery, DeliveryState, Job, ResultObject, Series, Study
from dicom_node.web import WebServer, create_app
from tests.web.conftest import WebClient, add_user, csrf_token, node_settings


@pytest.fixture
def site(tmp_path):
    """A database with one DEAD and one SENT delivery, an admin, a viewer and the dashboard."""
    settings = node_settings(tmp_path)
    engine = make_engine(settings.storage.url)
    factory = make_session_factory(engine)
    with factory.begin() as session:
        study = Study(study_instance_uid="1.2.3")
        session.add(study)
        session.flush()
        series = Series(study_id=study.id, series_instance_uid="1.2.3.4")
        session.add(series)
        session.flush()
        job = Job(series_id=series.id, pipeline="ich", instance_set_digest="x")
        session.add(job)
        session.flush()
        obj = ResultObject(
            job_id=job.id,
            kind="SEG",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.66.4",
            sop_instance_uid="1.2.3.9",
            series_instance_uid="1.2.3.5",
            study_instance_uid="1.2.3",
            path="obj.dcm",
            size_bytes=1,
        )
        session.add(obj)
        session.flush()
        session.add_all(
            [
                Delivery(
                    result_object_id=obj.id,
                    destination="pacs",
                    state=DeliveryState.DEAD,
                    attempts=10,
                    last_error="association rejected",
                ),
                Delivery(
                    result_object_id=obj.id,
                    destination="viewer",
                    state=DeliveryState.SENT,
                    attempts=1,
                ),
            ]
        )
    add_user(settings, "ada", "admin")
    add_user(settings, "vic", "viewer")
    server = WebServer(create_app(settings, factory), "127.0.0.1", 0)
    server.start()
    try:
        yield factory, server
    finally:
        server.stop()
        engine.dispose()


def states(factory) -> dict[str, tuple[DeliveryState, int]]:
    with factory() as session:
        return {d.destination: (d.state, d.attempts) for d in session.scalars(select(Delivery))}


def test_admin_requeues_a_dead_delivery_with_csrf(site):
    factory, server = site
    admin = WebClient(server.url)
    assert admin.login("ada").status_code == 303
    page = admin.get("/deliveries").text
    assert page.count('class="requeue-delivery"') == 1  # only the DEAD one has the button
    assert admin.post("/deliveries/1/requeue").status_code == 403  # no CSRF token
    assert states(factory)["pacs"] == (DeliveryState.DEAD, 10)
    token = csrf_token(page)
    response = admin.post(
        "/deliveries/1/requeue", data={"csrf_token": token, "next": "/deliveries"}
    )
    assert response.status_code == 303 and response.headers["location"] == "/deliveries"
    assert states(factory)["pacs"] == (DeliveryState.PENDING, 0)
    assert "Delivery 1 requeued." in admin.get("/deliveries").text
    # A SENT delivery is never sent again; a foreign redirect target is not followed.
    response = admin.post(
        "/deliveries/2/requeue", data={"csrf_token": token, "next": "https://evil.example"}
    )
    assert response.headers["location"] == "/"
    assert "cannot be requeued" in admin.get("/deliveries").text
    assert states(factory)["viewer"] == (DeliveryState.SENT, 1)


def test_a_viewer_cannot_requeue_a_delivery(site):
    factory, server = site
    viewer = WebClient(server.url)
    assert viewer.login("vic").status_code == 303
    page = viewer.get("/deliveries").text
    assert 'class="requeue-delivery"' not in page
    response = viewer.post("/deliveries/1/requeue", data={"csrf_token": csrf_token(page)})
    assert response.status_code == 403
    assert states(factory)["pacs"] == (DeliveryState.DEAD, 10)
