"""Shared fixtures: the real test data, free loopback ports, dcmtk, dciodvfy and a real Orthanc."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[1]

# Every node the tests start serves its dashboard on a free port: the default (8080) may be
# taken, and several nodes run at once. Inherited by `dicom-node serve` subprocesses too.
os.environ.setdefault("DICOM_NODE_WEB__PORT", "0")
SHARED_DATA = (REPO_ROOT / ".." / "shared" / "data").resolve()

#: Set to 1 where ../shared/data must be present (``.ci/run`` does): the tests that need it
#: then fail when it is missing instead of being skipped.
REQUIRE_SHARED_DATA_ENV = "DICOM_NODE_REQUIRE_SHARED_DATA"

#: Fixtures that read ../shared/data: a test that uses one, directly or through another
#: fixture, gets the ``needs_shared_data`` marker without writing it.
SHARED_DATA_FIXTURES = frozenset({"shared_data", "head_ct_dir"})


def shared_data_required() -> bool:
    """True when ``DICOM_NODE_REQUIRE_SHARED_DATA`` is set (to anything but "" or "0")."""
    return os.environ.get(REQUIRE_SHARED_DATA_ENV, "") not in ("", "0")


def _missing_data_message() -> str:
    return (
        f"test data not found at {SHARED_DATA}: the repo expects ../shared/data next to "
        f"the checkout"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests that read ../shared/data; skip them when it is absent and not required.

    A clone without ../shared runs the rest of the suite; CI sets
    ``DICOM_NODE_REQUIRE_SHARED_DATA=1``, so there a missing folder fails those tests.
    """
    skip = None
    if not SHARED_DATA.is_dir() and not shared_data_required():
        skip = pytest.mark.skip(
            reason=f"{_missing_data_message()} (set {REQUIRE_SHARED_DATA_ENV}=1 to fail instead)"
        )
    for item in items:
        if SHARED_DATA_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.needs_shared_data)
        if skip is not None and item.get_closest_marker("needs_shared_data") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real DICOM data in ../shared/data (see its README).

    Missing, it skips the test, or fails it where ``DICOM_NODE_REQUIRE_SHARED_DATA`` is set.
    """
    if not SHARED_DATA.is_dir():
        if shared_data_required():
            pytest.fail(f"{_missing_data_message()} ({REQUIRE_SHARED_DATA_ENV} is set)")
        pytest.skip(_missing_data_message())
    return SHARED_DATA


@pytest.fixture(scope="session")
def head_ct_dir(shared_data: Path) -> Path:
    """The real GE head CT: 28 slices, 18.5 deg gantry tilt, no PatientBirthDate/PatientSex."""
    return shared_data / "head-ct-ge"


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_tool(name: str, package: str, *candidates: str) -> str:
    """Path of an external tool, or a failing test that says which Debian package to install."""
    for candidate in (*candidates, shutil.which(name)):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(f"{name} not found: install the Debian package {package} (see .ci/run)")


@pytest.fixture(scope="session")
def storescu() -> str:
    """dcmtk's storescu (not any Python script of the same name on PATH)."""
    return require_tool("storescu", "dcmtk", "/usr/bin/storescu")


@pytest.fixture(scope="session")
def dciodvfy() -> str:
    """dicom3tools' dciodvfy."""
    return require_tool("dciodvfy", "dicom3tools", "/usr/bin/dciodvfy")


