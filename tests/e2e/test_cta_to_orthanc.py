"""End to end: a generated CT angiogram -> storescu -> node -> cta pipeline -> SEG + SR -> Orthanc.

One node run (module fixture) receives one synthetic angiogram with a left
M1 occlusion, drawn into the real GE head with new UIDs. The tests check the
selection (the CTA rule, not the non-contrast rule), the job result, and the
SEG and SR that arrived in a real Orthanc: dciodvfy without errors, read
back with highdicom, the vessel tree and the suspected occlusion as SEG
segments, and the SR finding with its laterality and site referencing the SEG.
"""

from __future__ import annotations

import subprocess
import time

import highdicom as hd
import numpy as np
import pytest
from sqlalchemy import select

from dicom_node.app import Node
from dicom_node.config import load_settings
from dicom_node.db.models import Delivery, DeliveryState, Job, JobState, Series
from dicom_node.series.volume import read_datasets
from dicom_node.training.synthetic_cta import generate_synthetic_cta
from tests.conftest import free_port, run_storescu, running_orthanc

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def run(tmp_path_factory, shared_data, storescu):
    """Send one synthetic CTA through the node to Orthanc; yield what the tests inspect."""
    base = tmp_path_factory.mktemp("e2e-cta")
    head_files = sorted((shared_data / "head-ct-ge").glob("*.dcm"))
    cta = generate_synthetic_cta(read_datasets(head_files), seed=5, occlusion="M1", side="left")
    cta_dir = base / "cta"
    cta_dir.mkdir()
    for ds in cta.datasets:
        ds.save_as(cta_dir / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    series_uid = str(cta.datasets[0].SeriesInstanceUID)
    with running_orthanc(base / "orthanc") as orthanc:
        settings = load_settings(
            overrides={
                "storage": {"base_dir": str(base / "node")},
                "dicom": {"port": free_port()},
                "series": {"stable_after_s": 1.0, "sweep_interval_s": 0.3},
                "workers": {"processes": 1, "poll_interval_s": 0.3},
                "web": {"enabled": False},
                "export": {
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
            }
        )
        node = Node(settings)
        node.start()
        try:
            sent = run_storescu(storescu, node.port, sorted(cta_dir.glob("*.dcm")))
            assert sent.returncode == 0, sent.stderr
            deadline = time.monotonic() + 300
            job = None
            while time.monotonic() < deadline:
                with node.session_factory() as session:
                    job = session.scalar(
                        select(Job).join(Series).where(Series.series_instance_uid == series_uid)
                    )
                    deliveries = session.scalars(select(Delivery)).all()
                    if (
                        job is not None
                        and job.state in (JobState.SUCCEEDED, JobState.FAILED)
                        and (job.state == JobState.FAILED or len(deliveries) >= 2)
                        and all(d.state == DeliveryState.SENT for d in deliveries)
                    ):
                        break
                time.sleep(0.5)
            else:
                pytest.fail("the node did not finish within 300 s")
            yield {"node": node, "orthanc": orthanc, "job": job, "cta": cta}
        finally:
            node.stop()


def test_the_cta_pipeline_ran_and_found_the_left_occlusion(run):
    job = run["job"]
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.pipeline == "cta"
    summary = job.result_summary
    assert [f["label"] for f in summary["findings"]] == ["cerebral arteries", "vessel occlusion"]
    assert summary["findings"][0]["present"] is True
    lvo = summary["details"]["lvo"]
    assert lvo["suspected"] is True, lvo
    assert lvo["side"] == "left"
    assert lvo["segment"] in ("ICA-T", "M1")
    assert summary["findings"][1]["present"] is True
    # The job summary (jobs show, dashboard) names the side and the segment.
    assert summary["findings"][1]["laterality"] == "left"
    assert summary["findings"][1]["finding_site"] in (
        "terminal internal carotid artery",
        "middle cerebral artery m1 segment",
    )


def test_seg_and_sr_arrive_valid_and_read_back(run, dciodvfy, tmp_path):
    cta = run["cta"]
    study_uid = str(cta.datasets[0].StudyInstanceUID)
    objects = run["orthanc"].results_for_study(study_uid)
    assert len(objects.get("SEG", [])) == 1 and len(objects.get("SR", [])) == 1
    for modality, (data,) in objects.items():
        path = tmp_path / f"{modality}.dcm"
        path.write_bytes(data)
        check = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True)
        errors = [
            line for line in (check.stdout + check.stderr).splitlines() if line.startswith("Error")
        ]
        assert errors == [], f"{modality}: {errors}"

    seg = hd.seg.segread(tmp_path / "SEG.dcm")
    assert seg.StudyInstanceUID == study_uid
    assert seg.FrameOfReferenceUID == str(cta.datasets[0].FrameOfReferenceUID)
    assert seg.number_of_segments == 2
    assert seg.get_segment_description(1).segmented_property_type.value == "88556005"
    assert seg.get_segment_description(2).segmented_property_type.value == "396339007"
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=list(cta.sop_instance_uids),
        segment_numbers=[1, 2],
        assert_missing_frames_are_empty=True,
    ).astype(bool)
    vessels, occlusion = pixels[..., 0], pixels[..., 1]
    dice = (
        2 * np.logical_and(vessels, cta.vessel_mask).sum() / (vessels.sum() + cta.vessel_mask.sum())
    )
    assert dice > 0.35, f"vessel Dice {dice:.3f} on the whole grid"
    assert occlusion.any()

    sr = hd.sr.srread(tmp_path / "SR.dcm")
    assert sr.StudyInstanceUID == study_uid
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == 2
    finding = groups[1]
    assert finding.finding_type.value == "26036001"  # SCT Occlusion
    referenced = finding.referenced_segment
    assert referenced.referenced_sop_instance_uid == seg.SOPInstanceUID
    assert referenced.referenced_segment_numbers == [2]
    (site,) = finding.finding_sites
    assert site.value.value in ("415646005", "414722000")  # terminal ICA, MCA M1 segment
    laterality = [item for item in site.ContentSequence if item.name.value == "272741003"]
    assert laterality and laterality[0].value.value == "7771000"  # SCT Left
    presence = [e for e in finding.get_qualitative_evaluations() if e.value.value == "52101004"]
    assert presence, "the occlusion is reported Present"
