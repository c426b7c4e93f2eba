"""The dashboard in a real headless Chromium, on a whole running node.

One node run (module fixture): the node with its dashboard, a real Orthanc as the
destination and a webhook receiver on loopback. dcmtk's storescu sends the real head CT
and a copy with a synthetic 10 mL bleed. In the browser an admin logs in, watches the
jobs reach SUCCEEDED, opens a job (timeline, overlay viewer with its slider) and requeues
it; a viewer is refused; a zip of the bleed (new UIDs, same pixels) uploaded through the
page gives the same findings as the C-STORE copy.

Set ``DICOM_NODE_SCREENSHOTS_DIR=docs/screenshots`` to refresh the committed screenshots.
"""

from __future__ import annotations

import os
import time
import zipfile
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import select

from dicom_node.app import Node
from dicom_node.db.models import Delivery, DeliveryState, Job, JobState, Series
from dicom_node.training.synthetic import with_new_uids
from tests.conftest import run_storescu, running_orthanc
from tests.web.conftest import (
    PASSWORD,
    add_user,
    encode,
    node_settings,
    serve_webhooks,
    synthetic_bleed,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TIMEOUT_S = 240


@pytest.fixture(scope="module")
def live(tmp_path_factory, shared_data, storescu):
    """A running node (dashboard, Orthanc destination, webhook) fed by storescu."""
    base = tmp_path_factory.mktemp("browser")
    head_files = sorted((shared_data / "head-ct-ge").glob("*.dcm"))
    bleed = synthetic_bleed(head_files, seed=7)
    bleed_dir = base / "bleed"
    bleed_dir.mkdir()
    for ds in bleed.datasets:
        (bleed_dir / f"{ds.SOPInstanceUID}.dcm").write_bytes(encode(ds))
    # The same pixels under new UIDs, zipped, for the upload page.
    upload = with_new_uids(bleed.datasets, seed=8)
    zip_path = base / "bleed-upload.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for index, ds in enumerate(upload):
            archive.writestr(f"CT/IM{index:04d}.dcm", encode(ds))
    with running_orthanc(base / "orthanc") as orthanc, serve_webhooks() as hooks:
        settings = node_settings(
            base / "node",
            series={"stable_after_s": 1.0, "sweep_interval_s": 0.3},
            export={
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
            notifications={
                "sweep_interval_s": 0.5,
                "webhooks": [{"name": "stroke-team", "url": hooks.url}],
            },
            monitoring={"echo_interval_s": 2.0},
        )
        add_user(settings, "ada", "admin")
        add_user(settings, "vic", "viewer")
        node = Node(settings)
        node.start()
        try:
            for files in (head_files, sorted(bleed_dir.glob("*.dcm"))):
                sent = run_storescu(storescu, node.port, files, calling="CT_SCANNER_1")
                assert sent.returncode == 0, sent.stderr
            yield {
                "node": node,
                "url": node.web_url,
                "hooks": hooks,
                "uids": {
                    "head": _series_uid(head_files[0]),
                    "bleed": str(bleed.datasets[0].SeriesInstanceUID),
                    "upload": str(upload[0].SeriesInstanceUID),
                },
                "zip": zip_path,
            }
        finally:
            node.stop()


def _series_uid(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)


def job_of(live, name: str) -> Job | None:
    with live["node"].session_factory() as session:
        return session.scalar(
            select(Job)
            .join(Series)
            .where(Series.series_instance_uid == live["uids"][name])
            .order_by(Job.id.desc())
        )


def login(driver, url: str, username: str) -> None:
    driver.get(url + "/")
    WebDriverWait(driver, 30).until(ec.presence_of_element_located((By.ID, "username")))
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "login").click()
    WebDriverWait(driver, 30).until(ec.title_contains("Overview"))


def reload_until(driver, url: str, condition, what: str, timeout_s: float = TIMEOUT_S):
    """Load ``url`` again until ``condition(driver)`` is truthy; return its value."""
    deadline = time.monotonic() + timeout_s
    while True:
        driver.get(url)
        value = condition(driver)
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1.0)


def screenshot(driver, name: str) -> None:
    """Full-page screenshot into $DICOM_NODE_SCREENSHOTS_DIR (if set)."""
    folder = os.environ.get("DICOM_NODE_SCREENSHOTS_DIR")
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, max(900, height + 140))  # + the window's own chrome
    driver.save_screenshot(str(Path(folder) / f"{name}.png"))
    driver.set_window_size(1400, 1000)


