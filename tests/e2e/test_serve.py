"""``dicom-node serve`` as an administrator runs it: a config file, a real process, SIGTERM."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import traceback

import pytest
from typer.testing import CliRunner

from dicom_node.cli import app as cli_app
from tests.conftest import free_port, run_storescu

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_serve_receives_analyses_and_stops_cleanly(tmp_path, head_ct_dir, storescu, orthanc):
    port = free_port()
    config = tmp_path / "node.toml"
    config.write_text(f"""
[dicom]
ae_title = "NODE_UNDER_TEST"
port = {port}
allowed_calling_ae_titles = ["STORESCU"]
[storage]
base_dir = "{tmp_path / "node"}"
[series]
stable_after_s = 1.0
sweep_interval_s = 0.3
[workers]
poll_interval_s = 0.3
[export]
sweep_interval_s = 0.5
[[export.destinations]]
name = "orthanc"
ae_title = "{orthanc.ae_title}"
host = "127.0.0.1"
port = {orthanc.dicom_port}
""")
    process = subprocess.Popen(
        [shutil.which("dicom-node"), "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        probe = [head_ct_dir / "01.dcm"]
        while run_storescu(storescu, port, probe, called="NODE_UNDER_TEST").returncode != 0:
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "serve did not start listening"
            time.sleep(0.5)
        sent = run_storescu(
            storescu, port, sorted(head_ct_dir.glob("*.dcm")), called="NODE_UNDER_TEST"
        )
        assert sent.returncode == 0, sent.stderr
        runner = CliRunner()
        deadline = time.monotonic() + 240
        while True:
            listed = runner.invoke(cli_app, ["jobs", "list", "--json", "--config", str(config)])
            assert listed.exit_code == 0, (
                listed.output,
                "".join(traceback.format_exception(listed.exception)) if listed.exception else None,
            )
            jobs = json.loads(listed.output)["jobs"]
            if jobs and jobs[0]["state"] == "SUCCEEDED":
                shown = json.loads(
                    runner.invoke(
                        cli_app,
                        ["jobs", "show", str(jobs[0]["job_id"]), "--json", "--config", str(config)],
                    ).output
                )
                deliveries = [d for o in shown["result_objects"] for d in o["deliveries"]]
                if len(deliveries) == 2 and all(d["state"] == "SENT" for d in deliveries):
                    break
            assert jobs == [] or jobs[0]["state"] in ("QUEUED", "RUNNING", "SUCCEEDED"), jobs
            assert time.monotonic() < deadline, f"no delivered result: {jobs}"
            time.sleep(0.5)
        assert jobs[0]["findings"][0]["label"] == "intracranial hemorrhage"
        # The node sends only its results (SEG + SR), not the source images.
        modalities = sorted(
            orthanc.get(f"/instances/{i}/tags?simplify")["Modality"]
            for i in orthanc.get("/instances")
        )
        assert modalities == ["SEG", "SR"]
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, output
    assert "NODE_UNDER_TEST" in output
