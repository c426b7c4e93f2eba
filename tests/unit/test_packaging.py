"""A built wheel carries the shipped model packages, and an installed copy finds them.

Before, the default ICH model was looked up in ``<repository>/models``, which only a clone
or ``pip install -e`` has: a node installed from a wheel had no default model.
The wheel is built without build isolation (no network); the test extras bring the
``setuptools>=68`` and ``wheel`` that ``[build-system]`` names.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
MODELS = REPOSITORY / "dicom_node" / "models"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel from a copy of the source tree (no network: no build isolation)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPOSITORY / name, source / name)
    shutil.copytree(
        REPOSITORY / "dicom_node",
        source / "dicom_node",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    # A real folder, not a link: it survives checkouts without symlinks and sdists.
    assert (source / "dicom_node" / "models").is_dir()
    assert not (source / "dicom_node" / "models").is_symlink()
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (built,) = out.glob("dicom_node-*.whl")
    return built


@pytest.fixture(scope="module")
def installed_wheel(wheel, tmp_path_factory) -> Path:
    """The wheel installed (no dependencies) into a folder of its own; put it on PYTHONPATH."""
    target = tmp_path_factory.mktemp("site")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
         str(wheel)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    return target


def test_the_wheel_holds_every_shipped_model_package(wheel):
    packages = sorted(p.parent for p in MODELS.glob("*/*/manifest.json"))
    assert packages, "no model package in dicom_node/models/"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for package in packages:
            inside = f"dicom_node/models/{package.parent.name}/{package.name}"
            for file in ("model.keras", "manifest.json", "MODEL_CARD.md"):
                assert f"{inside}/{file}" in names, f"{inside}/{file} missing from {wheel.name}"
            manifest = json.loads(archive.read(f"{inside}/manifest.json"))
            weights = hashlib.sha256(archive.read(f"{inside}/model.keras")).hexdigest()
            assert weights == manifest["weights_sha256"]


def test_an_installed_wheel_finds_its_default_ich_model(installed_wheel, tmp_path):
    target = installed_wheel
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import dicom_node.pipelines.ich as m; print(m.__file__); print(m.default_model_dir())",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(target)),
    )
    assert probe.returncode == 0, probe.stderr
    module_file, model_dir = (Path(line) for line in probe.stdout.split())
    assert module_file.is_relative_to(target)
    assert model_dir.is_relative_to(target / "dicom_node" / "models" / "ich")
    newest = max(
        (p.parent.name for p in (MODELS / "ich").glob("*/manifest.json")),
        key=lambda v: tuple(int(x) for x in v.split(".")),
    )
    assert model_dir.name == newest
    assert (model_dir / "model.keras").is_file()


def test_the_wheel_marks_the_package_as_typed(wheel):
    """PEP 561: ``dicom_node/py.typed`` ships, so type checkers read the annotations."""
    with zipfile.ZipFile(wheel) as archive:
        assert "dicom_node/py.typed" in archive.namelist()


def test_the_wheel_carries_the_cli_package_and_its_console_script(wheel, installed_wheel, tmp_path):
    """``dicom_node.cli`` is a package: the script and ``python -m`` must still find ``app``."""
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = archive.read(entry_points).decode()
    assert "dicom-node = dicom_node.cli:app" in scripts
    for module in ("__init__", "__main__", "jobs", "common"):
        assert f"dicom_node/cli/{module}.py" in names
    assert "dicom_node/cli.py" not in names
    target = installed_wheel
    version = subprocess.run(
        [sys.executable, "-m", "dicom_node.cli", "version"], capture_output=True, text=True,
        timeout=120, cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(target)),
    )  # fmt: skip
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == subprocess.run(
        [sys.executable, "-c", "import dicom_node; print(dicom_node.__version__)"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(target)),
    ).stdout.strip()  # fmt: skip