def run_storescu(
    storescu: str,
    port: int,
    files: list[Path],
    *,
    called: str = "DICOM_NODE",
    calling: str = "STORESCU",
    extra: tuple[str, ...] = (),
) -> subprocess.CompletedProcess:
    """Send files with dcmtk storescu to 127.0.0.1:port (TCP_NODELAY set, see dcmtk docs).

    ``extra`` adds options, e.g. ``("-xs",)`` to propose JPEG Lossless.
    """
    env = dict(os.environ, TCP_NODELAY="1")
    return subprocess.run(
        [
            storescu,
            *extra,
            "-aet",
            calling,
            "-aec",
            called,
            "127.0.0.1",
            str(port),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )


@dataclass
class OrthancServer:
    """A running Orthanc with its DICOM and HTTP ports."""

    dicom_port: int
    http_port: int
    ae_title: str
    storage: Path

    @property
    def url(self) -> str:
        """Base URL of the REST API."""
        return f"http://127.0.0.1:{self.http_port}"

    def get(self, path: str):
        """GET a REST resource and return its JSON."""
        response = requests.get(self.url + path, timeout=30)
        response.raise_for_status()
        return response.json()

    def results_for_study(self, study_instance_uid: str) -> dict[str, list[bytes]]:
        """Download every SEG and SR instance stored for a study, by modality."""
        found: dict[str, list[bytes]] = {}
        for series_id in self.get("/series"):
            series = self.get(f"/series/{series_id}")
            study = self.get(f"/studies/{series['ParentStudy']}")
            if study["MainDicomTags"]["StudyInstanceUID"] != study_instance_uid:
                continue
            modality = series["MainDicomTags"].get("Modality")
            if modality in ("SEG", "SR"):
                for instance_id in series["Instances"]:
                    found.setdefault(modality, []).append(
                        self.get_bytes(f"/instances/{instance_id}/file")
                    )
        return found

    def get_bytes(self, path: str) -> bytes:
        """GET a REST resource and return the raw body."""
        response = requests.get(self.url + path, timeout=60)
        response.raise_for_status()
        return response.content


@contextmanager
def running_orthanc(
    storage: Path,
    extra_config: dict | None = None,
    *,
    dicom_port: int | None = None,
    http_port: int | None = None,
) -> Iterator[OrthancServer]:
    """Start a real Orthanc (Debian package) on loopback with storage in ``storage``.

    ``extra_config`` adds or overrides Orthanc configuration keys. Giving the
    ports and storage of an earlier run restarts "the same" PACS.
    """
    exe = require_tool("Orthanc", "orthanc", "/usr/sbin/Orthanc")
    storage.mkdir(parents=True, exist_ok=True)
    server = OrthancServer(dicom_port or free_port(), http_port or free_port(), "ORTHANC", storage)
    config = {
        "Name": "dicom-node-test-pacs",
        "StorageDirectory": str(storage / "db"),
        "IndexDirectory": str(storage / "db"),
        "DicomAet": server.ae_title,
        "DicomPort": server.dicom_port,
        "HttpPort": server.http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "Plugins": [],
        "StorageCompression": False,
        **(extra_config or {}),
    }
    config_path = storage / "orthanc.json"
    config_path.write_text(json.dumps(config))
    log_path = storage / "orthanc.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([exe, str(config_path)], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if requests.get(server.url + "/system", timeout=2).ok:
                        break
                except requests.ConnectionError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail("Orthanc did not start:\n" + log_path.read_text()[-3000:])
                time.sleep(0.2)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


def node_settings_for_orthanc(base: Path, orthanc: OrthancServer, **sections):
    """Node settings for an end-to-end run: storage under ``base``, a free port, short quiet
    and sweep times, one worker, and ``orthanc`` as the only destination.

    ``sections`` adds or replaces whole settings sections (for example ``selection``).
    """
    from dicom_node.config import load_settings

    overrides = {
        "storage": {"base_dir": str(base)},
        "dicom": {"port": free_port()},
        "series": {"stable_after_s": 1.0, "sweep_interval_s": 0.3},
        "workers": {"processes": 1, "poll_interval_s": 0.3},
        "export": {
            "sweep_interval_s": 0.5,
            "destinations": [
                {
                    "name": "orthanc",
                    "ae_title": orthanc.ae_title,
                    "host": "127.0.0.1",
                    "port": orthanc.dicom_port,
                }
            ],
        },
        **sections,
    }
    return load_settings(overrides=overrides)


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[OrthancServer]:
    """A real Orthanc for one test."""
    with running_orthanc(tmp_path / "orthanc") as server:
        yield server
