"""The cta pipeline on generated angiograms, and its SEG + TID 1500 SR.

Two generated cases (a normal angiogram and a left ICA-T occlusion, seeds of
the evaluation set) and the real non-contrast GE head. The full evaluation
over 72 cases is ``dicom-node evaluate cta`` (docs/cta-evaluation.md), not a
test.
"""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from dicom_node.errors import NotAnalysableError, ResultBuildError
from dicom_node.imaging.masks import dice_coefficient
from dicom_node.imaging.vessels import cta_intracranial_mask
from dicom_node.pipelines import PIPELINE_NAMES, get_pipeline
from dicom_node.pipelines.base import PipelineResult
from dicom_node.pipelines.cta import CtaLvoPipeline
from dicom_node.results import build_results
from dicom_node.results.equipment import EquipmentIdentity
from dicom_node.series.volume import CTVolume, load_ct_volume, read_datasets
from dicom_node.training.synthetic_cta import (
    SyntheticCTA,
    generate_synthetic_cta,
    locate_head_landmarks,
)


@pytest.fixture(scope="module")
def ge_datasets(shared_data: Path) -> list[pydicom.Dataset]:
    return read_datasets(sorted((shared_data / "head-ct-ge").glob("*.dcm")))


@pytest.fixture(scope="module")
def cases(ge_datasets) -> dict[str, tuple[SyntheticCTA, CTVolume, PipelineResult]]:
    landmarks = locate_head_landmarks(load_ct_volume(ge_datasets))
    pipeline = CtaLvoPipeline()
    out = {}
    for name, kwargs in (
        ("normal", {"seed": 0}),
        ("ica-t left", {"seed": 1, "occlusion": "ICA-T", "side": "left"}),
    ):
        cta = generate_synthetic_cta(ge_datasets, landmarks=landmarks, **kwargs)
        volume = load_ct_volume(cta.datasets)
        out[name] = (cta, volume, pipeline.run(volume))
    return out


def test_registered_as_cta():
    assert "cta" in PIPELINE_NAMES
    pipeline = get_pipeline("cta")
    assert isinstance(pipeline, CtaLvoPipeline)
    assert pipeline.algorithm.family == "image processing"


def test_normal_angiogram_has_vessels_and_no_occlusion(cases):
    cta, volume, result = cases["normal"]
    arteries, occlusion = result.findings
    assert arteries.label == "cerebral arteries" and arteries.present
    assert arteries.mask.shape == volume.shape
    brain = cta_intracranial_mask(volume)
    assert dice_coefficient(arteries.mask & brain, cta.vessel_mask & brain) > 0.6
    assert occlusion.label == "vessel occlusion"
    assert not occlusion.present and not occlusion.mask.any() and occlusion.volume_ml == 0.0
    assert occlusion.laterality is None
    lvo = result.details["lvo"]
    threshold = result.details["parameters"]["trunk_ratio_threshold"]
    assert lvo["suspected"] is False and lvo["asymmetry_ratio"] > threshold
    # The SR extras: the ratio, also when no occlusion is suspected.
    extras = result.details["sr"]["vessel occlusion"]
    assert extras["measurements"] == [{"name": "volume ratio", "value": lvo["asymmetry_ratio"]}]
    assert "location_mm" not in extras  # no occlusion, no location point in the SR


def test_left_carotid_terminus_occlusion_is_found_on_the_left(cases):
    cta, volume, result = cases["ica-t left"]
    occlusion = result.findings[1]
    assert occlusion.present and occlusion.laterality == "left"
    assert occlusion.finding_site in (
        "terminal internal carotid artery",
        "middle cerebral artery m1 segment",
    )
    lvo = result.details["lvo"]
    assert lvo["asymmetry_ratio"] < result.details["parameters"]["trunk_ratio_threshold"]
    error_mm = np.linalg.norm(np.asarray(lvo["location_mm"]) - np.asarray(cta.occlusion.point_mm))
    assert error_mm < 15.0
    # The "suspected occlusion" region is a ball around that location, on the left.
    assert 0.2 < occlusion.volume_ml < 0.8
    index = np.argwhere(occlusion.mask)
    row_direction = volume.row_direction
    centres = volume.image_positions_mm[index[:, 0]] + (
        index[:, 2:3] * volume.pixel_spacing_mm[1] * row_direction
    )
    assert np.all(centres[:, 0] > lvo["willis_center_mm"][0])  # LPS +x is the patient's left


def test_a_head_without_enhancement_inside_the_skull_is_refused(ge_datasets):
    # The real head with everything above 100 HU inside the skull set to brain: no arteries,
    # no calcification. (The unmodified non-contrast head is *not* reliably refused: its skull
    # base fragments and calcifications pass for vessels; selection keeps it away.)
    volume = load_ct_volume(ge_datasets)
    brain = cta_intracranial_mask(volume)
    hu = np.where(brain & (volume.hu > 100.0), 35.0, volume.hu).astype(np.float32)
    with pytest.raises(NotAnalysableError, match="contrast") as refused:
        CtaLvoPipeline().run(replace(volume, hu=hu))
    assert refused.value.gate == "arterial_contrast"


