"""The dashboard over real HTTP (uvicorn on loopback) on a job database with real results.

One module fixture ingests the real head CT and a synthetic 10 mL bleed the way the
Storage SCP does, runs both jobs in-process (the learned ich model, real SEG + SR), creates an
admin and a viewer with the CLI and serves the dashboard. The tests then log in, check
authentication, roles and CSRF, read every page, the viewer's PNGs and ``/metrics``.
"""

from __future__ import annotations

import json
import re
import zipfile
from io import BytesIO

import cv2
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from typer.testing import CliRunner

from dicom_node.cli import app as cli_app
from dicom_node.db.models import Instance, Job, JobState, Series
from dicom_node.series.volume import read_datasets
from dicom_node.training.synthetic import with_new_uids
from dicom_node.web import WebServer, create_app
from dicom_node.web.security import SECRET_FILE_NAME
from tests.web.conftest import (
    PASSWORD,
    WebClient,
    add_user,
    csrf_token,
    encode,
    node_settings,
    seed,
)


@pytest.fixture(scope="module")
def site(tmp_path_factory, head_ct_dir):
    """A seeded database, two users and the dashboard on a free loopback port."""
    base = tmp_path_factory.mktemp("web")
    settings = node_settings(base)
    seeded = seed(settings, sorted(head_ct_dir.glob("*.dcm")))
    add_user(settings, "ada", "admin")
    add_user(settings, "vic", "viewer")
    server = WebServer(create_app(settings, seeded.session_factory), "127.0.0.1", 0)
    server.start()
    try:
        yield seeded, server
    finally:
        server.stop()


@pytest.fixture
def admin(site) -> WebClient:
    client = WebClient(site[1].url)
    assert client.login("ada").status_code == 303
    return client


@pytest.fixture
def viewer(site) -> WebClient:
    client = WebClient(site[1].url)
    assert client.login("vic").status_code == 303
    return client


def job_state(site, job_id: int) -> JobState:
    with site[0].session_factory() as session:
        return session.get(Job, job_id).state


def test_pages_need_a_login_and_machine_endpoints_do_not(site):
    client = WebClient(site[1].url)
    response = client.get("/jobs?state=SUCCEEDED")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Fjobs%3Fstate%3DSUCCEEDED"
    assert client.get("/api/overview").status_code == 401
    assert client.get("/jobs/1/slices/0.png").status_code == 303
    health = client.get("/health")
    assert health.status_code == 200, health.text
    assert health.json()["checks"]["database"]["ok"] is True
    assert client.get("/metrics").status_code == 200


def test_login_refuses_a_wrong_password_and_keeps_the_secret_private(site):
    client = WebClient(site[1].url)
    wrong = client.login("ada", "not the password")
    assert wrong.status_code == 401
    assert "Wrong user name or password" in wrong.text
    assert client.login("nobody").status_code == 401
    assert client.get("/").status_code == 303
    ok = client.login("ada")
    assert ok.status_code == 303 and ok.headers["location"] == "/"
    cookie = client.http.cookies.get("dicom_node_session")
    assert cookie and PASSWORD not in cookie
    secret = site[0].settings.storage.base_dir / SECRET_FILE_NAME
    assert secret.stat().st_mode & 0o777 == 0o600


def test_login_without_csrf_token_is_refused(site):
    client = WebClient(site[1].url)
    client.get("/login")
    response = client.post("/login", data={"username": "ada", "password": PASSWORD})
    assert response.status_code == 403
    assert "CSRF" in response.text
    assert client.get("/").status_code == 303  # not logged in


def test_state_changing_post_without_or_with_a_foreign_csrf_token_is_refused(site, admin):
    job_id = site[0].job_ids["head"]
    assert admin.post(f"/jobs/{job_id}/requeue").status_code == 403
    assert admin.post(f"/jobs/{job_id}/requeue", data={"csrf_token": "forged"}).status_code == 403
    other = WebClient(site[1].url)
    other.login("ada")
    foreign = other.token()
    response = admin.post(f"/jobs/{job_id}/requeue", data={"csrf_token": foreign})
    assert response.status_code == 403
    assert job_state(site, job_id) == JobState.SUCCEEDED


