"""Every result object type, built from the real GE head, checked by dciodvfy and read back.

SEG BINARY and LABELMAP (uncompressed, JPEG 2000 Lossless, RLE Lossless; empty
frames kept or omitted; split at a frame limit), SR positive, negative and
"not analysable", SC overlay; per-destination profiles; the new coded
concepts; and the node's readers and validators on the dcmqi and highdicom
example objects.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydantic import ValidationError
from pydicom.sr.codedict import codes as dicom_codes
from pydicom.uid import JPEG2000Lossless, RLELossless

from dicom_node.errors import ResultBuildError
from dicom_node.pipelines.base import AlgorithmIdentity, PipelineResult, SegmentFinding
from dicom_node.results import (
    EquipmentIdentity,
    build_measurement_report,
    build_not_analysable_report,
    build_not_analysable_results,
    build_overlay_series,
    build_results_for_profiles,
    build_segmentations,
    validate_result_file,
)
from dicom_node.results import codes as node_codes
from dicom_node.results.profiles import ResultProfile
from dicom_node.results.sc import BANNER_RGB, BANNER_TEXT_RGB, OverlayLayout
from dicom_node.results.seg import with_tracking
from dicom_node.results.sr import described_segments
from dicom_node.results.validate import LABEL_MAP_REFERENCE_FALSE_POSITIVES
from dicom_node.series.volume import load_ct_volume, read_datasets

SHARED_DATA = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()
EXAMPLES = SHARED_DATA / "seg-sr-examples"

ALGORITHM = AlgorithmIdentity(name="ich-test", version="0.0.1", family="artificial intelligence")
EQUIPMENT = EquipmentIdentity(device_serial_number="DICOM_NODE_TEST")
ICH = node_codes.INTRACRANIAL_HEMORRHAGE


def _content_items(items, name):
    """Every content item at any depth whose concept name has the given code value."""
    found = []
    for item in items:
        concept = item.ConceptNameCodeSequence[0] if "ConceptNameCodeSequence" in item else None
        if concept is not None and concept.CodeValue == name.value:
            found.append(item)
        found += _content_items(item.get("ContentSequence", []), name)
    return found


@pytest.fixture(scope="module")
def head(head_ct_dir):
    """The GE head: datasets with pixels in slice order, and its HU volume."""
    volume = load_ct_volume(read_datasets(sorted(head_ct_dir.glob("*.dcm"))))
    datasets = read_datasets(sorted(head_ct_dir.glob("*.dcm")))
    by_uid = {str(ds.SOPInstanceUID): ds for ds in datasets}
    return SimpleNamespace(
        volume=volume, datasets=[by_uid[uid] for uid in volume.sop_instance_uids]
    )


@pytest.fixture(scope="module")
def positive(head) -> PipelineResult:
    """Two findings: a left intracranial bleed (a ball) and a small intraventricular one."""
    shape = head.volume.shape
    rr, cc = np.mgrid[0 : shape[1], 0 : shape[2]]
    ich = np.zeros(shape, dtype=bool)
    for k, radius in ((15, 18), (16, 24), (17, 20)):
        ich[k] = (rr - 300) ** 2 + (cc - 330) ** 2 <= radius**2
    ivh = np.zeros(shape, dtype=bool)
    ivh[16, 240:250, 250:262] = True
    volume_ml = head.volume.mask_volume_ml(ich)
    findings = [
        SegmentFinding("intracranial hemorrhage", True, volume_ml, ich, 0.87, laterality="left"),
        SegmentFinding(
            "intraventricular hemorrhage", True, head.volume.mask_volume_ml(ivh), ivh, None
        ),
    ]
    return with_tracking(PipelineResult("ich", ALGORITHM, findings))


@pytest.fixture(scope="module")
def negative(head) -> PipelineResult:
    mask = np.zeros(head.volume.shape, dtype=bool)
    return PipelineResult(
        "ich", ALGORITHM, [SegmentFinding("intracranial hemorrhage", False, 0.0, mask)]
    )


def _save(dataset, path: Path) -> Path:
    dataset.save_as(path, enforce_file_format=True)
    report = validate_result_file(path)
    assert report.errors == (), [m.line for m in report.errors]
    return path


# --- SEG ----------------------------------------------------------------------------


SEG_ENCODINGS = [
    ("BINARY", pydicom.uid.ExplicitVRLittleEndian, False),
    ("BINARY", JPEG2000Lossless, True),
    ("LABELMAP", RLELossless, False),
    ("LABELMAP", JPEG2000Lossless, True),
]


@pytest.mark.parametrize(("seg_type", "syntax", "omit"), SEG_ENCODINGS)
def test_seg_encodings_pass_dciodvfy_and_round_trip(
    head, positive, tmp_path, seg_type, syntax, omit
):
    (seg,) = build_segmentations(
        head.datasets,
        positive,
        equipment=EQUIPMENT,
        segmentation_type=seg_type,
        transfer_syntax_uid=syntax,
        omit_empty_frames=omit,
    )
    path = _save(seg, tmp_path / "seg.dcm")
    back = hd.seg.segread(path)
    assert back.file_meta.TransferSyntaxUID == syntax
    assert back.SegmentationType == seg_type
    expected_class = (
        "1.2.840.10008.5.1.4.1.1.66.7"
        if seg_type == "LABELMAP"
        else ("1.2.840.10008.5.1.4.1.1.66.4")
    )
    assert back.SOPClassUID == expected_class
    occupied = int((positive.findings[0].mask | positive.findings[1].mask).any(axis=(1, 2)).sum())
    if seg_type == "LABELMAP":
        assert int(back.NumberOfFrames) == (occupied if omit else 28)
    else:
        per_segment = sum(int(f.mask.any(axis=(1, 2)).sum()) for f in positive.findings)
        assert int(back.NumberOfFrames) == (per_segment if omit else 56)
    pixels = back.get_pixels_by_source_instance(
        [ds.SOPInstanceUID for ds in head.datasets],
        segment_numbers=[1, 2],
        combine_segments=False,
    )
    np.testing.assert_array_equal(
        pixels.astype(bool), np.stack([f.mask for f in positive.findings], -1)
    )
    # Referenced series, per-frame source references.
    (series_item,) = back.ReferencedSeriesSequence
    assert series_item.SeriesInstanceUID == head.datasets[0].SeriesInstanceUID
    frame_refs = {
        source.ReferencedSOPInstanceUID
        for frame in back.PerFrameFunctionalGroupsSequence
        for derivation in frame.DerivationImageSequence
        for source in derivation.SourceImageSequence
    }
    assert frame_refs <= {ds.SOPInstanceUID for ds in head.datasets}


def test_segment_descriptions_carry_codes_tracking_colour_algorithm_and_laterality(head, positive):
    (seg,) = build_segmentations(head.datasets, positive, equipment=EQUIPMENT)
    ich, ivh = described_segments(seg)
    assert ich.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert ich.SegmentedPropertyTypeCodeSequence[0].CodeValue == "50960005"
    region = ich.AnatomicRegionSequence[0]
    assert region.CodeValue == "1101003"
    assert region.AnatomicRegionModifierSequence[0].CodeValue == "7771000"  # Left, CID 244
    assert ivh.AnatomicRegionSequence[0].CodeValue == "35764002"  # Brain ventricle
    assert "AnatomicRegionModifierSequence" not in ivh.AnatomicRegionSequence[0]
    assert (ich.TrackingID, ich.TrackingUID) == (
        positive.findings[0].tracking_id,
        positive.findings[0].tracking_uid,
    )
    assert len(ich.RecommendedDisplayCIELabValue) == 3
    algorithm = ich.SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("ich-test", "0.0.1")
    contributing = [
        item
        for item in seg.ContributingEquipmentSequence
        if item.PurposeOfReferenceCodeSequence[0].CodeValue == "109102"
    ]
    assert "ich-test" in [c.ManufacturerModelName for c in contributing]  # and highdicom


def test_label_map_allow_list_does_not_hide_real_defects(head, positive, tmp_path):
    (seg,) = build_segmentations(
        head.datasets, positive, equipment=EQUIPMENT, segmentation_type="LABELMAP"
    )
    del seg.ContentLabel  # Type 1 in the Segmentation Image Module
    seg.save_as(tmp_path / "broken.dcm", enforce_file_format=True)
    report = validate_result_file(tmp_path / "broken.dcm")
    assert any("ContentLabel" in m.text for m in report.errors), [m.line for m in report.errors]


def test_seg_split_at_max_frames_for_weasis(head, positive, tmp_path):
    segs = build_segmentations(head.datasets, positive, equipment=EQUIPMENT, max_frames=20)
    assert [int(s.NumberOfFrames) for s in segs] == [20, 20, 16]
    assert len({s.SeriesInstanceUID for s in segs}) == 1
    assert [int(s.InstanceNumber) for s in segs] == [1, 2, 3]
    assert len({s.SOPInstanceUID for s in segs}) == 3
    uids = [ds.SOPInstanceUID for ds in head.datasets]
    union = np.zeros((28, 512, 512, 2), dtype=bool)
    for number, seg in enumerate(segs):
        back = hd.seg.segread(_save(seg, tmp_path / f"seg{number}.dcm"))
        mine = [
            u
            for u in uids
            if u
            in {
                r.ReferencedSOPInstanceUID
                for r in back.ReferencedSeriesSequence[0].ReferencedInstanceSequence
            }
        ]
        pixels = back.get_pixels_by_source_instance(mine, segment_numbers=[1, 2])
        union[[uids.index(u) for u in mine]] |= pixels.astype(bool)
        assert described_segments(back)[0].TrackingUID == positive.findings[0].tracking_uid
    np.testing.assert_array_equal(union, np.stack([f.mask for f in positive.findings], -1))
    with pytest.raises(ResultBuildError, match="max_frames"):
        build_segmentations(head.datasets, positive, equipment=EQUIPMENT, max_frames=1)


def test_labelmap_refuses_overlapping_findings(head, positive):
    overlapping = dataclasses.replace(
        positive,
        findings=[
            positive.findings[0],
            dataclasses.replace(positive.findings[1], mask=positive.findings[0].mask),
        ],
    )
    with pytest.raises(ResultBuildError, match="overlap"):
        build_segmentations(
            head.datasets, overlapping, equipment=EQUIPMENT, segmentation_type="LABELMAP"
        )


# --- SR -----------------------------------------------------------------------------


def test_sr_positive_has_tid1411_groups_and_a_present_statement(head, positive, tmp_path):
    (seg,) = build_segmentations(head.datasets, positive, equipment=EQUIPMENT)
    sr = build_measurement_report(head.datasets, seg, positive, equipment=EQUIPMENT)
    back = hd.sr.srread(_save(sr, tmp_path / "sr.dcm"))
    groups = back.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == 2
    ich = groups[0]
    assert ich.tracking_uid == positive.findings[0].tracking_uid
    assert ich.tracking_identifier == positive.findings[0].tracking_id
    assert ich.finding_type == ICH
    (site,) = ich.finding_sites
    assert site.value == node_codes.INTRACRANIAL
    assert site.laterality == node_codes.LEFT
    volume = [m for m in ich.get_measurements() if m.name == node_codes.VOLUME][0]
    assert volume.unit == node_codes.MILLILITER
    assert volume.value == pytest.approx(positive.findings[0].volume_ml)
    probability = [m for m in ich.get_measurements() if m.name == node_codes.PROBABILITY][0]
    assert probability.value == pytest.approx(0.87)
    assert ich.referenced_segment[0].referenced_segment_numbers == [1]
    assert ich.referenced_segment[0].referenced_sop_instance_uid == seg.SOPInstanceUID
    assert groups[1].finding_type == node_codes.HEMORRHAGE  # IVH, post-coordinated
    assert groups[1].finding_sites[0].value == node_codes.BRAIN_VENTRICLE
    (container,) = _content_items(back.ContentSequence, node_codes.QUALITATIVE_EVALUATIONS)
    statements = {
        (i.ConceptNameCodeSequence[0].CodeValue, i.ConceptCodeSequence[0].CodeValue)
        for i in container.ContentSequence
        if i.ValueType == "CODE"
    }
    assert (ICH.value, node_codes.PRESENT.value) in statements
    (comment,) = _content_items(container.ContentSequence, node_codes.COMMENT)
    assert "Intracranial hemorrhage detected:" in comment.TextValue
    assert "not for diagnostic use" in comment.TextValue


def test_sr_negative_says_no_hemorrhage_detected(head, negative, tmp_path):
    (seg,) = build_segmentations(head.datasets, negative, equipment=EQUIPMENT)
    sr = build_measurement_report(head.datasets, seg, negative, equipment=EQUIPMENT)
    back = hd.sr.srread(_save(sr, tmp_path / "sr.dcm"))
    (group,) = back.content.get_volumetric_roi_measurement_groups()
    presence = [q.value for q in group.get_qualitative_evaluations() if q.name == ICH]
    assert presence == [node_codes.ABSENT]
    assert [m.value for m in group.get_measurements()] == [0.0]
    (container,) = _content_items(back.ContentSequence, node_codes.QUALITATIVE_EVALUATIONS)
    codes_ = [
        i.ConceptCodeSequence[0].CodeValue
        for i in container.ContentSequence
        if i.ValueType == "CODE"
    ]
    assert codes_ == [node_codes.ABSENT.value]
    (comment,) = _content_items(container.ContentSequence, node_codes.COMMENT)
    assert comment.TextValue.startswith("No intracranial hemorrhage detected.")


def test_sr_not_analysable_has_reason_and_no_seg(head, tmp_path):
    reason = "missing slices: a gap of 14.0 mm where 7.0 mm is expected"
    sr = build_not_analysable_report(
        head.datasets,
        pipeline="ich",
        algorithm=ALGORITHM,
        finding_labels=["intracranial hemorrhage"],
        reason=reason,
        equipment=EQUIPMENT,
    )
    back = hd.sr.srread(_save(sr, tmp_path / "sr.dcm"))
    assert back.content.get_volumetric_roi_measurement_groups() == []
    assert back.StudyInstanceUID == head.datasets[0].StudyInstanceUID
    (container,) = _content_items(back.ContentSequence, node_codes.QUALITATIVE_EVALUATIONS)
    (statement,) = [i for i in container.ContentSequence if i.ValueType == "CODE"]
    assert statement.ConceptNameCodeSequence[0].CodeValue == ICH.value
    assert statement.ConceptCodeSequence[0].CodeValue == node_codes.NOT_EVALUATED.value
    (comment,) = _content_items(container.ContentSequence, node_codes.COMMENT)
    assert comment.TextValue.startswith(f"Not analysable: {reason}.")
    evidence = {
        ref.ReferencedSOPInstanceUID
        for study in back.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }
    assert evidence == {ds.SOPInstanceUID for ds in head.datasets}
    with pytest.raises(ResultBuildError, match="reason"):
        build_not_analysable_report(
            head.datasets, pipeline="ich", algorithm=ALGORITHM,
            finding_labels=["intracranial hemorrhage"], reason="  ", equipment=EQUIPMENT,
        )  # fmt: skip


def test_sr_referencing_a_labelmap_seg(head, positive, tmp_path):
    segs = build_segmentations(
        head.datasets, positive, equipment=EQUIPMENT, segmentation_type="LABELMAP"
    )
    sr = build_measurement_report(head.datasets, segs, positive, equipment=EQUIPMENT)
    path = _save(sr, tmp_path / "sr.dcm")
    report = validate_result_file(path)
    # Only the documented dciodvfy limitation is accepted, once per Referenced Segment.
    assert len(report.allowed_errors) == 2
    assert all(LABEL_MAP_REFERENCE_FALSE_POSITIVES[0].matches(m) for m in report.allowed_errors)
    groups = hd.sr.srread(path).content.get_volumetric_roi_measurement_groups()
    assert groups[0].referenced_segment[0].referenced_sop_class_uid == (
        "1.2.840.10008.5.1.4.1.1.66.7"
    )


# --- SC overlay ---------------------------------------------------------------------


def test_overlay_has_banner_outline_legend_and_passes_dciodvfy(head, positive, tmp_path):
    layout = OverlayLayout()
    images = build_overlay_series(
        head.datasets, head.volume.hu, positive, equipment=EQUIPMENT, max_key_slices=2,
        layout=layout,
    )  # fmt: skip
    assert len(images) == 3  # two key slices and the summary
    assert [int(i.InstanceNumber) for i in images] == [1, 2, 3]
    for number, image in enumerate(images):
        back = pydicom.dcmread(_save(image, tmp_path / f"sc{number}.dcm"))
        assert back.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
        assert back.StudyInstanceUID == head.datasets[0].StudyInstanceUID
        assert back.BurnedInAnnotation == "YES"
        assert "not for diagnostic use" in back.SeriesDescription
        rgb = back.pixel_array
        banner = rgb[: layout.banner_height_px]
        is_banner = np.all(banner == BANNER_RGB, axis=-1)
        is_text = np.all(banner == BANNER_TEXT_RGB, axis=-1)
        assert is_banner.mean() > 0.7  # a solid strip ...
        assert is_text.sum() > 500  # ... with white lettering
    key = pydicom.dcmread(tmp_path / "sc0.dcm")
    index = [ds.SOPInstanceUID for ds in head.datasets].index(
        key.SourceImageSequence[0].ReferencedSOPInstanceUID
    )
    assert index in (15, 16, 17)
    image = key.pixel_array[layout.banner_height_px : layout.banner_height_px + 1024]
    red = np.all(
        image == node_codes.finding_codes("intracranial hemorrhage").recommended_display_rgb,
        axis=-1,
    )
    mask = np.kron(positive.findings[0].mask[index], np.ones((2, 2), dtype=bool))
    from scipy import ndimage

    edge = mask & ~ndimage.binary_erosion(mask, iterations=3)
    near_edge = ndimage.binary_dilation(edge, iterations=3)
    assert red.sum() > 100
    assert red[near_edge].sum() / red.sum() > 0.95  # drawn along the outline ...
    interior = ndimage.binary_erosion(mask, iterations=8)
    assert red[interior].sum() == 0  # ... not filled
    summary = pydicom.dcmread(tmp_path / "sc2.dcm")
    assert "SourceImageSequence" not in summary
    assert summary.PatientOrientation == ""


# --- profiles ---------------------------------------------------------------------


def test_each_destination_gets_exactly_what_its_profile_names(head, positive):
    profiles = {
        "pacs": ResultProfile(),
        "weasis": ResultProfile(seg_type="LABELMAP", max_frames=10, send_sr=True),
        "viewer": ResultProfile(send_seg=False, send_sr=False, send_overlay=True),
        "archive": ResultProfile(send_overlay=True),
    }
    objects = build_results_for_profiles(
        head.datasets, positive, equipment=EQUIPMENT, profiles=profiles, hu=head.volume.hu,
        max_key_slices=1,
    )  # fmt: skip
    received = {
        name: sorted(o.kind for o in objects if name in o.destinations) for name in profiles
    }
    assert received == {
        "pacs": ["SEG", "SR"],
        "weasis": ["SEG", "SEG", "SEG", "SR"],
        "viewer": ["SC", "SC"],
        "archive": ["SC", "SC", "SEG", "SR"],
    }
    weasis_segs = [o.dataset for o in objects if "weasis" in o.destinations and o.kind == "SEG"]
    assert all(int(s.NumberOfFrames) <= 10 for s in weasis_segs)
    assert all(s.SegmentationType == "LABELMAP" for s in weasis_segs)
    # pacs and archive share one BINARY SEG; one finding keeps one Tracking UID everywhere.
    binary = [o for o in objects if o.kind == "SEG" and "pacs" in o.destinations]
    assert len(binary) == 1 and "archive" in binary[0].destinations
    tracking = {described_segments(o.dataset)[0].TrackingUID for o in objects if o.kind == "SEG"}
    assert len(tracking) == 1
    for report in (o.dataset for o in objects if o.kind == "SR"):
        content = hd.sr.Comprehensive3DSR.from_dataset(report).content
        referenced = content.get_volumetric_roi_measurement_groups()[0].referenced_segment
        seg_uids = {
            o.dataset.SOPInstanceUID
            for o in objects
            if o.kind == "SEG"
            and set(o.destinations)
            & set(next(x.destinations for x in objects if x.dataset is report))
        }
        assert referenced[0].referenced_sop_instance_uid in seg_uids
    not_analysable = build_not_analysable_results(
        head.datasets, pipeline="ich", algorithm=ALGORITHM,
        finding_labels=["intracranial hemorrhage"], reason="too few slices: 3",
        equipment=EQUIPMENT, profiles=profiles,
    )  # fmt: skip
    assert {o.kind: o.destinations for o in not_analysable} == {
        "SR": ("pacs", "weasis", "archive"),
        "SC": ("viewer", "archive"),
    }


def test_profile_validation():
    with pytest.raises(ValidationError, match="rle-lossless"):
        ResultProfile(seg_type="BINARY", compression="rle-lossless")
    with pytest.raises(ValidationError, match="sends nothing"):
        ResultProfile(send_seg=False, send_sr=False)
    assert ResultProfile(seg_type="LABELMAP", compression="rle-lossless").seg_encoding.key == (
        "LABELMAP/RLELossless/nomax/keep"
    )


# --- codes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "cid", "keyword"),
    [
        (node_codes.LEFT, "cid244", "Left"),
        (node_codes.RIGHT, "cid244", "Right"),
        (node_codes.BILATERAL, "cid244", "Bilateral"),
        (node_codes.LEFT, "cid2", "Left"),
        (node_codes.BRAIN_VENTRICLE, "cid7151", "BrainVentricle"),
        (node_codes.INTERNAL_CAROTID_ARTERY, "cid7151", "InternalCarotidArtery"),
        (node_codes.TERMINAL_INTERNAL_CAROTID_ARTERY, "cid12105", "TerminalInternalCarotidArtery"),
        (node_codes.MIDDLE_CEREBRAL_ARTERY, "cid12105", "MiddleCerebralArtery"),
        (node_codes.MIDDLE_CEREBRAL_ARTERY_M1, "cid12105", "MiddleCerebralArteryM1Segment"),
        (node_codes.MIDDLE_CEREBRAL_ARTERY_M2, "cid12105", "MiddleCerebralArteryM2Segment"),
        (node_codes.ANTERIOR_CEREBRAL_ARTERY, "cid12105", "AnteriorCerebralArtery"),
        (node_codes.BASILAR_ARTERY, "cid7151", "BasilarArtery"),
        (node_codes.POSTERIOR_CEREBRAL_ARTERY, "cid12105", "PosteriorCerebralArtery"),
        (node_codes.OCCLUSION, "cid3810", "Occlusion"),
        (node_codes.THROMBUS, "cid7151", "Thrombus"),
        (node_codes.NOT_EVALUATED, "cid3703", "NotEvaluated"),
        (node_codes.COMMENT, "cid12101", "Comment"),
        (
            node_codes.SOURCE_IMAGE_FOR_PROCESSING,
            "cid7202",
            "SourceImageForImageProcessingOperation",
        ),
        (node_codes.LATERALITY, "cid210", "Laterality"),
    ],
)
def test_new_codes_are_the_context_group_members(code, cid, keyword):
    expected = getattr(getattr(dicom_codes, cid), keyword)
    assert (code.value, code.scheme_designator) == (expected.value, expected.scheme_designator)


def test_hemorrhage_subtypes_lateralities_and_sites():
    assert node_codes.finding_codes("Subarachnoid hemorrhage").finding_type.value == "21454007"
    assert node_codes.finding_codes("intraparenchymal hemorrhage").finding_type.value == "274100004"
    ivh = node_codes.finding_codes("intraventricular hemorrhage")
    assert (ivh.finding_type, ivh.finding_site) == (
        node_codes.HEMORRHAGE,
        node_codes.BRAIN_VENTRICLE,
    )
    sdh = node_codes.finding_codes("subdural hemorrhage")
    assert (sdh.finding_type.value, sdh.finding_site) == ("35486000", node_codes.INTRACRANIAL)
    edh = node_codes.finding_codes("epidural hemorrhage")  # post-coordinated, see codes.py
    assert (edh.finding_type, edh.finding_site) == (
        node_codes.HEMORRHAGE,
        node_codes.INTRACRANIAL,
    )
    with pytest.raises(ResultBuildError, match="no coded concept"):
        node_codes.finding_codes("extra-axial collection")
    assert node_codes.laterality_code(" Bilateral ") == node_codes.BILATERAL
    assert node_codes.anatomic_site_code("Basilar artery") == node_codes.BASILAR_ARTERY
    with pytest.raises(ResultBuildError):
        node_codes.laterality_code("middle")


# --- interoperability: objects made by dcmqi and highdicom ---------------------------


EXAMPLE_OBJECTS = sorted(
    p
    for p in EXAMPLES.rglob("*")
    if p.is_file()
    and p.suffix in {".dcm", ".seg"}
    and "image" not in p.parts
    and p.parent.name not in {"ct-3slice"}
    and p.name != "ct_image.dcm"
)


@pytest.mark.needs_shared_data
@pytest.mark.parametrize("path", EXAMPLE_OBJECTS, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_readers_and_validators_on_example_objects(path: Path):
    dataset = pydicom.dcmread(path, stop_before_pixels=True)
    report = validate_result_file(path)  # runs without raising; the verdict is dciodvfy's
    assert report.iod is not None or report.errors
    if dataset.Modality == "SEG":
        seg = hd.seg.segread(path)
        assert described_segments(seg)
        assert seg.pixel_array.size  # the frames decode
    elif dataset.Modality == "SR":
        sr = hd.sr.srread(path)
        assert len(sr.ContentSequence) > 0
        if isinstance(sr.content, hd.sr.MeasurementReport):
            for group in sr.content.get_volumetric_roi_measurement_groups():
                assert group.tracking_uid


def test_committed_overlay_example_shows_banner_and_outline():
    import cv2

    docs = Path(__file__).resolve().parents[2] / "docs"
    image = cv2.cvtColor(cv2.imread(str(docs / "overlay-example.png")), cv2.COLOR_BGR2RGB)
    banner = image[: OverlayLayout().banner_height_px]
    assert np.all(banner == BANNER_RGB, axis=-1).mean() > 0.7
    assert np.all(banner == BANNER_TEXT_RGB, axis=-1).sum() > 500
    red = np.all(image == (255, 0, 0), axis=-1)
    assert red[OverlayLayout().banner_height_px :].sum() > 300  # the outline (and legend swatch)


def test_seg_sr_and_overlay_agree_on_patient_and_study_for_dcentvfy(head, positive, tmp_path):
    """dcentvfy checks that the objects of one study repeat the same patient and study
    attributes; the SEG also carries the Type 2 Content Creator's Name."""
    import subprocess

    (seg,) = build_segmentations(head.datasets, positive, equipment=EQUIPMENT)
    sr = build_measurement_report(head.datasets, seg, positive, equipment=EQUIPMENT)
    overlay = build_overlay_series(
        head.datasets, head.volume.hu, positive, equipment=EQUIPMENT, max_key_slices=1
    )
    paths = [_save(seg, tmp_path / "seg.dcm"), _save(sr, tmp_path / "sr.dcm")]
    paths += [_save(image, tmp_path / f"sc{n}.dcm") for n, image in enumerate(overlay)]
    assert "ContentCreatorName" in pydicom.dcmread(paths[0], stop_before_pixels=True)
    for keyword in ("StudyDescription", "PatientIdentityRemoved", "DeidentificationMethod"):
        values = {
            str(pydicom.dcmread(p, stop_before_pixels=True).get(keyword, "<absent>")) for p in paths
        }
        assert len(values) == 1, (keyword, values)
    run = subprocess.run(
        ["dcentvfy", *map(str, paths)], capture_output=True, text=True, timeout=120, check=False
    )
    report = (run.stdout + run.stderr).splitlines()
    # dicom3tools files Accession Number under the Study IE for SR and under Series for
    # images: "Different information entities" is about its tables, not the values.
    differ = [
        line for line in report if line.strip() and "Different information entities" not in line
    ]
    assert differ == [], differ
