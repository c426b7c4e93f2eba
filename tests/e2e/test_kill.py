"""Crash safety: SIGKILL the node again and again while storescu sends and jobs run.

At the end every instance the node acknowledged is in the spool and the DB, the
series has exactly one delivered result set in a real Orthanc, nothing is left
RUNNING, and no orphaned worker process survives its node.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select

from dicom_node.config import load_settings
from dicom_node.db.engine import make_engine, make_session_factory
from dicom_node.db.models import Delivery, DeliveryState, Instance, Job, JobState
from tests.conftest import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KILLS = int(os.environ.get("DICOM_NODE_TEST_KILLS", "20"))


def acknowledged(output: str) -> set[str]:
    """Files storescu -v reports as answered with Success."""
    done, current = set(), None
    for line in output.splitlines():
        if m := re.match(r"I: Sending file: (.+)$", line):
            current = m.group(1)
        elif re.search(r"Received Store Response \((Success|Status: 0x0000)", line) and current:
            done.add(current)
    return done


def processes_with(marker: str) -> list[int]:
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


def test_no_acknowledged_instance_is_lost_and_one_result_set_is_delivered(
    tmp_path, shared_data, storescu, orthanc
):
    files = sorted((shared_data / "head-phantom-philips" / "S2020").iterdir())
    port = free_port()
    config = tmp_path / "node.toml"
    config.write_text(f"""
[dicom]
port = {port}
[storage]
base_dir = "{tmp_path / "node"}"
[series]
stable_after_s = 4.0
sweep_interval_s = 0.3
[workers]
poll_interval_s = 0.3
heartbeat_interval_s = 1.0
[export]
sweep_interval_s = 0.5
[[export.destinations]]
name = "orthanc"
ae_title = "{orthanc.ae_title}"
host = "127.0.0.1"
port = {orthanc.dicom_port}
backoff_initial_s = 0.5
backoff_max_s = 2.0
""")
    marker = f"DICOM_NODE_KILL_TEST={uuid.uuid4()}"
    env = dict(os.environ, **dict([marker.split("=")]))
    exe = shutil.which("dicom-node")

    logs: list[Path] = []

    def start() -> subprocess.Popen:
        logs.append(tmp_path / f"node-{len(logs)}.log")
        with open(logs[-1], "w") as log:
            return subprocess.Popen(
                [exe, "serve", "--config", str(config)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def last_logs() -> str:
        return "\n".join(f"--- {p.name}\n" + p.read_text()[-2500:] for p in logs[-2:])

    node = start()
    acked: set[str] = set()
    sending_done = threading.Event()

    attempts: list[str] = []

    def send() -> None:
        deadline = time.monotonic() + 600
        try:
            while time.monotonic() < deadline:
                remaining = [f for f in files if str(f) not in acked]
                if not remaining:
                    break
                # -to/-ta/-td: give up on a peer that stops answering instead of hanging.
                result = subprocess.run(
                    [
                        storescu,
                        "-v",
                        "-to",
                        "10",
                        "-ta",
                        "10",
                        "-td",
                        "10",
                        "-aec",
                        "DICOM_NODE",
                        "127.0.0.1",
                        str(port),
                        *map(str, remaining),
                    ],
                    capture_output=True,
                    text=True,
                    env=dict(os.environ, TCP_NODELAY="1"),
                    timeout=120,
                )
                newly = acknowledged(result.stdout + result.stderr)
                acked.update(newly)
                attempts.append(
                    f"rc={result.returncode} sent={len(remaining)} "
                    f"acked={len(newly)} {result.stderr.strip()[-200:]!r}"
                )
                if result.returncode != 0:
                    time.sleep(0.2)
        except Exception as err:  # noqa: BLE001 - reported by the test below
            attempts.append(f"sender failed: {err!r}")
        finally:
            sending_done.set()

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    rng = random.Random(20261121)
    kills = 0
    try:
        while kills < KILLS:
            time.sleep(rng.uniform(0.3, 2.5))
            node.send_signal(signal.SIGKILL)
            node.wait()
            kills += 1
            node = start()
        assert sending_done.wait(300), (
            "storescu could not finish sending\n" + "\n".join(attempts[-8:]) + last_logs()
        )
        assert len(acked) == len(files) == 140, "\n".join(attempts[-10:]) + last_logs()
        settings = load_settings(config)
        engine = make_engine(settings.storage.url)
        factory = make_session_factory(engine)
        deadline = time.monotonic() + 300
        while True:
            with factory() as session:
                jobs = session.scalars(select(Job)).all()
                deliveries = session.scalars(select(Delivery)).all()
            if (
                jobs
                and all(j.state == JobState.SUCCEEDED for j in jobs)
                and deliveries
                and all(d.state == DeliveryState.SENT for d in deliveries)
            ):
                break
            assert time.monotonic() < deadline, [(j.id, str(j.state), j.error) for j in jobs]
            time.sleep(0.5)
    finally:
        node.send_signal(signal.SIGTERM)
        node.wait(60)
    time.sleep(2.0)  # workers of killed nodes notice their parent is gone within ~1 s
    assert processes_with(marker) == [], "orphaned worker processes survived their node"

    # Every acknowledged instance is in the DB and its file is in the spool, intact.
    with factory() as session:
        rows = {i.sop_instance_uid: i.path for i in session.scalars(select(Instance))}
        jobs = session.scalars(select(Job)).all()
    engine.dispose()
    expected = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): f for f in files}
    assert set(rows) == set(expected)
    for uid, path in rows.items():
        stored = pydicom.dcmread(settings.storage.spool_path / path)
        assert stored.PixelData == pydicom.dcmread(expected[uid]).PixelData
    # The series was analysed once and one result set reached Orthanc: the phantom is
    # refused by the ich input checks, so that set is one "not analysable" SR.
    assert len(jobs) == 1, [(j.id, j.instance_set_digest[:8]) for j in jobs]
    assert jobs[0].result_summary["not_analysable"]["gate"] == "brain_content"
    modalities = sorted(
        orthanc.get(f"/instances/{i}/tags?simplify")["Modality"] for i in orthanc.get("/instances")
    )
    assert modalities == ["SR"]
    print(f"kills: {kills}, instances acknowledged: {len(acked)}, jobs: {len(jobs)}")