def test_admin_requeues_and_cancels_a_job(site, admin):
    job_id = site[0].job_ids["head"]
    token = admin.token(f"/jobs/{job_id}")
    response = admin.post(f"/jobs/{job_id}/requeue", data={"csrf_token": token})
    assert response.status_code == 303, response.text
    assert job_state(site, job_id) == JobState.QUEUED
    page = admin.get(f"/jobs/{job_id}").text
    assert f"Job {job_id} requeued." in page
    assert "requeued by an operator" in page  # the timeline shows the operator's action
    response = admin.post(f"/jobs/{job_id}/cancel", headers={"X-CSRF-Token": token})
    assert response.status_code == 303
    assert job_state(site, job_id) == JobState.CANCELED
    # Canceling a canceled job is refused with a message, not an error page.
    admin.post(f"/jobs/{job_id}/cancel", data={"csrf_token": token})
    assert "cannot be canceled" in admin.get(f"/jobs/{job_id}").text


def test_viewer_is_refused_requeue_cancel_and_configuration(site, viewer):
    job_id = site[0].job_ids["bleed"]
    page = viewer.get(f"/jobs/{job_id}").text
    assert 'id="requeue"' not in page and "read-only (viewer)" in page
    token = csrf_token(page)
    for action in ("requeue", "cancel"):
        response = viewer.post(f"/jobs/{job_id}/{action}", data={"csrf_token": token})
        assert response.status_code == 403
        assert "viewer role" in response.text
    assert job_state(site, job_id) == JobState.SUCCEEDED
    assert viewer.get("/config").status_code == 403


def test_overview_and_api_show_latency_against_the_target(site, admin):
    page = admin.get("/")
    assert page.status_code == 200
    assert "Last instance → delivered" in page.text and "target 10 min" in page.text
    data = admin.get("/api/overview").json()
    assert data["latency"]["target_s"] == 600.0
    assert data["latency"]["n"] >= 1  # the bleed job (no destinations: delivered = results built)
    assert 0 < data["latency"]["p50_s"] < 600
    assert data["disk"]["spool_instances"] == 56
    assert {s: data["stages"][s]["n"] >= 1 for s in ("queue", "analysis", "total")} == {
        "queue": True, "analysis": True, "total": True}  # fmt: skip


def test_jobs_list_filters_paging_and_csv(site, admin):
    bleed_id = site[0].job_ids["bleed"]
    positive = admin.get("/jobs?finding=present").text
    assert f'data-job-id="{bleed_id}"' in positive
    assert f'data-job-id="{site[0].job_ids["head"]}"' not in positive
    assert "<th>study date</th><th>accession</th>" in positive  # the GE head has neither: "-"
    assert "data-job-id" not in admin.get("/jobs?pipeline=no-such-pipeline").text
    assert f'data-job-id="{bleed_id}"' in admin.get("/jobs?since=1h&state=SUCCEEDED").text
    assert "is not an ISO 8601" in admin.get("/jobs?since=yesterday").text
    csv_text = admin.get("/jobs.csv?finding=present").text
    lines = csv_text.strip().splitlines()
    assert lines[0].startswith("job_id,state,pipeline")
    assert len(lines) == 2 and lines[1].startswith(f"{bleed_id},SUCCEEDED,ich")


