"""A full node under 8 simultaneous senders, and its logs searched for patient identifiers.

One run of ``dicom-node serve`` (a real process, all its output in one log file)
with a real Orthanc as the PACS:

* 8 dcmtk ``storescu`` processes send 8 different series at the same time
  (copies of the real GE head CT with new UIDs; 4 keep the file's patient name
  and ID, 4 carry distinctive sentinel values), then the Philips phantom head
  and a chest CT (not eligible) follow;
* no acknowledged instance is lost, no "database is locked" appears anywhere,
  every eligible series is analysed exactly once and its results reach Orthanc
  once, and every association is in the audit table;
* the whole log is searched for the PatientName and PatientID of every file
  that was sent (read from the files themselves): none appears.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import func, select

from dicom_node.config import load_settings
from dicom_node.db.engine import make_engine, make_session_factory
from dicom_node.db.models import (
    AuditEvent,
    Delivery,
    DeliveryState,
    Instance,
    Job,
    JobState,
    ResultObject,
    Series,
    SeriesState,
)
from dicom_node.series.volume import read_datasets
from dicom_node.training.synthetic import with_new_uids
from tests.conftest import free_port, running_orthanc

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SENDERS = 8
#: Level of the node's log; DICOM_NODE_TEST_LOG_LEVEL=DEBUG searches the debug output too.
LOG_LEVEL = os.environ.get("DICOM_NODE_TEST_LOG_LEVEL", "INFO")
#: Attributes whose values are patient identifiers (PS3.15 E.1-1 basic profile, the core).
IDENTIFYING = ("PatientName", "PatientID", "OtherPatientIDs", "PatientBirthDate", "AccessionNumber")
#: Attributes that are not identifiers; an identifier found inside one of them, or in the
#: node's own configuration (the phantom's PatientName "HEAD" is a word of its Study
#: Description and of the selection rules), cannot be told apart in a log.
DESCRIPTIVE = (
    "BodyPartExamined",
    "StudyDescription",
    "SeriesDescription",
    "ProtocolName",
    "Modality",
    "Manufacturer",
    "ImageType",
    "ConvolutionKernel",
)
CONFIGURATION = resources.files("dicom_node").joinpath("defaults.toml").read_text("utf-8")


@dataclass
class Run:
    """What the module's single node run produced."""

    log: str
    senders: list[subprocess.CompletedProcess]
    send_s: float
    sent: dict[str, int]  # SeriesInstanceUID -> instances sent
    eligible: set[str]
    identifiers: dict[str, str]  # value -> where it came from
    skipped: dict[str, str] = field(default_factory=dict)
    settings: object = None
    orthanc_instances: int = 0
    analysis_s: float = 0.0


def identifiers_of(datasets, where: str, into: dict[str, str], skipped: dict[str, str]) -> None:
    for ds in datasets:
        descriptive = [str(ds.get(k, "")) for k in DESCRIPTIVE] + [CONFIGURATION]
        for keyword in IDENTIFYING:
            value = str(ds.get(keyword, "") or "").strip()
            if not value:
                continue
            for text in {value, value.replace("^", " ").strip()}:
                if len(text) < 4 or any(text in d for d in descriptive):
                    skipped[text] = f"{where} {keyword} (also in descriptions or settings)"
                else:
                    into[text] = f"{where} {keyword}"


def wait_for_port(port: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"the node did not listen on {port}")


def storescu_command(storescu: str, port: int, folder: Path, calling: str) -> list[str]:
    return [
        storescu,
        "-aet",
        calling,
        "-aec",
        "DICOM_NODE",
        "+sd",
        "+r",
        "127.0.0.1",
        str(port),
        str(folder),
    ]


