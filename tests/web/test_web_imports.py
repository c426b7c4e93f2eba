"""The dashboard loads without the DICOM network stack or the deep-learning stack.

DESIGN.md: only ``receive/`` and ``export/`` import pynetdicom, only ``pipelines/``
and ``training/`` import TensorFlow/Keras. A web process (and every test that
builds the app) should not pay for either; each check runs in a fresh
interpreter, because this test process has long imported both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dicom_node

#: Top-level packages the dashboard must not import.
FORBIDDEN = ("pynetdicom", "tensorflow", "keras")

_PROBE = """
import json, sys

def loaded():
    return sorted(m for m in sys.modules if m.split(".")[0] in {forbidden!r})

import dicom_node.web.app
after_import = loaded()

from dicom_node.config import load_settings
from dicom_node.db.engine import make_engine, make_session_factory
from dicom_node.web.app import create_app

settings = load_settings()
app = create_app(settings, make_session_factory(make_engine(settings.storage.url)))
after_create = loaded()

from fastapi.testclient import TestClient

login_status = TestClient(app).get("/login").status_code
print(json.dumps({{"import": after_import, "create_app": after_create, "login": login_status}}))
"""


def _probe(base_dir: Path) -> dict:
    """Run the probe in a new interpreter on this checkout, with default settings in base_dir."""
    checkout = str(Path(dicom_node.__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOM_NODE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [checkout, env.get("PYTHONPATH")]))
    env["DICOM_NODE_STORAGE__BASE_DIR"] = str(base_dir)
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(forbidden=FORBIDDEN)],
        cwd=base_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_web_app_imports_and_builds_without_pynetdicom_or_tensorflow(tmp_path):
    found = _probe(tmp_path)
    assert found["import"] == [], f"import dicom_node.web.app loaded {found['import']}"
    assert found["create_app"] == [], f"create_app(...) loaded {found['create_app']}"
    assert found["login"] == 200  # the routers were included and the templates render


def test_upload_accepts_the_storage_scps_sop_classes():
    """The upload's pynetdicom-free copy of the accepted SOP classes matches the SCP's."""
    from dicom_node.receive.scp import STORAGE_SOP_CLASSES as SCP_CLASSES
    from dicom_node.web.upload import STORAGE_SOP_CLASSES as UPLOAD_CLASSES

    assert sorted(map(str, UPLOAD_CLASSES)) == sorted(map(str, SCP_CLASSES))
