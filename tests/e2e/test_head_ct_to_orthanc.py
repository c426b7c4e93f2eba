"""End to end: storescu -> node -> ich (learned ResUNet) -> SEG + SR -> a real Orthanc.

One node run (module fixture) receives the real GE head, a copy with a
synthetic 10 mL acute bleed, the phantom localizer and secondary capture and
a chest CT; the tests then check what arrived in Orthanc and what the job
database and the CLI say.
"""

from __future__ import annotations

import subprocess
import time

import highdicom as hd
import numpy as np
import pydicom
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from dicom_node.app import Node
from dicom_node.cli import app as cli_app
from dicom_node.db.models import Delivery, DeliveryState, Job, JobState, Series, SeriesState
from dicom_node.series.volume import read_datasets
from dicom_node.training.synthetic import insert_ellipsoid_hemorrhage, with_new_uids
from tests.conftest import node_settings_for_orthanc, run_storescu, running_orthanc

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SEMI_AXES_MM = (15.0, 12.0, 13.26)  # 4/3*pi*a*b*c = 10.0 mL


@pytest.fixture(scope="module")
def run(tmp_path_factory, shared_data, storescu):
    """Run the node once over all inputs; yield what the tests inspect."""
    base = tmp_path_factory.mktemp("e2e")
    head_files = sorted((shared_data / "head-ct-ge").glob("*.dcm"))
    bleed = insert_ellipsoid_hemorrhage(
        with_new_uids(read_datasets(head_files), seed=7),
        center_mm=None,
        semi_axes_mm=SEMI_AXES_MM,
        hu=65.0,
        seed=7,
    )
    bleed_dir = base / "bleed"
    bleed_dir.mkdir()
    for ds in bleed.datasets:
        ds.save_as(bleed_dir / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    with running_orthanc(base / "orthanc") as orthanc:
        settings = node_settings_for_orthanc(base / "node", orthanc)
        node = Node(settings)
        node.start()
        try:
            inputs = {
                "head": head_files,
                "bleed": sorted(bleed_dir.glob("*.dcm")),
                "localizer": sorted((shared_data / "head-phantom-philips/S1000").iterdir()),
                "secondary capture": sorted((shared_data / "head-phantom-philips/S4010").iterdir()),
                "chest": sorted((shared_data / "chest-ct/lung-30").iterdir()),
            }
            for name, files in inputs.items():
                sent = run_storescu(storescu, node.port, files)
                assert sent.returncode == 0, f"{name}: {sent.stderr}"
            uids = {
                "head": str(pydicom.dcmread(head_files[0]).SeriesInstanceUID),
                "bleed": str(bleed.datasets[0].SeriesInstanceUID),
            }
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
                    not_eligible = session.scalars(
                        select(Series).where(Series.state == SeriesState.NOT_ELIGIBLE)
                    ).all()
                    if (
                        finished
                        and len(deliveries) == 4
                        and all(d.state == DeliveryState.SENT for d in deliveries)
                        and len(not_eligible) == 3
                    ):
                        break
                time.sleep(0.5)
            else:
                pytest.fail("the node did not finish within 300 s")
            yield {
                "node": node,
                "orthanc": orthanc,
                "jobs": jobs,
                "uids": uids,
                "bleed": bleed,
                "settings": settings,
                "base": base,
            }
        finally:
            node.stop()


def test_jobs_succeeded(run):
    for name, job in run["jobs"].items():
        assert job.state == JobState.SUCCEEDED, f"{name}: {job.error}"


@pytest.mark.parametrize("case", ["head", "bleed"])
def test_seg_and_sr_arrive_in_the_source_study(run, case, dciodvfy, tmp_path):
    source_series_uid = run["uids"][case]
    with run["node"].session_factory() as session:
        series = session.scalar(
            select(Series).where(Series.series_instance_uid == source_series_uid)
        )
        study_uid = series.study.study_instance_uid
        frame_of_reference_uid = series.frame_of_reference_uid
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
    assert seg.FrameOfReferenceUID == frame_of_reference_uid
    assert [s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence] == [source_series_uid]
    findings = run["jobs"][case].result_summary["findings"]
    # one SEG segment and one TID 1411 group per finding (per subtype found)
    assert len(seg.SegmentSequence) == len(findings)
    labels = {f["label"] for f in findings}
    expected = {label[0].upper() + label[1:] for label in labels}
    assert {s.SegmentLabel for s in seg.SegmentSequence} == expected
    for number in range(1, len(findings) + 1):
        segment = seg.get_segment_description(number)
        assert segment.segmented_property_type.value == "50960005"  # SNOMED CT Hemorrhage
    sr = hd.sr.srread(tmp_path / "SR.dcm")
    assert sr.StudyInstanceUID == study_uid
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == len(findings)
    for number, group in enumerate(groups, start=1):
        referenced = group.referenced_segment
        assert referenced is not None
        assert referenced.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert referenced.referenced_segment_numbers == [number]
        volume = [m for m in group.get_measurements() if m.name.value == "118565006"]
        assert len(volume) == 1 and volume[0].unit.value == "ml"


def test_ich_is_the_learned_pipeline_by_default(run):
    job = run["jobs"]["bleed"]
    assert job.pipeline == "ich"
    assert job.result_summary["algorithm"]["name"] == "dicom-node ich-resunet"


def test_synthetic_bleed_is_detected_with_volume_and_overlap(run, tmp_path):
    bleed = run["bleed"]
    job = run["jobs"]["bleed"]
    findings = job.result_summary["findings"]
    assert all(f["present"] for f in findings)
    # a parenchymal ellipsoid: reported as intraparenchymal (other subtypes may
    # claim a rim of it; the total volume is what is checked)
    assert "intraparenchymal hemorrhage" in {f["label"] for f in findings}
    total_ml = sum(f["volume_ml"] for f in findings)
    assert abs(total_ml - bleed.inserted_volume_ml) <= 0.35 * bleed.inserted_volume_ml
    with run["node"].session_factory() as session:
        study_uid = session.scalar(
            select(Series).where(Series.series_instance_uid == run["uids"]["bleed"])
        ).study.study_instance_uid
    (data,) = run["orthanc"].results_for_study(study_uid)["SEG"]
    (tmp_path / "seg.dcm").write_bytes(data)
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    pixels = (
        seg.get_pixels_by_source_instance(
            source_sop_instance_uids=list(bleed.sop_instance_uids),
            segment_numbers=list(range(1, len(findings) + 1)),
            assert_missing_frames_are_empty=True,
        )
        .astype(bool)
        .any(axis=-1)
    )
    truth = bleed.mask.astype(bool)
    dice = 2 * np.logical_and(pixels, truth).sum() / (pixels.sum() + truth.sum())
    assert dice > 0.7, f"Dice {dice:.3f}"


def test_unmodified_head_is_reported_absent_or_states_its_false_positive_volume(run):
    (finding,) = run["jobs"]["head"].result_summary["findings"]
    assert finding["label"] == "intracranial hemorrhage"
    assert "volume_ml" in finding
    # The SR states the volume either way; the model must not call this normal head positive.
    assert finding["present"] is False, f"false positive: {finding['volume_ml']} mL"


def test_not_eligible_series_and_reasons_in_jobs_list(run, monkeypatch):
    monkeypatch.setenv("DICOM_NODE_STORAGE__BASE_DIR", str(run["settings"].storage.base_dir))
    result = CliRunner().invoke(cli_app, ["jobs", "list"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "NOT_ELIGIBLE" in line]
    assert len(lines) == 3
    text = "\n".join(lines)
    assert "ImageType contains LOCALIZER" in text
    assert "SOP class Secondary Capture Image Storage" in text
    assert "BodyPartExamined 'CHEST'" in text
    assert sum("SUCCEEDED" in line for line in result.output.splitlines()) == 2
    shown = CliRunner().invoke(cli_app, ["jobs", "show", str(run["jobs"]["bleed"].id)])
    assert shown.exit_code == 0, shown.output
    for stage in ("RECEIVING", "COMPLETE", "DISPATCHED", "RUNNING", "SUCCEEDED", "SENT"):
        assert stage in shown.output