def test_job_page_shows_timeline_stages_and_findings(site, admin):
    page = admin.get(f"/jobs/{site[0].job_ids['bleed']}").text
    for text in ("first instance received", "last instance received", "series complete",
                 "queued", "started", "results built", "intraparenchymal hemorrhage",
                 "present", "analysis", "last instance → delivered"):  # fmt: skip
        assert text in page, text
    detail = admin.get(f"/api/jobs/{site[0].job_ids['bleed']}").json()
    stages = detail["stages_s"]
    assert stages["analysis"] > 0 and stages["total"] >= stages["analysis"]
    assert [e["what"] for e in detail["timeline"]][0] == "first instance received"
    # Pipeline details are shown with 4 significant digits, not a float's 17.
    floats = []

    def collect(value):
        if isinstance(value, float):
            floats.append(value)
        elif isinstance(value, dict):
            for v in value.values():
                collect(v)
        elif isinstance(value, list):
            for v in value:
                collect(v)

    collect(detail["details"])
    assert floats, detail["details"]
    long = [
        v
        for v in floats
        if len(f"{v:.15g}".replace("-", "").replace(".", "").lstrip("0").split("e")[0]) > 4
    ]
    assert long == [], long


def test_viewer_outlines_the_segmentation_on_the_source_slice(site, admin):
    job_id = site[0].job_ids["bleed"]
    page = admin.get(f"/jobs/{job_id}/viewer").text
    assert 'type="range"' in page and 'max="27"' in page
    slices = json.loads(page.split('id="slice-data">', 1)[1].split("</script>", 1)[0])
    best = max(slices, key=lambda s: s["mask_pixels"])
    assert best["mask_pixels"] > 500
    images = {}
    for overlay in (0, 1):
        response = admin.get(f"/jobs/{job_id}/slices/{best['index']}.png?overlay={overlay}")
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        images[overlay] = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    source, outlined = images[0], images[1]
    assert source.shape == outlined.shape == (512, 512, 3)
    # Each segment is outlined in its finding's colour, the one the legend shows.
    legend = page.split('class="legend">', 1)[1].split("</span>\n", 1)[0]
    colours = re.findall(r"background: #([0-9a-f]{6})", legend)
    assert colours, legend
    assert not np.any(source.max(axis=-1).astype(int) - source.min(axis=-1) > 60)  # grey
    for colour in colours:
        r, g, b = (int(colour[i : i + 2], 16) for i in (0, 2, 4))
        drawn = np.all(np.abs(outlined.astype(int) - (b, g, r)) <= 40, axis=-1)
        assert drawn.sum() > 50, colour  # the outline is drawn in the legend's colour
    assert admin.get(f"/jobs/{job_id}/slices/99.png").status_code == 404
    assert admin.get(f"/jobs/{job_id}/slices/0.png?window=lung").status_code == 400


def test_metrics_parse_with_prometheus_client(site):
    text = WebClient(site[1].url).get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}  # fmt: skip
    assert samples[("dicom_node_instances_received_total", ())] == 56
    assert samples[("dicom_node_received_bytes_total", ())] > 10_000_000
    assert families["dicom_node_stage_duration_seconds"].type == "histogram"
    assert samples[("dicom_node_stage_duration_seconds_count", (("stage", "analysis"),))] >= 1
    assert ("dicom_node_queue_depth", ()) in samples
    assert families["dicom_node_jobs"].type == "gauge"
    states = {dict(labels)["state"] for name, labels in samples if name == "dicom_node_jobs"}
    assert states == {"QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELED"}
    assert "dicom_node_delivery_failures" in families


def test_health_fails_below_the_disk_watermark(site, tmp_path):
    settings = node_settings(site[0].settings.storage.base_dir,
                             monitoring={"min_free_disk_bytes": 2**62})  # fmt: skip
    server = WebServer(create_app(settings, site[0].session_factory, workers_alive=lambda: 0),
                       "127.0.0.1", 0)  # fmt: skip
    server.start()
    try:
        response = WebClient(server.url).get("/health")
    finally:
        server.stop()
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail"
    assert body["checks"]["disk"]["ok"] is False
    assert body["checks"]["workers"] == {"ok": False, "alive": 0, "expected": 1}


