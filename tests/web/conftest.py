"""Fixtures of the dashboard tests: seeded job databases, an HTTP client, headless Chromium."""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
import requests
from typer.testing import CliRunner

from dicom_node.cli import app as cli_app
from dicom_node.config import Settings, load_settings
from dicom_node.db.engine import make_engine, make_session_factory
from dicom_node.jobs.dispatch import sweep_series
from dicom_node.jobs.executor import JobExecutor
from dicom_node.jobs.worker import run_one
from dicom_node.receive.header import parse_header
from dicom_node.receive.ingest import InstanceIngest
from dicom_node.receive.spool import Spool
from dicom_node.series.volume import read_datasets
from dicom_node.training.synthetic import insert_ellipsoid_hemorrhage, with_new_uids

PASSWORD = "correct horse battery"
SEMI_AXES_MM = (15.0, 12.0, 13.26)  # 4/3*pi*a*b*c = 10.0 mL
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(html: str) -> str:
    """The CSRF token of the first form in a page."""
    match = _CSRF.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def encode(ds: pydicom.Dataset) -> bytes:
    """Part 10 bytes of a dataset."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def synthetic_bleed(head_files: list[Path], seed: int):
    """A copy of the head CT with new UIDs and a 10 mL 65 HU ellipsoid (see training.synthetic)."""
    return insert_ellipsoid_hemorrhage(
        with_new_uids(read_datasets(head_files), seed=seed),
        center_mm=None,
        semi_axes_mm=SEMI_AXES_MM,
        hu=65.0,
        seed=seed,
    )


def add_user(settings: Settings, name: str, role: str, password: str = PASSWORD) -> None:
    """Create a user the way an administrator does: ``dicom-node users add --password-stdin``."""
    result = CliRunner().invoke(
        cli_app,
        ["users", "add", name, "--role", role, "--password-stdin"],
        input=password + "\n",
        env={"DICOM_NODE_STORAGE__BASE_DIR": str(settings.storage.base_dir)},
    )
    assert result.exit_code == 0, result.output


def node_settings(base: Path, **overrides) -> Settings:
    """Settings for a test node in ``base``: free ports, short quiet time and sweeps."""
    data = {
        "log_level": "WARNING",
        "storage": {"base_dir": str(base)},
        "dicom": {"port": 0},
        "web": {"port": 0},
        "series": {"stable_after_s": 0.0, "sweep_interval_s": 0.3},
        "workers": {"processes": 1, "poll_interval_s": 0.3},
        "export": {"sweep_interval_s": 0.5},
    }
    for key, value in overrides.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return load_settings(overrides=data)


@dataclass
class SeededNode:
    """A job database with real series and finished jobs, without a running node."""

    settings: Settings
    session_factory: object
    job_ids: dict[str, int]
    series_uids: dict[str, str]
    bleed: object


def seed(settings: Settings, head_files: list[Path]) -> SeededNode:
    """Ingest the head CT and a synthetic bleed as C-STORE would, then run both jobs in-process."""
    engine = make_engine(settings.storage.url)
    session_factory = make_session_factory(engine)
    ingest = InstanceIngest(Spool(settings.storage.spool_path), session_factory)
    for path in head_files:
        data = path.read_bytes()
        ingest.store(parse_header(data), data, "CT_SCANNER_1")
    bleed = synthetic_bleed(head_files, seed=7)
    for ds in bleed.datasets:
        data = encode(ds)
        ingest.store(parse_header(data), data, "CT_SCANNER_1")
    sweep_series(session_factory, settings)
    executor = JobExecutor(settings, session_factory)
    ids = [
        run_one(session_factory, executor.execute, executor.record, worker_id="test:w0",
                settings=settings.workers)
        for _ in range(2)
    ]  # fmt: skip
    assert None not in ids
    uids = {
        "head": str(pydicom.dcmread(head_files[0], stop_before_pixels=True).SeriesInstanceUID),
        "bleed": str(bleed.datasets[0].SeriesInstanceUID),
    }
    from sqlalchemy import select

    from dicom_node.db.models import Job, Series

    with session_factory() as session:
        job_ids = {
            name: session.scalar(
                select(Job.id).join(Series).where(Series.series_instance_uid == uid)
            )
            for name, uid in uids.items()
        }
    return SeededNode(settings, session_factory, job_ids, uids, bleed)


class WebClient:
    """A logged-in (or not) HTTP client of a running dashboard."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = requests.Session()

    def get(self, path: str, **kwargs) -> requests.Response:
        """GET without following redirects."""
        return self.http.get(self.base_url + path, allow_redirects=False, timeout=60, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        """POST without following redirects."""
        return self.http.post(self.base_url + path, allow_redirects=False, timeout=120, **kwargs)

    def token(self, path: str = "/") -> str:
        """A CSRF token from a page of this session."""
        response = self.get(path)
        assert response.status_code == 200, response.status_code
        return csrf_token(response.text)

    def login(self, username: str, password: str = PASSWORD) -> requests.Response:
        """Log in through the form; return the response to the POST."""
        page = self.get("/login")
        return self.post(
            "/login",
            data={"username": username, "password": password, "next": "/",
                  "csrf_token": csrf_token(page.text)},
        )  # fmt: skip


CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def browser(monkeypatch) -> Iterator[object]:
    """Debian's headless Chromium, driven by Selenium through Debian's chromedriver."""
    for tool, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(tool, os.X_OK):
            pytest.fail(f"{tool} not found: install the Debian package {package} (see .ci/run)")
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="dicom-node-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@dataclass
class WebhookServer:
    """A local HTTP server on loopback that records the JSON bodies POSTed to it."""

    url: str
    received: list[dict]
    raw: list[bytes]
    statuses: list[int]


@contextmanager
def serve_webhooks() -> Iterator[WebhookServer]:
    """A loopback HTTP server; each POST gets the next status in ``statuses`` (200 when empty)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    state = WebhookServer("", [], [], [])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # the http.server API
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status = state.statuses.pop(0) if state.statuses else 200
            if status == 200:
                state.raw.append(body)
                state.received.append(json.loads(body))
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"ok": true}' if status == 200 else b'{"error": "busy"}')

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/dicom-node"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def webhook_server() -> Iterator[WebhookServer]:
    """A webhook receiver for one test (see :func:`serve_webhooks`)."""
    with serve_webhooks() as server:
        yield server
