"""The five hemorrhage subtypes (and the any-ICH finding) in SEG, TID 1500 SR and SC overlays.

Masks are drawn on the real GE head grid (28 slices, gantry tilt, uneven
steps); every object is checked by dciodvfy and read back with highdicom to
the labels, codes, volumes, lateralities and probabilities that went in.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from types import SimpleNamespace

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.coding import Code

from dicom_node.errors import ResultBuildError
from dicom_node.imaging.ich_input import ICH_SUBTYPES
from dicom_node.pipelines.base import AlgorithmIdentity, PipelineResult, SegmentFinding
from dicom_node.results import (
    EquipmentIdentity,
    build_measurement_report,
    build_overlay_series,
    build_results_for_profiles,
    build_segmentations,
    validate_result_file,
)
from dicom_node.results import codes as node_codes
from dicom_node.results.profiles import ResultProfile
from dicom_node.results.sc import OverlayLayout, key_slice_indices
from dicom_node.results.seg import with_tracking
from dicom_node.results.sr import described_segments
from dicom_node.results.validate import LABEL_MAP_REFERENCE_FALSE_POSITIVES
from dicom_node.series.volume import load_ct_volume, read_datasets

ALGORITHM = AlgorithmIdentity(name="ich-test", version="0.0.1", family="artificial intelligence")
EQUIPMENT = EquipmentIdentity(device_serial_number="DICOM_NODE_TEST")
ANY_ICH = "intracranial hemorrhage"

# label -> (expected finding type, expected finding site / SEG anatomic region)
EXPECTED_CODES = {
    "epidural hemorrhage": (node_codes.HEMORRHAGE, node_codes.INTRACRANIAL),
    "subdural hemorrhage": (node_codes.SUBDURAL_HEMORRHAGE, node_codes.INTRACRANIAL),
    "subarachnoid hemorrhage": (node_codes.SUBARACHNOID_HEMORRHAGE, node_codes.SUBARACHNOID_SPACE),
    "intraparenchymal hemorrhage": (node_codes.CEREBRAL_HEMORRHAGE, node_codes.BRAIN),
    "intraventricular hemorrhage": (node_codes.HEMORRHAGE, node_codes.BRAIN_VENTRICLE),
    ANY_ICH: (node_codes.INTRACRANIAL_HEMORRHAGE, node_codes.INTRACRANIAL),
}
LATERALITY = {
    "epidural hemorrhage": "right",
    "subdural hemorrhage": "left",
    "subarachnoid hemorrhage": "bilateral",
    "intraparenchymal hemorrhage": "left",
    "intraventricular hemorrhage": None,
    ANY_ICH: "bilateral",
}
PROBABILITY = {
    "epidural hemorrhage": 0.91,
    "subdural hemorrhage": 0.83,
    "subarachnoid hemorrhage": 0.64,
    "intraparenchymal hemorrhage": 0.97,
    "intraventricular hemorrhage": 0.58,
    ANY_ICH: 0.99,
}


def _code_tuple(code: Code | pydicom.Dataset) -> tuple[str, str]:
    """(value, scheme) of a Code or of a code sequence item."""
    if isinstance(code, Code):
        return (str(code.value), str(code.scheme_designator))
    return (str(code.CodeValue), str(code.CodingSchemeDesignator))


def _save(dataset, path: Path, *, allowed_errors: int | None = 0) -> Path:
    """Write, run dciodvfy; no errors, and exactly ``allowed_errors`` allow-listed (None: any)."""
    dataset.save_as(path, enforce_file_format=True)
    report = validate_result_file(path)
    assert report.errors == (), [m.line for m in report.errors]
    if allowed_errors is not None:
        assert len(report.allowed_errors) == allowed_errors, [m.line for m in report.allowed_errors]
    return path


@pytest.fixture(scope="module")
def head(head_ct_dir: Path):
    """The GE head: its HU volume and the datasets in the volume's slice order."""
    datasets = read_datasets(sorted(head_ct_dir.glob("*.dcm")))
    volume = load_ct_volume(datasets)
    by_uid = {str(ds.SOPInstanceUID): ds for ds in datasets}
    return SimpleNamespace(
        volume=volume, datasets=[by_uid[uid] for uid in volume.sop_instance_uids]
    )


