"""The newcomer's command: ``dicom-node demo`` on a fresh folder, as a real subprocess."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_demo_reports_both_findings_and_writes_seg_and_sr(tmp_path):
    exe = shutil.which("dicom-node")
    assert exe, "the console script is installed by 'pip install -e .'"
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [exe, "demo", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "== sample head CT" in out and "== synthetic bleed" in out
    sample, bleed = out.split("== synthetic bleed")
    assert "intracranial hemorrhage absent" in sample
    # the learned model names the subtype of the parenchymal bleed
    assert "intraparenchymal hemorrhage present" in bleed
    assert "absent" not in bleed
    written = re.findall(r"^(SEG|SR)\s+(\S+)$", out, re.MULTILINE)
    assert sorted(kind for kind, _ in written) == ["SEG", "SEG", "SR", "SR"]
    for kind, path in written:
        assert workdir in Path(path).parents
        reader = hd.seg.segread if kind == "SEG" else hd.sr.srread
        assert reader(path).Modality == kind
    # Running the demo again in the same folder starts afresh.
    again = subprocess.run(
        [exe, "demo", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert again.returncode == 0, again.stderr


def test_demo_runs_on_a_machine_without_dicom3tools(tmp_path):
    """The README's first command needs no Debian extras: only Python on PATH."""
    exe = shutil.which("dicom-node")
    assert exe
    python_bin = str(Path(exe).parent)
    assert shutil.which("dciodvfy", path=python_bin) is None
    env = {"HOME": str(tmp_path), "PATH": python_bin}
    result = subprocess.run(
        [exe, "demo", "--workdir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # said once at start-up (as a warning), not once per object
    assert (result.stdout + result.stderr).count("dciodvfy (dicom3tools) is not installed") == 1
    assert "intraparenchymal hemorrhage present" in result.stdout.split("== synthetic bleed")[1]
