"""End to end on real scans: storescu -> node -> ich -> SEG + SR -> a real Orthanc.

Two real series go through one node run:

- the CQ500 head CT with hemorrhage (238 slices of 0.625 mm, JPEG Lossless, no
  FrameOfReferenceUID, no BodyPartExamined). Its readers saw intraparenchymal
  and subarachnoid blood and no subdural or epidural blood; the node must
  report the subarachnoid blood (the intraparenchymal is a known miss), no
  subdural or epidural finding, and deliver a dciodvfy-clean SEG and SR that reference every
  source frame.
- the Philips plastic head phantom S2020, which the default selection sends
  to ``ich``: the node must answer "not analysable" with the reason in the
  job and an SR, and never a finding.

CQ500 has no BodyPartExamined and its description ("4cc sec 150cc D3D on")
names no head, so the default rules leave it NOT_ELIGIBLE; this test adds a
rule that takes any axial non-contrast CT for ``ich`` (a site would do the
same for such a scanner, see docs/operations.md). The data are CC BY-NC-SA:
read from ../shared/data, never copied into the repository.
"""

from __future__ import annotations

import copy
import subprocess
import time

import highdicom as hd
import pydicom
import pytest
from sqlalchemy import select

from dicom_node.app import Node
from dicom_node.config import embedded_defaults
from dicom_node.db.models import Delivery, DeliveryState, Job, JobState, Series
from tests.conftest import node_settings_for_orthanc, run_storescu, running_orthanc

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CATCH_ALL_HEAD_RULE = {
    "name": "axial non-contrast CT without a body part (test site rule)",
    "pipeline": "ich",
    "modality": ["CT"],
    "description_pattern": ".",
    "contrast": "absent",
    "orientation": "axial",
    "min_slices": 10,
    "slice_thickness_mm": [0.5, 10.0],
}


@pytest.fixture(scope="module")
def run(tmp_path_factory, shared_data, storescu):
    base = tmp_path_factory.mktemp("e2e-real")
    inputs = {
        "cq500": sorted((shared_data / "head-ct-cq500-ich").glob("*.dcm")),
        "phantom": sorted(
            p for p in (shared_data / "head-phantom-philips/S2020").iterdir() if p.is_file()
        ),
    }
    uids = {
        name: str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
        for name, files in inputs.items()
    }
    rules = copy.deepcopy(embedded_defaults()["selection"]["rules"]) + [CATCH_ALL_HEAD_RULE]
    with running_orthanc(base / "orthanc") as orthanc:
        settings = node_settings_for_orthanc(base / "node", orthanc, selection={"rules": rules})
        node = Node(settings)
        node.start()
        try:
            for name, files in inputs.items():
                # -xs: propose JPEG Lossless, as a modality sending CQ500's own encoding would.
                sent = run_storescu(storescu, node.port, files, extra=("-xs",))
                assert sent.returncode == 0, f"{name}: {sent.stderr}"
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                with node.session_factory() as session:
                    jobs = {
                        k: session.scalar(
                            select(Job).join(Series).where(Series.series_instance_uid == uid)
                        )
                        for k, uid in uids.items()
                    }
                    finished = all(
                        j is not None and j.state in (JobState.SUCCEEDED, JobState.FAILED)
                        for j in jobs.values()
                    )
                    deliveries = session.scalars(select(Delivery)).all()
                    if (
                        finished
                        and len(deliveries) >= 3
                        and all(d.state == DeliveryState.SENT for d in deliveries)
                    ):
                        break
                time.sleep(0.5)
            else:
                pytest.fail("the node did not finish within 300 s")
            yield {"node": node, "orthanc": orthanc, "jobs": jobs, "uids": uids, "inputs": inputs}
        finally:
            node.stop()


def _study_uid(run, name: str) -> str:
    with run["node"].session_factory() as session:
        return session.scalar(
            select(Series).where(Series.series_instance_uid == run["uids"][name])
        ).study.study_instance_uid


def _dciodvfy_errors(dciodvfy: str, path) -> list[str]:
    check = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True)
    return [line for line in (check.stdout + check.stderr).splitlines() if line.startswith("Error")]


def test_cq500_is_reported_with_the_readers_subtypes(run):
    job = run["jobs"]["cq500"]
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.pipeline == "ich"
    assert "not_analysable" not in job.result_summary
    present = {f["label"] for f in job.result_summary["findings"] if f["present"]}
    # The readers' intraparenchymal blood is a known miss (tests/unit/test_ich_real_scans.py).
    assert "subarachnoid hemorrhage" in present, present
    assert not present & {"subdural hemorrhage", "epidural hemorrhage"}, present


def test_cq500_seg_and_sr_in_orthanc_are_valid_and_reference_every_frame(run, dciodvfy, tmp_path):
    objects = run["orthanc"].results_for_study(_study_uid(run, "cq500"))
    assert len(objects.get("SEG", [])) == 1 and len(objects.get("SR", [])) == 1
    for modality, (data,) in objects.items():
        path = tmp_path / f"{modality}.dcm"
        path.write_bytes(data)
        assert _dciodvfy_errors(dciodvfy, path) == [], modality
    source_uids = {
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
        for p in run["inputs"]["cq500"]
    }
    seg = hd.seg.segread(tmp_path / "SEG.dcm")
    assert [s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence] == [run["uids"]["cq500"]]
    assert {sop for _, _, sop in seg.get_source_image_uids()} == source_uids
    present = [f for f in run["jobs"]["cq500"].result_summary["findings"] if f["present"]]
    assert len(seg.SegmentSequence) == len(present)
    sr = hd.sr.srread(tmp_path / "SR.dcm")
    assert source_uids <= {
        i.ReferencedSOPInstanceUID
        for s in sr.CurrentRequestedProcedureEvidenceSequence
        for r in s.ReferencedSeriesSequence
        for i in r.ReferencedSOPSequence
    }
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == len(present)


def test_the_phantom_is_not_analysable_and_the_sr_says_why(run, dciodvfy, tmp_path):
    job = run["jobs"]["phantom"]
    assert job.state == JobState.SUCCEEDED, job.error
    reason = job.result_summary["not_analysable"]
    assert reason["gate"] == "brain_content"
    assert "phantom" in reason["reason"]
    objects = run["orthanc"].results_for_study(_study_uid(run, "phantom"))
    assert sorted(objects) == ["SR"], sorted(objects)  # no SEG: nothing was found
    (data,) = objects["SR"]
    path = tmp_path / "SR.dcm"
    path.write_bytes(data)
    assert _dciodvfy_errors(dciodvfy, path) == []
    texts: list[str] = []
    pydicom.dcmread(path).walk(
        lambda _ds, elem: texts.append(str(elem.value)) if elem.keyword == "TextValue" else None
    )
    assert any("not analysable" in t.lower() and "phantom" in t for t in texts), texts
    sr = hd.sr.srread(path)
    assert sr.content.get_volumetric_roi_measurement_groups() == []