def _subtype_masks(shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """Five disjoint masks, one per subtype, each a plausible shape at a distinct place."""
    rr, cc = np.mgrid[0 : shape[1], 0 : shape[2]]
    masks = {label: np.zeros(shape, dtype=bool) for label in ICH_SUBTYPES}
    # Epidural: a lens against the (image-left) convexity over three slices.
    for k in (13, 14, 15):
        masks["epidural hemorrhage"][k] = ((rr - 250) / 40.0) ** 2 + ((cc - 100) / 10.0) ** 2 <= 1
    # Subdural: a thin crescent along the other convexity over four slices.
    for k in (17, 18, 19, 20):
        ring = (rr - 256) ** 2 + (cc - 256) ** 2
        masks["subdural hemorrhage"][k] = (ring >= 150**2) & (ring <= 156**2) & (cc > 330)
    # Subarachnoid: thin streaks in two slices.
    masks["subarachnoid hemorrhage"][11, 300:304, 230:290] = True
    masks["subarachnoid hemorrhage"][12, 296:300, 235:280] = True
    # Intraparenchymal: a ball.
    for k, radius in ((15, 12), (16, 16), (17, 10)):
        masks["intraparenchymal hemorrhage"][k] = (rr - 320) ** 2 + (cc - 340) ** 2 <= radius**2
    # Intraventricular: a small block.
    masks["intraventricular hemorrhage"][16, 240:252, 250:262] = True
    return masks


@pytest.fixture(scope="module")
def subtypes(head) -> PipelineResult:
    """Five present subtype findings, in ICH_SUBTYPES order, with side and probability."""
    masks = _subtype_masks(head.volume.shape)
    findings = [
        SegmentFinding(
            label,
            True,
            head.volume.mask_volume_ml(masks[label]),
            masks[label],
            PROBABILITY[label],
            laterality=LATERALITY[label],
        )
        for label in ICH_SUBTYPES
    ]
    return with_tracking(PipelineResult("ich", ALGORITHM, findings))


@pytest.fixture(scope="module")
def with_any(head, subtypes) -> PipelineResult:
    """The any-ICH finding (union of the subtypes) first, then the five subtypes."""
    union = np.any([f.mask for f in subtypes.findings], axis=0)
    any_ich = SegmentFinding(
        ANY_ICH,
        True,
        head.volume.mask_volume_ml(union),
        union,
        PROBABILITY[ANY_ICH],
        laterality=LATERALITY[ANY_ICH],
    )
    return with_tracking(PipelineResult("ich", ALGORITHM, [any_ich, *subtypes.findings]))


def test_every_subtype_label_has_codes_and_a_distinct_colour():
    labels = [*ICH_SUBTYPES, ANY_ICH]
    assert set(labels) <= set(node_codes.known_finding_labels())
    colours = {label: node_codes.finding_codes(label).recommended_display_rgb for label in labels}
    lab = {
        label: np.asarray(hd.color.CIELabColor.from_rgb(*rgb).value, dtype=float)
        for label, rgb in colours.items()
    }
    for a, b in itertools.combinations(labels, 2):
        # DICOM-encoded CIELab (0-65535 per component): clearly apart, not just different.
        assert np.linalg.norm(lab[a] - lab[b]) > 5000, (a, b)
    abbreviations = [node_codes.finding_codes(label).abbreviation for label in labels]
    assert len(set(abbreviations)) == len(labels)


@pytest.mark.parametrize("seg_type", ["BINARY", "LABELMAP"])
def test_seg_has_one_segment_per_subtype(head, subtypes, with_any, tmp_path, seg_type):
    result = with_any if seg_type == "BINARY" else subtypes
    (seg,) = build_segmentations(
        head.datasets, result, equipment=EQUIPMENT, segmentation_type=seg_type
    )
    # A label map keeps the documented dicom3tools false positives (validate.py).
    allowed = 0 if seg_type == "BINARY" else None
    back = hd.seg.segread(_save(seg, tmp_path / "seg.dcm", allowed_errors=allowed))
    segments = described_segments(back)
    assert [s.SegmentLabel for s in segments] == [
        node_codes.finding_codes(f.label).segment_label for f in result.findings
    ]
    colours = set()
    for segment, finding in zip(segments, result.findings, strict=True):
        codes_ = node_codes.finding_codes(finding.label)
        assert _code_tuple(segment.SegmentedPropertyTypeCodeSequence[0]) == _code_tuple(
            node_codes.HEMORRHAGE
        )
        assert _code_tuple(segment.SegmentedPropertyCategoryCodeSequence[0]) == _code_tuple(
            node_codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE
        )
        region = segment.AnatomicRegionSequence[0]
        assert _code_tuple(region) == _code_tuple(EXPECTED_CODES[finding.label][1])
        if finding.laterality:
            modifier = region.AnatomicRegionModifierSequence[0]
            assert _code_tuple(modifier) == _code_tuple(
                node_codes.laterality_code(finding.laterality)
            )
        else:
            assert "AnatomicRegionModifierSequence" not in region
        assert (segment.TrackingID, segment.TrackingUID) == (
            finding.tracking_id,
            finding.tracking_uid,
        )
        assert segment.TrackingID.startswith(codes_.abbreviation)
        colours.add(tuple(segment.RecommendedDisplayCIELabValue))
    assert len(colours) == len(result.findings)
    numbers = list(range(1, len(result.findings) + 1))
    pixels = back.get_pixels_by_source_instance(
        [ds.SOPInstanceUID for ds in head.datasets],
        segment_numbers=numbers,
        combine_segments=False,
    )
    np.testing.assert_array_equal(
        pixels.astype(bool), np.stack([f.mask for f in result.findings], -1)
    )


def test_labelmap_refuses_the_overlapping_any_ich_finding_by_name(head, with_any):
    # The any-ICH mask is the union of the subtypes: one label map cannot hold both.
    with pytest.raises(ResultBuildError, match="overlap.*intracranial hemorrhage"):
        build_segmentations(
            head.datasets, with_any, equipment=EQUIPMENT, segmentation_type="LABELMAP"
        )


def test_sr_has_one_tid1411_group_per_subtype(head, with_any, tmp_path):
    (seg,) = build_segmentations(head.datasets, with_any, equipment=EQUIPMENT)
    sr = build_measurement_report(head.datasets, seg, with_any, equipment=EQUIPMENT)
    back = hd.sr.srread(_save(sr, tmp_path / "sr.dcm"))
    groups = back.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == len(with_any.findings)
    for number, (group, finding) in enumerate(zip(groups, with_any.findings, strict=True), 1):
        finding_type, site_code = EXPECTED_CODES[finding.label]
        assert group.finding_type == finding_type
        assert group.tracking_uid == finding.tracking_uid
        assert group.tracking_identifier == finding.tracking_id
        (site,) = group.finding_sites
        assert site.value == site_code
        expected_side = (
            node_codes.laterality_code(finding.laterality) if finding.laterality else None
        )
        assert site.laterality == expected_side
        measurements = {m.name.value: m for m in group.get_measurements()}
        volume = measurements[node_codes.VOLUME.value]
        assert volume.unit == node_codes.MILLILITER
        assert volume.value == pytest.approx(finding.volume_ml)
        assert volume.value > 0
        probability = measurements[node_codes.PROBABILITY.value]
        assert probability.value == pytest.approx(finding.probability)
        reference = group.referenced_segment[0]
        assert reference.referenced_segment_numbers == [number]
        assert reference.referenced_sop_instance_uid == seg.SOPInstanceUID
        presence = [q.value for q in group.get_qualitative_evaluations() if q.name == finding_type]
        assert presence == [node_codes.PRESENT]
    # Report level: one Present statement per finding and a comment naming each subtype.
    (container,) = [
        item
        for item in back.ContentSequence
        if item.ConceptNameCodeSequence[0].CodeValue == node_codes.QUALITATIVE_EVALUATIONS.value
    ]
    statements = [i for i in container.ContentSequence if i.ValueType == "CODE"]
    assert len(statements) == len(with_any.findings)
    assert {s.ConceptCodeSequence[0].CodeValue for s in statements} == {node_codes.PRESENT.value}
    (comment,) = [i for i in container.ContentSequence if i.ValueType == "TEXT"]
    for finding in with_any.findings:
        name = node_codes.finding_codes(finding.label).segment_label
        assert f"{name} detected: {finding.volume_ml:.2f} mL" in comment.TextValue


def _colour_pixels(image: np.ndarray, rgb: tuple[int, int, int]) -> np.ndarray:
    return np.all(image == np.asarray(rgb, dtype=image.dtype), axis=-1)


def test_overlay_outlines_each_subtype_in_its_colour_with_a_legend(head, with_any, tmp_path):
    layout = OverlayLayout()
    keys = key_slice_indices(with_any, 5)
    # Every subtype's largest slice is a key slice (five subtypes, five images).
    for finding in with_any.findings[1:]:
        areas = finding.mask.reshape(len(finding.mask), -1).sum(axis=1)
        assert int(np.argmax(areas)) in keys, finding.label
    images = build_overlay_series(
        head.datasets, head.volume.hu, with_any, equipment=EQUIPMENT, max_key_slices=5,
        layout=layout,
    )  # fmt: skip
    assert len(images) == len(keys) + 1
    rows = int(head.datasets[0].Rows) * layout.scale
    seen = {label: 0 for label in ICH_SUBTYPES}
    legend_rows = len(with_any.findings) + 1  # findings and the caption
    for number, image in enumerate(images[:-1]):
        back = pydicom.dcmread(_save(image, tmp_path / f"sc{number}.dcm"))
        pixels = back.pixel_array
        assert pixels.shape[0] == (
            layout.banner_height_px + rows + layout.legend_row_px * legend_rows
            + layout.legend_row_px // 2
        )  # fmt: skip
        slice_part = pixels[layout.banner_height_px : layout.banner_height_px + rows]
        legend = pixels[layout.banner_height_px + rows :]
        for label in ICH_SUBTYPES:
            rgb = node_codes.finding_codes(label).recommended_display_rgb
            assert _colour_pixels(legend, rgb).sum() > 100, label  # the legend swatch
            seen[label] += int(_colour_pixels(slice_part, rgb).sum())
        for finding in with_any.findings:
            name = node_codes.finding_codes(finding.label).segment_label
            assert f"{name}" in back.ImageComments
            assert f"{finding.volume_ml:.2f} mL" in back.ImageComments
    assert all(count > 50 for count in seen.values()), seen  # every outline is drawn
    summary = pydicom.dcmread(_save(images[-1], tmp_path / "summary.dcm"))
    assert summary.pixel_array.shape[1] == int(head.datasets[0].Columns) * layout.scale
    for label in ICH_SUBTYPES:
        rgb = node_codes.finding_codes(label).recommended_display_rgb
        assert _colour_pixels(summary.pixel_array, rgb).sum() > 100, label  # table swatch


def test_every_profile_builds_the_five_subtypes(head, subtypes, tmp_path):
    profiles = {
        "pacs": ResultProfile(),
        "labelmap": ResultProfile(seg_type="LABELMAP"),
        "viewer": ResultProfile(send_seg=False, send_sr=False, send_overlay=True),
    }
    objects = build_results_for_profiles(
        head.datasets, subtypes, equipment=EQUIPMENT, profiles=profiles, hu=head.volume.hu,
        max_key_slices=5,
    )  # fmt: skip
    kinds = sorted(o.kind for o in objects)
    assert kinds == ["SC"] * 6 + ["SEG", "SEG", "SR", "SR"]
    for number, built in enumerate(o for o in objects if o.kind == "SR"):
        labelmap = "labelmap" in built.destinations
        path = _save(
            built.dataset,
            tmp_path / f"sr{number}.dcm",
            allowed_errors=len(subtypes.findings) if labelmap else 0,
        )
        report = validate_result_file(path)
        assert all(LABEL_MAP_REFERENCE_FALSE_POSITIVES[0].matches(m) for m in report.allowed_errors)
        groups = hd.sr.srread(path).content.get_volumetric_roi_measurement_groups()
        assert [g.tracking_uid for g in groups] == [f.tracking_uid for f in subtypes.findings]


def test_absent_subtypes_are_reported_absent(head, subtypes, tmp_path):
    empty = np.zeros(head.volume.shape, dtype=bool)
    findings = [
        subtypes.findings[0],
        *(
            dataclasses.replace(f, present=False, volume_ml=0.0, mask=empty, laterality=None)
            for f in subtypes.findings[1:]
        ),
    ]
    result = dataclasses.replace(subtypes, findings=findings)
    (seg,) = build_segmentations(head.datasets, result, equipment=EQUIPMENT)
    sr = build_measurement_report(head.datasets, seg, result, equipment=EQUIPMENT)
    back = hd.sr.srread(_save(sr, tmp_path / "sr.dcm"))
    (container,) = [
        item
        for item in back.ContentSequence
        if item.ConceptNameCodeSequence[0].CodeValue == node_codes.QUALITATIVE_EVALUATIONS.value
    ]
    values = [
        i.ConceptCodeSequence[0].CodeValue
        for i in container.ContentSequence
        if i.ValueType == "CODE"
    ]
    assert values == [node_codes.PRESENT.value] + [node_codes.ABSENT.value] * 4
    (comment,) = [i for i in container.ContentSequence if i.ValueType == "TEXT"]
    assert comment.TextValue.startswith("Epidural hemorrhage detected:")
    assert "No subdural hemorrhage detected." in comment.TextValue
