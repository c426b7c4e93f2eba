"""PACS outage: Orthanc is down while results are ready; when it is back, all arrive once."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from dicom_node.app import Node
from dicom_node.config import load_settings
from dicom_node.db.models import Delivery, DeliveryState, Job, JobState
from tests.conftest import free_port, run_storescu, running_orthanc

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def test_results_wait_for_the_pacs_and_arrive_exactly_once(tmp_path, head_ct_dir, storescu):
    storage = tmp_path / "orthanc"
    dicom_port, http_port = free_port(), free_port()
    settings = load_settings(
        overrides={
            "storage": {"base_dir": str(tmp_path / "node")},
            "dicom": {"port": free_port()},
            "series": {"stable_after_s": 1.0, "sweep_interval_s": 0.3},
            "workers": {"poll_interval_s": 0.3},
            "export": {
                "sweep_interval_s": 0.3,
                "destinations": [
                    {
                        "name": "pacs",
                        "ae_title": "ORTHANC",
                        "host": "127.0.0.1",
                        "port": dicom_port,
                        "max_attempts": 100,
                        "backoff_initial_s": 0.2,
                        "backoff_max_s": 1.0,
                        "timeout_s": 2.0,
                    }
                ],
            },
        }
    )
    node = Node(settings)
    node.start()
    try:
        # The PACS is down: the results are built and wait in RETRYING.
        assert run_storescu(storescu, node.port, sorted(head_ct_dir.glob("*.dcm"))).returncode == 0

        def retried():
            with node.session_factory() as session:
                deliveries = session.scalars(select(Delivery)).all()
            return len(deliveries) >= 2 and all(
                d.state == DeliveryState.RETRYING and d.attempts >= 2 for d in deliveries
            )

        wait_for(retried, 120, "deliveries to be retried while the PACS is down")
        with node.session_factory() as session:
            assert session.scalars(select(Job)).one().state == JobState.SUCCEEDED
            errors = {d.last_error for d in session.scalars(select(Delivery))}
        assert all("ORTHANC" in e for e in errors), errors

        # The PACS comes back on the same address: everything arrives, once.
        with running_orthanc(storage, dicom_port=dicom_port, http_port=http_port) as orthanc:

            def sent():
                with node.session_factory() as session:
                    deliveries = session.scalars(select(Delivery)).all()
                return all(d.state == DeliveryState.SENT for d in deliveries) and deliveries

            deliveries = wait_for(sent, 60, "deliveries after the PACS came back")
            time.sleep(2 * settings.export.sweep_interval_s)
            instances = orthanc.get("/instances")
            sop_uids = sorted(
                orthanc.get(f"/instances/{i}/tags?simplify")["SOPInstanceUID"] for i in instances
            )
            statistics = orthanc.get("/statistics")
        with node.session_factory() as session:
            expected = sorted(
                d.result_object.sop_instance_uid for d in session.scalars(select(Delivery))
            )
        assert sop_uids == expected and len(sop_uids) == len(deliveries)
        # Orthanc counts every stored instance; a duplicate would show as more than 2.
        assert statistics["CountInstances"] == len(deliveries)
    finally:
        node.stop()