@pytest.fixture(scope="module")
def run(tmp_path_factory, shared_data, storescu) -> Run:
    base = tmp_path_factory.mktemp("concurrency")
    head = read_datasets(sorted((shared_data / "head-ct-ge").glob("*.dcm")))
    identifiers: dict[str, str] = {}
    skipped: dict[str, str] = {}
    identifiers_of(head[:1], "head-ct-ge", identifiers, skipped)
    folders, sent, eligible = [], {}, set()
    for index in range(SENDERS):
        copy = with_new_uids(head, seed=500 + index)
        if index >= SENDERS // 2:
            for ds in copy:
                ds.PatientName = f"SENTINEL^PATIENT{index}^QX"
                ds.PatientID = f"SENTINEL-ID-{index}-7Q3Z"
            identifiers_of(copy[:1], f"copy {index}", identifiers, skipped)
        folder = base / f"copy-{index}"
        folder.mkdir()
        for number, ds in enumerate(copy):
            ds.save_as(folder / f"{number:03d}.dcm", enforce_file_format=True)
        folders.append(folder)
        uid = str(copy[0].SeriesInstanceUID)
        sent[uid] = len(copy)
        eligible.add(uid)
    phantom = shared_data / "head-phantom-philips" / "S2010"
    chest = shared_data / "chest-ct" / "lung-30"
    for folder, name in ((phantom, "phantom S2010"), (chest, "chest lung-30")):
        datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.iterdir())]
        identifiers_of(datasets[:1], name, identifiers, skipped)
        sent[str(datasets[0].SeriesInstanceUID)] = len(datasets)
    eligible.add(
        str(pydicom.dcmread(next(phantom.iterdir()), stop_before_pixels=True).SeriesInstanceUID)
    )

    with running_orthanc(base / "orthanc") as orthanc:
        port = free_port()
        config = base / "node.toml"
        config.write_text(f"""
log_level = "{LOG_LEVEL}"
[dicom]
port = {port}
# The eight modalities here all send from 127.0.0.1; on a network each has its own address.
max_associations_per_address = {SENDERS}
[storage]
base_dir = "{base / "node"}"
[series]
stable_after_s = 3.0
sweep_interval_s = 0.5
[workers]
processes = 2
poll_interval_s = 0.3
[export]
sweep_interval_s = 0.5
[[export.destinations]]
name = "orthanc"
ae_title = "{orthanc.ae_title}"
host = "127.0.0.1"
port = {orthanc.dicom_port}
""")
        log_path = base / "node.log"
        exe = shutil.which("dicom-node")
        with open(log_path, "w") as log:
            node = subprocess.Popen(
                [exe, "serve", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT
            )
        try:
            wait_for_port(port)
            env = dict(os.environ, TCP_NODELAY="1")
            started = time.monotonic()
            processes = [
                subprocess.Popen(
                    storescu_command(storescu, port, folder, f"CT_{i}"),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=env,
                )
                for i, folder in enumerate(folders)
            ]
            results = []
            for process in processes:
                out, err = process.communicate(timeout=300)
                results.append(
                    subprocess.CompletedProcess(process.args, process.returncode, out, err)
                )
            send_s = time.monotonic() - started
            for folder in (phantom, chest):
                results.append(
                    subprocess.run(
                        storescu_command(storescu, port, folder, "PACS"),
                        capture_output=True,
                        text=True,
                        env=env,
                        timeout=300,
                    )
                )
            settings = load_settings(config)
            engine = make_engine(settings.storage.url)
            factory = make_session_factory(engine)
            deadline = time.monotonic() + 600
            while True:
                with factory() as session:
                    jobs = session.scalars(select(Job)).all()
                    deliveries = session.scalars(select(Delivery)).all()
                done = (
                    len(jobs) >= len(eligible)
                    and all(j.state in (JobState.SUCCEEDED, JobState.FAILED) for j in jobs)
                    and deliveries
                    and all(d.state in (DeliveryState.SENT, DeliveryState.DEAD) for d in deliveries)
                )
                if done:
                    break
                assert time.monotonic() < deadline, [(j.id, str(j.state)) for j in jobs]
                time.sleep(1.0)
            analysis_s = time.monotonic() - started
            time.sleep(2.0)  # let the audit rows of the last associations land
            orthanc_instances = len(orthanc.get("/instances"))
            engine.dispose()
        finally:
            node.send_signal(signal.SIGTERM)
            try:
                node.wait(60)
            except subprocess.TimeoutExpired:
                node.kill()
    return Run(
        log=log_path.read_text(errors="replace"),
        senders=results,
        send_s=send_s,
        sent=sent,
        eligible=eligible,
        identifiers=identifiers,
        skipped=skipped,
        settings=settings,
        orthanc_instances=orthanc_instances,
        analysis_s=analysis_s,
    )


def session_of(run: Run):
    engine = make_engine(run.settings.storage.url)
    return engine, make_session_factory(engine)()


def test_eight_simultaneous_senders_lose_no_instance(run):
    assert all(r.returncode == 0 for r in run.senders), [
        r.stderr[-500:] for r in run.senders if r.returncode
    ]
    engine, session = session_of(run)
    with session:
        counts = dict(
            session.execute(
                select(Series.series_instance_uid, func.count(Instance.id))
                .join(Instance, Instance.series_id == Series.id)
                .group_by(Series.series_instance_uid)
            ).all()
        )
        paths = session.scalars(select(Instance.path)).all()
    engine.dispose()
    assert counts == run.sent
    spool = run.settings.storage.spool_path
    assert all((spool / p).is_file() for p in paths)
    print(
        f"\n{SENDERS} simultaneous senders: {SENDERS * 28} instances in {run.send_s:.1f} s; "
        f"{sum(run.sent.values())} instances in {len(run.sent)} series received, "
        f"all results delivered {run.analysis_s:.0f} s after the first instance"
    )


def test_no_database_is_locked_error(run):
    assert not re.search(r"database is locked|OperationalError", run.log, re.IGNORECASE)


def test_every_series_is_analysed_once_and_delivered_once(run):
    engine, session = session_of(run)
    with session:
        rows = session.execute(
            select(Series.series_instance_uid, Series.state, Job.state).outerjoin(
                Job, Job.series_id == Series.id
            )
        ).all()
        objects = session.scalar(select(func.count(ResultObject.id)))
        states = set(session.scalars(select(Delivery.state)))
    engine.dispose()
    jobs: dict[str, list] = {}
    for uid, series_state, job_state in rows:
        jobs.setdefault(uid, [])
        if job_state is not None:
            jobs[uid].append(job_state)
        if uid not in run.eligible:
            assert series_state == SeriesState.NOT_ELIGIBLE
    assert {uid: js for uid, js in jobs.items() if uid in run.eligible} == {
        uid: [JobState.SUCCEEDED] for uid in run.eligible
    }
    assert states == {DeliveryState.SENT}
    assert run.orthanc_instances == objects  # each result object reached Orthanc once


def test_every_association_is_audited(run):
    engine, session = session_of(run)
    with session:
        incoming = session.scalars(select(AuditEvent).where(AuditEvent.direction == "in")).all()
        outgoing = session.scalars(select(AuditEvent).where(AuditEvent.direction == "out")).all()
    engine.dispose()
    stored = sorted(r.instances for r in incoming if r.outcome == "RELEASED")
    assert stored == sorted(run.sent.values())
    assert {r.calling_ae_title for r in incoming} >= {f"CT_{i}" for i in range(SENDERS)}
    assert outgoing and all(r.outcome == "SENT" and r.destination == "orthanc" for r in outgoing)
    assert "direction=in outcome=RELEASED" in run.log


def test_the_logs_hold_no_patient_name_or_id(run):
    assert run.identifiers and len(run.log) > 10_000
    found = {value: where for value, where in run.identifiers.items() if value in run.log}
    print(
        f"\nsearched {len(run.log)} characters of log for {len(run.identifiers)} patient "
        f"identifiers: {sorted(run.identifiers)}; not searchable: {run.skipped}"
    )
    assert not found, found
