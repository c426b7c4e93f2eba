"""A failed job keeps its traceback: ``jobs show``, and the job page and API for admins only.

The job fails in the real worker loop (:func:`dicom_node.jobs.worker.run_one`) on a series
ingested from the real head CT; the dashboard runs on loopback.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dicom_node.cli import app as cli_app
from dicom_node.db.models import Job, JobState
from dicom_node.errors import PipelineError
from dicom_node.jobs.dispatch import sweep_series
from dicom_node.jobs.worker import run_one
from dicom_node.web import WebServer, create_app
from tests.web.conftest import WebClient, add_user
from tests.web.test_web_operations import Db, head_series


def _load_weights(path: str) -> None:
    raise OSError(f"cannot read {path}")


def _failing_execute(job_id: int):
    try:
        _load_weights("/models/ich/9.9.9/model.keras")
    except OSError as err:
        raise PipelineError(f"job {job_id}: the model package cannot be loaded") from err


@pytest.fixture
def failed(tmp_path, head_ct_dir):
    db = Db(tmp_path)
    db.ingest_files(head_series(head_ct_dir, seed=11))
    sweep_series(db.session_factory, db.settings)
    job_id = run_one(db.session_factory, _failing_execute, lambda *a: {},
                     worker_id="test:w0", settings=db.settings.workers)  # fmt: skip
    assert job_id is not None
    add_user(db.settings, "ada", "admin")
    add_user(db.settings, "vic", "viewer")
    server = WebServer(create_app(db.settings, db.session_factory), "127.0.0.1", 0)
    server.start()
    try:
        yield db, job_id, server
    finally:
        server.stop()


def test_a_failed_job_keeps_its_traceback_for_admins_only(failed):
    db, job_id, server = failed
    with db.session_factory() as session:
        job = session.get(Job, job_id)
        assert job.state == JobState.FAILED  # a PipelineError is permanent
        text = job.error_traceback
    # The whole chain: the cause, the frame that raised it, and the error the job raised.
    assert "OSError: cannot read /models/ich/9.9.9/model.keras" in text
    assert "in _load_weights" in text and "direct cause" in text
    assert text.rstrip().endswith(f"job {job_id}: the model package cannot be loaded")

    shown = CliRunner().invoke(cli_app, ["jobs", "show", str(job_id)], env=db.env)
    assert shown.exit_code == 0, shown.output
    assert "traceback of the last failed attempt:" in shown.output
    assert "  OSError: cannot read /models/ich/9.9.9/model.keras" in shown.output
    as_json = CliRunner().invoke(cli_app, ["jobs", "show", str(job_id), "--json"], env=db.env)
    assert json.loads(as_json.output)["traceback"] == text

    admin, viewer = WebClient(server.url), WebClient(server.url)
    assert admin.login("ada").status_code == 303 and viewer.login("vic").status_code == 303
    page = admin.get(f"/jobs/{job_id}").text
    assert 'id="job-traceback"' in page and "in _load_weights" in page
    assert admin.get(f"/api/jobs/{job_id}").json()["traceback"] == text
    page = viewer.get(f"/jobs/{job_id}").text
    assert "the model package cannot be loaded" in page  # the error itself, as before
    assert 'id="job-traceback"' not in page and "_load_weights" not in page
    assert viewer.get(f"/api/jobs/{job_id}").json()["traceback"] is None


def test_a_retried_attempt_keeps_the_traceback_until_the_next_attempt_starts(tmp_path, head_ct_dir):
    db = Db(tmp_path, workers={"retry_backoff_s": 0})
    db.ingest_files(head_series(head_ct_dir, seed=12))
    sweep_series(db.session_factory, db.settings)

    def flaky(job_id: int):
        raise OSError("spool temporarily unavailable")

    job_id = run_one(db.session_factory, flaky, lambda *a: {}, worker_id="test:w0",
                     settings=db.settings.workers)  # fmt: skip
    with db.session_factory() as session:
        job = session.get(Job, job_id)
        assert job.state == JobState.QUEUED and "spool temporarily unavailable" in (
            job.error_traceback or "")  # fmt: skip
    run_one(db.session_factory, lambda job_id: {"findings": []}, lambda s, j, o: o,
            worker_id="test:w0", settings=db.settings.workers)  # fmt: skip
    with db.session_factory() as session:
        job = session.get(Job, job_id)
        assert job.state == JobState.SUCCEEDED and job.error_traceback is None


def test_an_admin_cancel_of_a_running_job_is_a_request_the_page_shows(tmp_path, head_ct_dir):
    from dicom_node.jobs.queue import claim_next

    db = Db(tmp_path)
    db.ingest_files(head_series(head_ct_dir, seed=13))
    sweep_series(db.session_factory, db.settings)
    job_id = claim_next(db.session_factory, "test:w0")
    add_user(db.settings, "ada", "admin")
    server = WebServer(create_app(db.settings, db.session_factory), "127.0.0.1", 0)
    server.start()
    try:
        admin = WebClient(server.url)
        assert admin.login("ada").status_code == 303
        token = admin.token(f"/jobs/{job_id}")
        assert admin.post(f"/jobs/{job_id}/cancel", data={"csrf_token": token}).status_code == 303
        page = admin.get(f"/jobs/{job_id}").text
        assert f"Cancel of job {job_id} requested" in page and 'id="cancel-requested"' in page
        assert 'id="cancel" class="danger" disabled' in page  # asked once is enough
        detail = admin.get(f"/api/jobs/{job_id}").json()
        assert detail["state"] == "RUNNING" and detail["cancel_requested_at"]
    finally:
        server.stop()
