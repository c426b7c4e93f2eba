"""The core install (``pip install .``) works without the ``[ich]`` extra (Keras, TensorFlow).

Each test runs a fresh interpreter whose ``sys.meta_path`` starts with a finder that makes
``keras``, ``tensorflow``, ``jax`` and ``jaxlib`` unimportable, as on a machine where they
were never installed. The node's app and CLI import, ``ich-baseline`` analyses the shipped
sample head CT, and the learned ``ich`` pipeline fails with a message that names the extra,
in the CLI and on a worker's job, instead of an ImportError traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
SAMPLE = REPOSITORY / "dicom_node" / "samples" / "head-ct-ge"
INSTALL_HINT = "pip install 'dicom-node[ich]'"

#: Prepended to every program: the blocker, then nothing of the framework may be loaded.
BLOCKER = """
import importlib.abc, sys
BLOCKED = {"keras", "tensorflow", "jax", "jaxlib"}
class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None
sys.meta_path.insert(0, _Blocker())
"""

#: Appended to every program: the framework was never imported.
NOTHING_LOADED = """
loaded = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
assert not loaded, loaded
"""


def run_without_keras(program: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``program`` in a fresh interpreter where Keras and TensorFlow cannot be imported."""
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(p for p in (str(REPOSITORY), os.environ.get("PYTHONPATH")) if p),
    )
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + program + NOTHING_LOADED],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
        check=False,
    )


def cli(*args: str) -> str:
    """Program text that runs ``dicom-node ARGS`` and prints its exit status last."""
    return f"""
from dicom_node.cli import app
sys.argv = ["dicom-node", *{list(args)!r}]
try:
    app()
    code = 0
except SystemExit as exit:
    code = exit.code
print("exit status", code)
"""


@pytest.fixture
def sample_series(tmp_path: Path) -> Path:
    """The shipped sample head CT's DICOM files alone in a folder (no LICENSE file)."""
    folder = tmp_path / "head-ct-ge"
    folder.mkdir()
    for path in SAMPLE.glob("*.dcm"):
        shutil.copy2(path, folder / path.name)
    return folder


def test_the_blocker_does_block(tmp_path):
    done = run_without_keras("import keras\n", tmp_path)
    assert done.returncode != 0 and "blocked by the test" in done.stderr


def test_app_and_cli_help_work_without_keras(tmp_path):
    done = run_without_keras("import dicom_node.app\n" + cli("--help"), tmp_path)
    assert done.returncode == 0, done.stderr
    assert "serve" in done.stdout and done.stdout.rstrip().endswith("exit status 0")


def test_ich_baseline_analyses_the_sample_without_keras(tmp_path, sample_series):
    program = cli(
        "analyze",
        str(sample_series),
        "--pipeline",
        "ich-baseline",
        "--json",
        "--no-validate",
        "--out",
        str(tmp_path / "out"),
    )
    done = run_without_keras(program, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("exit status 0"), done.stdout + done.stderr
    report = json.loads(done.stdout.rstrip().rsplit("\n", 1)[0])
    assert report["pipeline"] == "ich-baseline" and report["status"] == "analysed"
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "out").iterdir()) == ["SEG", "SR"]


def test_the_ich_pipeline_names_the_extra_without_keras(tmp_path, sample_series):
    program = """
from dicom_node.errors import MissingExtraError, PermanentError
from dicom_node.pipelines import get_pipeline
pipeline = get_pipeline("ich")  # the model package is read without Keras
try:
    pipeline.model
except MissingExtraError as err:
    assert isinstance(err, PermanentError) and isinstance(err, ImportError)
    print("model:", err)
""" + cli(
        "analyze",
        str(sample_series),
        "--pipeline",
        "ich",
        "--no-validate",
        "--out",
        str(tmp_path / "out"),
    )
    done = run_without_keras(program, tmp_path)
    assert done.returncode == 0, done.stderr
    model_line = next(line for line in done.stdout.splitlines() if line.startswith("model:"))
    assert INSTALL_HINT in model_line and "'ich' pipeline" in model_line
    # The CLI says it in one line, not with a traceback.
    assert done.stdout.rstrip().endswith("exit status 2")
    assert INSTALL_HINT in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_a_worker_fails_an_ich_job_with_the_extra_named(tmp_path):
    program = f"""
import io
from pathlib import Path
import pydicom
from sqlalchemy import select
from dicom_node.config import load_settings
from dicom_node.db.engine import make_engine, make_session_factory
from dicom_node.db.models import Job, JobState
from dicom_node.jobs.dispatch import sweep_series
from dicom_node.jobs.executor import JobExecutor
from dicom_node.jobs.worker import run_one
from dicom_node.receive.header import parse_header
from dicom_node.receive.ingest import InstanceIngest
from dicom_node.receive.spool import Spool

settings = load_settings(overrides={{
    "log_level": "WARNING",
    "storage": {{"base_dir": {str(tmp_path / "node")!r}}},
    "series": {{"stable_after_s": 0.0, "early_completion": False}},
    "results": {{"validation": "off"}},
}})
session_factory = make_session_factory(make_engine(settings.storage.url))
ingest = InstanceIngest(Spool(settings.storage.spool_path), session_factory)
for path in sorted(Path({str(SAMPLE)!r}).glob("*.dcm")):
    buffer = io.BytesIO()
    pydicom.dcmread(path).save_as(buffer, enforce_file_format=True)
    ingest.store(parse_header(buffer.getvalue()), buffer.getvalue(), "CT_SCANNER_1")
sweep_series(session_factory, settings)
executor = JobExecutor(settings, session_factory)
assert run_one(session_factory, executor.execute, executor.record, worker_id="test:w0",
               settings=settings.workers) is not None
with session_factory() as session:
    (job,) = session.scalars(select(Job)).all()
    assert job.pipeline == "ich", job.pipeline
    assert job.state == JobState.FAILED, job.state
    print("job error:", job.error)
"""
    done = run_without_keras(program, tmp_path)
    assert done.returncode == 0, done.stderr
    error = next(line for line in done.stdout.splitlines() if line.startswith("job error:"))
    assert "MissingExtraError" in error and INSTALL_HINT in error, error
