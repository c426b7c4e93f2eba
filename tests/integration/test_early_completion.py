"""Early completion over real associations: proven series do not wait, others are not split.

A node (no workers, no dashboard) receives real series from dcmtk storescu. Its
sweep turns a proven series COMPLETE and then DISPATCHED with one job; a series
that proves nothing waits for the quiet time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import func, select

from dicom_node.app import Node
from dicom_node.config import load_settings
from dicom_node.db.models import Association, Instance, Job, Series, SeriesState
from tests.conftest import free_port, run_storescu

pytestmark = pytest.mark.integration


@pytest.fixture
def make_node(tmp_path):
    nodes = []

    def make(**series) -> Node:
        receiver_processes = series.pop("receiver_processes", 0)
        settings = load_settings(
            overrides={
                "storage": {"base_dir": str(tmp_path / f"node{len(nodes)}")},
                "dicom": {"port": free_port(), "receiver_processes": receiver_processes},
                "series": {"sweep_interval_s": 0.3, "release_grace_s": 1.0, **series},
                "workers": {"processes": 0},
                "web": {"enabled": False},
                "retention": {"enabled": False},
            }
        )
        node = Node(settings)
        node.start()
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.stop()


def series_rows(node: Node) -> list[Series]:
    with node.session_factory() as session:
        return list(session.scalars(select(Series)))


def wait_for_state(node: Node, state: SeriesState, timeout_s: float) -> Series:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rows = series_rows(node)
        if rows and rows[0].state == state:
            return rows[0]
        time.sleep(0.2)
    states = [(s.state, s.state_reason) for s in rows]
    pytest.fail(f"series not {state} after {timeout_s} s: {states}")


def jobs(node: Node) -> list[Job]:
    with node.session_factory() as session:
        return list(session.scalars(select(Job)))


def by_position(folder: Path) -> list[Path]:
    """Files ordered along the slice normal (z here), so that any first part is contiguous."""
    files = [p for p in folder.iterdir() if p.is_file()]
    return sorted(
        files,
        key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]),
    )


def test_even_series_in_one_association_completes_before_the_quiet_time(
    make_node, shared_data, storescu
):
    node = make_node(stable_after_s=60.0)
    files = by_position(shared_data / "head-phantom-philips/S2010")
    sent = run_storescu(storescu, node.port, files)
    assert sent.returncode == 0, sent.stderr
    series = wait_for_state(node, SeriesState.DISPATCHED, 20)
    assert series.completion_basis.startswith(
        "geometry: 28 slices, even 5.000 mm steps; 1 association(s) released"
    )
    assert (series.completed_at - series.last_instance_at).total_seconds() < 10
    assert len(jobs(node)) == 1


def test_uneven_ge_head_waits_for_the_quiet_time(make_node, head_ct_dir, storescu):
    node = make_node(stable_after_s=5.0)
    sent = run_storescu(storescu, node.port, sorted(head_ct_dir.glob("*.dcm")))
    assert sent.returncode == 0, sent.stderr
    time.sleep(3.0)  # release + grace (1 s) + sweeps have passed
    assert series_rows(node)[0].state == SeriesState.RECEIVING
    series = wait_for_state(node, SeriesState.DISPATCHED, 30)
    assert series.completion_basis.startswith("quiet time: no new instance for")
    assert (series.completed_at - series.last_instance_at).total_seconds() >= 5.0


def test_images_in_acquisition_proves_the_uneven_ge_head(
    make_node, head_ct_dir, storescu, tmp_path
):
    copies = tmp_path / "iia"
    copies.mkdir()
    for path in sorted(head_ct_dir.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.ImagesInAcquisition = 28
        ds.save_as(copies / path.name, enforce_file_format=True)
    node = make_node(stable_after_s=60.0)
    assert run_storescu(storescu, node.port, sorted(copies.iterdir())).returncode == 0
    series = wait_for_state(node, SeriesState.DISPATCHED, 20)
    assert series.completion_basis.startswith("ImagesInAcquisition: 28 of 28 instances received")


def test_series_split_over_two_associations_is_not_split(make_node, shared_data, storescu):
    """The first half alone is an even stack; the second association follows at once."""
    node = make_node(stable_after_s=30.0, early_completion_across_associations=True)
    files = by_position(shared_data / "head-phantom-philips/S2010")
    for part in (files[:14], files[14:]):
        assert run_storescu(storescu, node.port, part).returncode == 0
    series = wait_for_state(node, SeriesState.DISPATCHED, 20)
    assert series.instance_count == 28
    assert "2 association(s) released" in series.completion_basis
    time.sleep(1.5)
    assert len(jobs(node)) == 1


def test_concurrent_associations_of_one_series_make_one_job(make_node, shared_data, storescu):
    node = make_node(stable_after_s=30.0, early_completion_across_associations=True)
    files = by_position(shared_data / "head-phantom-philips/S2010")
    env = dict(os.environ, TCP_NODELAY="1")
    senders = [
        subprocess.Popen(
            [storescu, "-aec", "DICOM_NODE", "127.0.0.1", str(node.port), *map(str, part)], env=env
        )
        for part in (files[0::2], files[1::2])
    ]
    assert [s.wait(120) for s in senders] == [0, 0]
    series = wait_for_state(node, SeriesState.DISPATCHED, 20)
    assert series.instance_count == 28
    assert len(jobs(node)) == 1


def test_one_association_per_instance_makes_one_job(make_node, shared_data, storescu):
    """Between two associations the sender has none open: the grace time bridges the gap."""
    node = make_node(stable_after_s=30.0, early_completion_across_associations=True)
    for path in by_position(shared_data / "head-phantom-philips/S2010"):
        assert run_storescu(storescu, node.port, [path]).returncode == 0
    series = wait_for_state(node, SeriesState.DISPATCHED, 20)
    assert series.instance_count == 28
    assert "28 association(s) released" in series.completion_basis
    time.sleep(1.5)
    assert len(jobs(node)) == 1


def test_a_router_pausing_mid_series_gets_one_job_by_default(make_node, shared_data, storescu):
    """Orthanc-style routing: one association per instance, a pause longer than the grace
    time after the first half (itself an even stack). By default a series carried by several
    associations waits for the quiet time, so the whole series is analysed once."""
    node = make_node(stable_after_s=6.0)
    files = by_position(shared_data / "head-phantom-philips/S2010")
    for path in files[:14]:
        assert run_storescu(storescu, node.port, [path]).returncode == 0
    time.sleep(3.0)  # three times release_grace_s
    assert series_rows(node)[0].state == SeriesState.RECEIVING
    for path in files[14:]:
        assert run_storescu(storescu, node.port, [path]).returncode == 0
    series = wait_for_state(node, SeriesState.DISPATCHED, 30)
    assert series.instance_count == 28
    assert series.completion_basis.startswith("quiet time"), series.completion_basis
    assert len(jobs(node)) == 1


def test_receiver_processes_share_the_port_and_are_replaced(make_node, shared_data, storescu):
    node = make_node(
        stable_after_s=30.0, receiver_processes=2, early_completion_across_associations=True
    )
    files = by_position(shared_data / "head-phantom-philips/S2010")
    env = dict(os.environ, TCP_NODELAY="1")
    senders = [
        subprocess.Popen(
            [storescu, "-aec", "DICOM_NODE", "127.0.0.1", str(node.port), *map(str, part)], env=env
        )
        for part in (files[:14], files[14:])
    ]
    assert [s.wait(120) for s in senders] == [0, 0]
    series = wait_for_state(node, SeriesState.DISPATCHED, 20)
    assert series.instance_count == 28
    with node.session_factory() as session:
        assert session.scalar(select(func.count(Instance.id))) == 28
        assert {a.outcome for a in session.scalars(select(Association))} == {"RELEASED"}
    victim = node.receivers._receivers[0][0]
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(10)
    # The node's own 5 s check may get there first; either way one replacement.
    node.receivers.check()
    pids = [process.pid for process, _ in node.receivers._receivers]
    assert node.receivers.alive() == 2
    assert victim.pid not in pids and len(set(pids)) == 2
    ge = sorted((shared_data / "head-ct-ge").glob("*.dcm"))
    assert run_storescu(storescu, node.port, ge).returncode == 0
    with node.session_factory() as session:
        assert session.scalar(select(func.count(Instance.id))) == 28 + 28


def test_a_dead_receiver_is_replaced_once_when_checks_race(make_node):
    """The scheduler's 5 s check and a caller's check() may run together.

    Before check() was serialised, both started a replacement for the same
    death and both closed its pipe (CI: ``OSError: [Errno 9] Bad file
    descriptor``).
    """
    node = make_node(stable_after_s=30.0, receiver_processes=1)
    victim = node.receivers._receivers[0][0]
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(10)
    results: list[int] = []
    errors: list[BaseException] = []

    def check() -> None:
        try:
            results.append(node.receivers.check())
        except BaseException as err:  # noqa: BLE001 - the test reports it
            errors.append(err)

    threads = [threading.Thread(target=check) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(results) == 3 and node.receivers.alive() == 1
    assert sum(results) <= 1  # 0 when the node's own check replaced it first
    assert victim.pid != node.receivers._receivers[0][0].pid