@pytest.mark.parametrize("folder", ["head-ct-ge", "head-phantom-philips/S2010"])
def test_real_non_contrast_heads_and_the_phantom_are_not_analysable(shared_data, folder):
    """Routed to the CTA pipeline by mistake, a non-contrast head or the plastic phantom is
    reported "not analysable" (a report, never a finding), not a failed job."""
    volume = load_ct_volume(read_datasets(sorted((shared_data / folder).glob("*.dcm"))))
    with pytest.raises(NotAnalysableError) as refused:
        CtaLvoPipeline().run(volume)
    assert refused.value.gate in ("arterial_contrast", "vessel_tree"), refused.value


def test_seg_and_sr_of_an_occlusion_are_valid_and_read_back(cases, dciodvfy, tmp_path):
    cta, volume, result = cases["ica-t left"]
    by_uid = {str(ds.SOPInstanceUID): ds for ds in cta.datasets}
    ordered = [by_uid[uid] for uid in volume.sop_instance_uids]
    seg, sr = build_results(ordered, result, equipment=EquipmentIdentity(software_versions="test"))
    for name, dataset in (("seg", seg), ("sr", sr)):
        path = tmp_path / f"{name}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        check = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True)
        errors = [
            line for line in (check.stdout + check.stderr).splitlines() if line.startswith("Error")
        ]
        assert errors == [], f"{name}: {errors}"
    seg_read = hd.seg.segread(tmp_path / "seg.dcm")
    assert seg_read.number_of_segments == 2
    arteries = seg_read.get_segment_description(1)
    occlusion = seg_read.get_segment_description(2)
    assert arteries.segmented_property_type.value == "88556005"  # SCT Cerebral artery
    assert occlusion.segmented_property_type.value == "396339007"  # SCT Thrombus
    pixels = seg_read.get_pixels_by_source_instance(
        source_sop_instance_uids=list(volume.sop_instance_uids),
        segment_numbers=[1, 2],
        assert_missing_frames_are_empty=True,
    ).astype(bool)
    assert np.array_equal(pixels[..., 0], result.findings[0].mask)
    assert np.array_equal(pixels[..., 1], result.findings[1].mask)
    report = hd.sr.srread(tmp_path / "sr.dcm")
    groups = report.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == 2
    finding = groups[1]
    assert finding.finding_type.value == "26036001"  # SCT Occlusion
    assert finding.referenced_segment.referenced_sop_instance_uid == seg_read.SOPInstanceUID
    assert finding.referenced_segment.referenced_segment_numbers == [2]
    (site,) = finding.finding_sites
    laterality = [item for item in site.ContentSequence if item.name.value == "272741003"]
    assert laterality and laterality[0].value.value == "7771000"  # SCT Left
    # The asymmetry ratio is a TID 1419 NUM of the occlusion group: DCM 113288 in {ratio}.
    ratios = [m for m in finding.get_measurements() if m.name.value == "113288"]
    assert len(ratios) == 1
    assert ratios[0].unit.value == "{ratio}"
    assert ratios[0].value == pytest.approx(result.details["lvo"]["asymmetry_ratio"], abs=1e-3)
    # Procedure reported: CT angiography of head (SCT), not the plain "CT Head".
    procedures = [
        item.ConceptCodeSequence[0].CodeValue
        for item in report.ContentSequence
        if item.ConceptNameCodeSequence[0].CodeValue == "121058"
    ]
    assert procedures == ["582101000119108"]


def _scoord3d_items(items):
    """Every SCOORD3D content item in a content tree, depth first."""
    for item in items:
        if item.ValueType == "SCOORD3D":
            yield item
        yield from _scoord3d_items(item.get("ContentSequence", []))


def _build_and_check(cta, volume, result, dciodvfy, tmp_path):
    """Build SEG and SR, write the SR, run dciodvfy on it; return the SEG and the SR read back."""
    by_uid = {str(ds.SOPInstanceUID): ds for ds in cta.datasets}
    ordered = [by_uid[uid] for uid in volume.sop_instance_uids]
    seg, sr = build_results(ordered, result, equipment=EquipmentIdentity(software_versions="test"))
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    check = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True)
    errors = [
        line for line in (check.stdout + check.stderr).splitlines() if line.startswith("Error")
    ]
    assert errors == [], errors
    return seg, hd.sr.srread(path)