def test_admin_follows_a_series_to_its_results_and_requeues_the_job(live, browser):
    url = live["url"]
    login(browser, url, "ada")
    # The jobs list: both C-STORE series reach SUCCEEDED.
    rows = reload_until(
        browser,
        url + "/jobs",
        lambda d: (lambda r: r if len(r) == 2 else None)(
            d.find_elements(By.CSS_SELECTOR, "#jobs tr[data-state='SUCCEEDED']")
        ),
        "two SUCCEEDED jobs",
    )
    bleed_job = job_of(live, "bleed")
    head_job = job_of(live, "head")
    assert {r.get_attribute("data-job-id") for r in rows} == {str(bleed_job.id), str(head_job.id)}
    row = browser.find_element(By.CSS_SELECTOR, f"#jobs tr[data-job-id='{bleed_job.id}']")
    assert "intraparenchymal hemorrhage present" in row.text
    row.find_element(By.LINK_TEXT, str(bleed_job.id)).click()
    # The job page: the timeline goes from the first instance to the delivery in Orthanc.
    timeline = reload_until(
        browser,
        f"{url}/jobs/{bleed_job.id}",
        lambda d: (lambda t: t if t.count("delivered (orthanc)") == 2 else None)(
            d.find_element(By.ID, "timeline").text
        ),
        "both result objects delivered",
    )
    for milestone in ("first instance received", "last instance received", "series complete",
                      "queued", "started", "results built", "SEG delivered (orthanc)",
                      "SR delivered (orthanc)"):  # fmt: skip
        assert milestone in timeline, milestone
    bars = browser.find_element(By.ID, "stage-bars").text
    for stage in ("receiving", "quiet", "queue", "analysis", "export"):
        assert stage in bars
    assert "last instance → delivered" in browser.find_element(By.ID, "time-to-result").text
    assert "present" in browser.find_element(By.ID, "findings").text
    reload_until(
        browser,
        f"{url}/jobs/{bleed_job.id}",
        lambda d: "SENT" in d.find_element(By.ID, "notifications").text
        if d.find_elements(By.ID, "notifications") else None,
        "the webhook notification",
        timeout_s=60,
    )  # fmt: skip
    screenshot(browser, "job")
    # The result viewer: source and outlined slices, and a slider that changes both.
    browser.find_element(By.ID, "open-viewer").click()
    WebDriverWait(browser, 30).until(ec.presence_of_element_located((By.ID, "slice")))

    def loaded(d):
        return d.execute_script(
            "return ['img-source', 'img-overlay'].every(function (id) {"
            "  var i = document.getElementById(id); return i.complete && i.naturalWidth === 512; })"
        )

    WebDriverWait(browser, 30).until(loaded)
    slider = browser.find_element(By.ID, "slice")
    start = int(slider.get_attribute("value"))
    assert start > 0, "the viewer opens on the slice with the largest mask"
    assert "mm²" in browser.find_element(By.ID, "slice-mask").text
    screenshot(browser, "viewer")
    before = browser.find_element(By.ID, "img-overlay").get_attribute("src")
    browser.execute_script(
        "var s = document.getElementById('slice'); s.value = 2;"
        "s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change'));"
    )
    WebDriverWait(browser, 30).until(
        lambda d: d.find_element(By.ID, "img-overlay").get_attribute("src") != before
    )
    WebDriverWait(browser, 30).until(loaded)
    assert (
        browser.find_element(By.ID, "img-overlay")
        .get_attribute("src")
        .endswith("/slices/2.png?overlay=1&window=brain")
    )
    assert browser.find_element(By.ID, "slice-label").text == "3 / 28"
    # Requeue the normal head as admin: it runs again and succeeds again.
    browser.get(f"{url}/jobs/{head_job.id}")
    browser.find_element(By.ID, "requeue").click()
    WebDriverWait(browser, 30).until(ec.text_to_be_present_in_element(
        (By.CSS_SELECTOR, ".flash"), f"Job {head_job.id} requeued."))  # fmt: skip
    assert "requeued by an operator" in browser.find_element(By.ID, "timeline").text
    reload_until(
        browser,
        f"{url}/jobs/{head_job.id}",
        lambda d: "SUCCEEDED" in d.find_element(By.TAG_NAME, "h1").text
        and d.find_element(By.ID, "timeline").text.count("results built") == 2,
        "the requeued job to succeed again",
    )  # fmt: skip
    # Wait until every delivery is SENT, then the overview shows the figures.
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        with live["node"].session_factory() as session:
            states = session.scalars(select(Delivery.state)).all()
        if len(states) == 6 and all(s == DeliveryState.SENT for s in states):
            break
        assert time.monotonic() < deadline, states
        time.sleep(0.5)
    reload_until(
        browser,
        url + "/",
        lambda d: "reachable" in d.find_element(By.ID, "destinations").text,
        "Orthanc to answer C-ECHO",
        timeout_s=60,
    )
    latency = browser.find_element(By.ID, "latency").text
    assert "/" in latency and "–" not in latency, latency
    destinations = browser.find_element(By.ID, "destinations").text
    assert "orthanc" in destinations and "reachable" in destinations
    screenshot(browser, "overview")
    # The webhook got the positive C-STORE job, without patient identifiers.
    (message,) = [m for m in live["hooks"].received if m["job_id"] == bleed_job.id]
    assert message["findings"][0]["present"] is True and "patient" not in message