def test_upload_stores_dicom_from_a_zip_and_reports_each_bad_file(site, admin, head_ct_dir):
    datasets = with_new_uids(read_datasets(sorted(head_ct_dir.glob("*.dcm"))[:3]), seed=11)
    archive = BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for index, ds in enumerate(datasets):
            zf.writestr(f"study/IM{index:04d}", encode(ds))
        zf.writestr("study/README.txt", "not DICOM")
        zf.writestr("DICOMDIR", b"\0" * 200)
    token = admin.token("/upload")
    files = [("files", ("study.zip", archive.getvalue(), "application/zip")),
             ("files", ("notes.dcm", b"plain text", "application/dicom"))]  # fmt: skip
    response = admin.post("/upload", data={"csrf_token": token}, files=files)
    assert response.status_code == 200, response.text
    page = response.text
    assert 'id="count-stored">3<' in page
    assert 'id="count-error">2<' in page and 'id="count-skipped">1<' in page
    assert "study.zip:study/README.txt" in page and "notes.dcm" in page
    assert "not accepted" in page
    series_uid = str(datasets[0].SeriesInstanceUID)
    assert series_uid in page
    with site[0].session_factory() as session:
        rows = session.scalars(
            select(Instance).join(Series).where(Series.series_instance_uid == series_uid)
        ).all()
    assert len(rows) == 3 and {r.calling_ae_title for r in rows} == {"WEB-UPLOAD"}
    assert all((site[0].settings.storage.spool_path / r.path).is_file() for r in rows)
    again = admin.post("/upload", data={"csrf_token": token}, files=files[:1])
    assert 'id="count-duplicate">3<' in again.text
    # Without the token nothing is stored.
    assert admin.post("/upload", files=files[:1]).status_code == 403


def test_cli_stats_matches_the_overview(site, admin):
    env = {"DICOM_NODE_STORAGE__BASE_DIR": str(site[0].settings.storage.base_dir)}
    result = CliRunner().invoke(cli_app, ["stats", "--json", "--no-echo"], env=env)
    assert result.exit_code == 0, result.output
    cli = json.loads(result.output)
    web = admin.get("/api/overview").json()
    for key in ("queue_depth", "jobs_by_state", "series_by_state"):
        assert cli[key] == web[key], key
    assert cli["latency"]["n"] == web["latency"]["n"]
    assert cli["latency"]["p95_s"] == pytest.approx(web["latency"]["p95_s"])
    text = CliRunner().invoke(cli_app, ["stats", "--no-echo"], env=env).output
    assert "time to result" in text and "target 600 s" in text


BAD_REQUESTS = [
    "/jobs?page=abc",
    "/jobs?page=-3",
    "/jobs?page=99999999999999999999999",
    "/jobs?state=NOPE",
    "/jobs?refresh=x",
    "/jobs?since=yesterday",
    "/jobs.csv?state=NOPE",
    "/jobs/abc",
    "/jobs/99999999999999999999999",
    "/jobs/-1",
    "/api/jobs/abc",
    "/api/jobs/424242",
    "/jobs/1/viewer?slice=x",
    "/jobs/abc/viewer",
    "/jobs/424242/viewer",
    "/jobs/1/slices/abc.png",
    "/jobs/1/slices/-1.png",
    "/jobs/1/slices/99999.png",
    "/jobs/424242/slices/0.png",
    "/series?page=abc",
    "/series?page=0",
    "/series?state=NOPE",
    "/series/abc",
    "/series/424242",
    "/deliveries?page=abc",
    "/deliveries?state=NOPE",
]


@pytest.mark.parametrize("path", BAD_REQUESTS)
def test_invalid_query_or_id_values_are_client_errors_not_500(site, admin, path):
    """A mistyped page number, state or id is the client's error (4xx), never a server error."""
    response = admin.get(path)
    assert response.status_code < 500, (path, response.status_code, response.text[:300])
    assert response.status_code in (200, 400, 404, 422), (path, response.status_code)