def test_sr_gives_the_occlusion_location_as_a_scoord3d_point(cases, dciodvfy, tmp_path):
    cta, volume, result = cases["ica-t left"]
    location_mm = result.details["sr"]["vessel occlusion"]["location_mm"]
    # The SR's point is the pipeline's location (details.lvo keeps it to 0.1 mm).
    assert np.allclose(location_mm, result.details["lvo"]["location_mm"], atol=0.05 + 1e-9)
    seg, report = _build_and_check(cta, volume, result, dciodvfy, tmp_path)

    (point,) = list(_scoord3d_items(report.ContentSequence))
    assert point.GraphicType == "POINT"
    assert point.ConceptNameCodeSequence[0].CodeValue == "111030"  # DCM Image Region
    assert np.allclose(np.asarray(point.GraphicData, dtype=float), location_mm, atol=0.01)
    assert point.ReferencedFrameOfReferenceUID == cta.datasets[0].FrameOfReferenceUID
    assert point.ReferencedFrameOfReferenceUID == seg.FrameOfReferenceUID

    # It is a TID 1410 group of its own, tracked as the same finding as SEG segment 2.
    (group,) = report.content.get_planar_roi_measurement_groups()
    assert group.roi.GraphicType == "POINT"
    assert group.finding_type.value == "26036001"  # SCT Occlusion
    (volumetric,) = report.content.get_volumetric_roi_measurement_groups(
        finding_type=hd.sr.CodedConcept("26036001", "SCT", "Occlusion")
    )
    assert group.tracking_uid == volumetric.tracking_uid == seg.SegmentSequence[1].TrackingUID
    assert group.tracking_identifier == volumetric.tracking_identifier
    (site,) = group.finding_sites
    assert site.value.value in ("415646005", "414722000")  # SCT terminal ICA / MCA M1
    laterality = [item for item in site.ContentSequence if item.name.value == "272741003"]
    assert laterality and laterality[0].value.value == "7771000"  # SCT Left
    purposes = [item for item in group[0].ContentSequence if item.name.value == "130400"]
    assert [item.value.value for item in purposes] == ["128140"]  # DCM Representative point
    # The point lies in the "suspected occlusion" ball of SEG segment 2 (5 mm radius).
    occlusion = result.findings[1]
    index = np.argwhere(occlusion.mask)
    centres = (
        volume.image_positions_mm[index[:, 0]]
        + index[:, 2:3] * volume.pixel_spacing_mm[1] * volume.row_direction
        + index[:, 1:2] * volume.pixel_spacing_mm[0] * volume.column_direction
    )
    assert np.linalg.norm(centres - np.asarray(location_mm), axis=1).min() < 2.0


def test_sr_of_a_normal_angiogram_has_no_location_point(cases, dciodvfy, tmp_path):
    cta, volume, result = cases["normal"]
    _, report = _build_and_check(cta, volume, result, dciodvfy, tmp_path)
    assert list(_scoord3d_items(report.ContentSequence)) == []
    assert report.content.get_planar_roi_measurement_groups() == []


@pytest.mark.parametrize(
    "location_mm", [[1.0, 2.0], [1.0, float("nan"), 3.0], "here"], ids=["2d", "nan", "text"]
)
def test_a_bad_location_is_refused(cases, location_mm):
    cta, volume, result = cases["ica-t left"]
    by_uid = {str(ds.SOPInstanceUID): ds for ds in cta.datasets}
    ordered = [by_uid[uid] for uid in volume.sop_instance_uids]
    details = {**result.details, "sr": {"vessel occlusion": {"location_mm": location_mm}}}
    with pytest.raises(ResultBuildError, match="location"):
        build_results(
            ordered,
            replace(result, details=details),
            equipment=EquipmentIdentity(software_versions="test"),
        )


def test_job_summary_text_names_the_side_and_segment():
    from dicom_node.queries import finding_text

    text = finding_text(
        [
            {"label": "cerebral arteries", "present": True, "volume_ml": 4.2},
            {
                "label": "vessel occlusion",
                "present": True,
                "volume_ml": 0.52,
                "laterality": "left",
                "finding_site": "middle cerebral artery m1 segment",
            },
        ]
    )
    assert text == (
        "cerebral arteries present (4.20 mL); "
        "vessel occlusion present, left middle cerebral artery m1 segment (0.52 mL)"
    )
    absent = finding_text([{"label": "vessel occlusion", "present": False, "volume_ml": 0.0}])
    assert absent == "vessel occlusion absent (0.00 mL)"


def test_every_registry_entry_names_a_pipeline_class_of_that_name():
    from importlib import import_module

    from dicom_node.pipelines import REGISTRY

    assert tuple(REGISTRY) == PIPELINE_NAMES
    for name, entry in REGISTRY.items():
        module_name, _, class_name = entry.target.partition(":")
        pipeline_class = getattr(import_module(module_name), class_name)
        assert pipeline_class.name == name, entry
        assert entry.summary