def test_viewer_sees_jobs_but_is_refused_requeue(live, browser):
    url = live["url"]
    login(browser, url, "vic")
    job = job_of(live, "bleed")
    browser.get(f"{url}/jobs/{job.id}")
    assert not browser.find_elements(By.ID, "requeue")
    assert "read-only (viewer)" in browser.find_element(By.ID, "read-only").text
    # A hand-made POST with this session's valid CSRF token: the role still refuses it.
    status, body = browser.execute_async_script(
        "var done = arguments[arguments.length - 1];"
        "var token = document.querySelector('input[name=csrf_token]').value;"
        "fetch(arguments[0], {method: 'POST', headers: {'X-CSRF-Token': token}})"
        "  .then(function (r) { return r.text().then(function (t) { done([r.status, t]); }); });",
        f"{url}/jobs/{job.id}/requeue",
    )
    assert status == 403 and "viewer role" in body
    assert job_of(live, "bleed").state == JobState.SUCCEEDED
    browser.get(url + "/config")
    assert "Not allowed" in browser.find_element(By.TAG_NAME, "h1").text


def test_a_zip_uploaded_through_the_page_gives_the_same_findings_as_c_store(live, browser):
    url = live["url"]
    login(browser, url, "vic")  # viewers may upload (web.viewers_may_upload)
    browser.get(url + "/upload")
    browser.find_element(By.ID, "files").send_keys(str(live["zip"]))
    browser.find_element(By.ID, "upload").click()
    WebDriverWait(browser, 120).until(ec.presence_of_element_located((By.ID, "count-stored")))
    assert browser.find_element(By.ID, "count-stored").text == "28"
    assert browser.find_element(By.ID, "count-error").text == "0"
    link = browser.find_element(By.CSS_SELECTOR, "#upload-series a.series-link")
    assert link.text == live["uids"]["upload"]
    link.click()
    # The series page refreshes itself until the job is done; then it links to the job.
    WebDriverWait(browser, TIMEOUT_S, poll_frequency=1).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#series-jobs tr[data-state='SUCCEEDED']")
    )
    browser.find_element(By.CSS_SELECTOR, "#series-jobs tr[data-state='SUCCEEDED'] a").click()
    WebDriverWait(browser, 30).until(ec.presence_of_element_located((By.ID, "findings")))
    uploaded, received = job_of(live, "upload"), job_of(live, "bleed")
    assert uploaded.result_summary["findings"] == received.result_summary["findings"]
    assert uploaded.result_summary["findings"][0]["present"] is True
    assert f"{received.result_summary['findings'][0]['volume_ml']:.2f} mL" in (
        browser.find_element(By.ID, "findings").text
    )
    with live["node"].session_factory() as session:
        series = session.scalar(
            select(Series).where(Series.series_instance_uid == live["uids"]["upload"])
        )
        assert series.calling_ae_title == "WEB-UPLOAD" and series.instance_count == 28
    # The upload's positive finding is announced like the C-STORE one.
    deadline = time.monotonic() + 60
    while not any(m["job_id"] == uploaded.id for m in live["hooks"].received):
        assert time.monotonic() < deadline, "no webhook for the uploaded job"
        time.sleep(0.5)
    metrics = requests.get(url + "/metrics", timeout=30).text
    samples = {
        s.name: s.value
        for f in text_string_to_metric_families(metrics)
        for s in f.samples
        if not s.labels
    }
    assert samples["dicom_node_instances_received_total"] == 3 * 28
    assert samples["dicom_node_workers_alive"] == 1
