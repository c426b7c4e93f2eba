"""Results layer: SEG and TID 1500 SR from the real GE head CT, dciodvfy, read back.

The GE head (28 slices, 18.5 deg gantry tilt, uneven slice steps, no
PatientBirthDate/PatientSex, empty De-identification Method) is the input;
every emitted object must pass dciodvfy with zero errors and read back with
highdicom to the values that went in.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import re
from pathlib import Path
from types import SimpleNamespace

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes as dicom_codes
from pydicom.sr.coding import Code

from dicom_node.errors import InvalidUIDError, ResultBuildError
from dicom_node.pipelines.base import AlgorithmIdentity, PipelineResult, SegmentFinding
from dicom_node.results import (
    EquipmentIdentity,
    build_measurement_report,
    build_results,
    build_segmentation,
    run_dciodvfy,
)
from dicom_node.results import codes as node_codes
from dicom_node.results.validate import (
    LABEL_MAP_SEGMENTATION_FALSE_POSITIVES,
    parse_dciodvfy_output,
)

SHARED_DATA = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()
GE_HEAD = SHARED_DATA / "head-ct-ge"
EXAMPLES = SHARED_DATA / "seg-sr-examples"

ALGORITHM = AlgorithmIdentity(name="ich-test", version="0.0.1", family="artificial intelligence")
EQUIPMENT = EquipmentIdentity(device_serial_number="DICOM_NODE_TEST")

# Warnings dciodvfy still gives on our objects, each caused by the source study:
# its Study Date, Study Time and Study ID are empty (Type 2, copied as they are),
# and its Patient's Name "REMOVED" has a single component.
EXPECTED_WARNINGS = (
    re.compile(r"needed to build DICOMDIR - Study (Date|Time|ID)$"),
    re.compile(r"\(0x0010,0x0010\) PN Patient's Name .* Retired Person Name form$"),
)


def _position_along_normal(dataset: pydicom.Dataset) -> float:
    orientation = np.asarray(dataset.ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    return float(normal @ np.asarray(dataset.ImagePositionPatient, dtype=float))


@pytest.fixture(scope="module")
def ge_head(head_ct_dir) -> list[pydicom.Dataset]:
    """Headers of the GE head CT, in slice order along the image normal."""
    datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in head_ct_dir.glob("*.dcm")]
    assert len(datasets) == 28
    return sorted(datasets, key=_position_along_normal)


def _ball(ge_head: list[pydicom.Dataset]) -> tuple[np.ndarray, float]:
    """A ball of radius 9 mm in physical slice distance; mask and its volume in mL.

    The volume integrates each slice's voxel count with that slice's own slab
    thickness (half the distance to its neighbours along the normal).
    """
    positions = np.array([_position_along_normal(ds) for ds in ge_head])
    rows, columns = int(ge_head[0].Rows), int(ge_head[0].Columns)
    row_mm, column_mm = (float(v) for v in ge_head[0].PixelSpacing)
    mask = np.zeros((len(ge_head), rows, columns), dtype=bool)
    centre_slice, radius_mm = 11, 9.0
    rr, cc = np.mgrid[0:rows, 0:columns]
    for k, position in enumerate(positions):
        dz = position - positions[centre_slice]
        if abs(dz) >= radius_mm:
            continue
        r_mm = np.sqrt(radius_mm**2 - dz**2)
        mask[k] = ((rr - 300) * row_mm) ** 2 + ((cc - 256) * column_mm) ** 2 <= r_mm**2
    slab = np.gradient(positions)
    volume_ml = float(sum(mask[k].sum() * row_mm * column_mm * slab[k] for k in range(len(slab))))
    return mask, volume_ml / 1000.0


CASES = ("present", "absent")


@pytest.fixture(scope="module", params=CASES)
def built(request, ge_head, tmp_path_factory) -> SimpleNamespace:
    """SEG and SR built for one case, written to files, checked by dciodvfy and read back."""
    if request.param == "present":
        mask, volume_ml = _ball(ge_head)
        assert mask.sum() > 0 and 1.0 < volume_ml < 5.0
        finding = SegmentFinding("intracranial hemorrhage", True, volume_ml, mask, 0.87)
    else:
        mask = np.zeros((28, 512, 512), dtype=bool)
        finding = SegmentFinding("intracranial hemorrhage", False, 0.0, mask, None)
    result = PipelineResult("ich", ALGORITHM, [finding])
    segmentation, report = build_results(ge_head, result, equipment=EQUIPMENT)
    directory = tmp_path_factory.mktemp(request.param)
    seg_path, sr_path = directory / "seg.dcm", directory / "sr.dcm"
    segmentation.save_as(seg_path)
    report.save_as(sr_path)
    return SimpleNamespace(
        case=request.param,
        finding=finding,
        result=result,
        seg_path=seg_path,
        sr_path=sr_path,
        seg_report=run_dciodvfy(seg_path),
        sr_report=run_dciodvfy(sr_path),
        seg=hd.seg.segread(seg_path),
        sr=hd.sr.srread(sr_path),
    )


# --- dciodvfy on our objects --------------------------------------------------


def test_seg_and_sr_pass_dciodvfy_without_errors(built):
    for report, iod in ((built.seg_report, "Segmentation"), (built.sr_report, "Comprehensive3DSR")):
        assert report.iod == iod
        assert report.errors == (), [m.line for m in report.errors]
        assert report.allowed_errors == ()
        unexplained = [
            m.line for m in report.warnings if not any(p.search(m.line) for p in EXPECTED_WARNINGS)
        ]
        assert unexplained == []


# --- SEG ----------------------------------------------------------------------


def test_seg_is_in_source_study_and_frame_of_reference(built, ge_head):
    seg = built.seg
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == ge_head[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == ge_head[0].FrameOfReferenceUID
    assert seg.SeriesInstanceUID != ge_head[0].SeriesInstanceUID
    assert seg.SeriesNumber == 9901
    assert seg.SeriesDescription == "AI ICH SEG (not for diagnostic use)"
    assert seg.ContentLabel == "ICH"
    # Type 2 attributes absent from the source are present and empty.
    assert "PatientBirthDate" in seg and seg.PatientBirthDate == ""
    assert "PatientSex" in seg and seg.PatientSex == ""


def test_seg_references_only_source_instances(built, ge_head):
    source_uids = {ds.SOPInstanceUID for ds in ge_head}
    (series_item,) = built.seg.ReferencedSeriesSequence
    assert series_item.SeriesInstanceUID == ge_head[0].SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in series_item.ReferencedInstanceSequence} == (
        source_uids
    )
    frame_refs = {
        source.ReferencedSOPInstanceUID
        for frame in built.seg.PerFrameFunctionalGroupsSequence
        for derivation in frame.DerivationImageSequence
        for source in derivation.SourceImageSequence
    }
    assert frame_refs == source_uids  # all frames are encoded in both cases


def test_seg_pixels_round_trip(built, ge_head):
    pixels = built.seg.get_pixels_by_source_instance(
        [ds.SOPInstanceUID for ds in ge_head], segment_numbers=[1]
    )
    assert pixels.shape == (28, 512, 512, 1)
    np.testing.assert_array_equal(pixels[..., 0].astype(bool), built.finding.mask)


def test_seg_segment_description_and_equipment(built):
    (segment,) = built.seg.SegmentSequence
    assert segment.SegmentNumber == 1
    assert segment.SegmentLabel == "Intracranial hemorrhage"
    assert segment.SegmentAlgorithmType == "AUTOMATIC"
    assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "50960005"
    assert segment.AnatomicRegionSequence[0].CodeValue == "1101003"
    assert segment.TrackingID == "ICH-1"
    assert pydicom.uid.UID(segment.TrackingUID).is_valid
    assert len(segment.RecommendedDisplayCIELabValue) == 3
    (algorithm,) = segment.SegmentationAlgorithmIdentificationSequence
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("ich-test", "0.0.1")
    assert algorithm.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"
    seg = built.seg
    assert (seg.Manufacturer, seg.ManufacturerModelName) == ("dicom-node project", "dicom-node")
    assert seg.DeviceSerialNumber == "DICOM_NODE_TEST"
    ours = [
        item
        for item in seg.ContributingEquipmentSequence
        if item.PurposeOfReferenceCodeSequence[0].CodeValue == "109102"
        and item.ManufacturerModelName == "ich-test"
    ]
    assert len(ours) == 1 and ours[0].SoftwareVersions == "0.0.1"


# --- SR -----------------------------------------------------------------------


def _group(built) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    (group,) = built.sr.content.get_volumetric_roi_measurement_groups()
    return group


def test_sr_is_in_source_study_with_evidence(built, ge_head):
    sr = built.sr
    assert isinstance(sr, hd.sr.Comprehensive3DSR)
    assert sr.StudyInstanceUID == ge_head[0].StudyInstanceUID
    assert sr.SeriesDescription == "AI ICH report (not for diagnostic use)"
    assert (sr.CompletionFlag, sr.VerificationFlag) == ("COMPLETE", "UNVERIFIED")
    evidence = {
        series.SeriesInstanceUID: {
            ref.ReferencedSOPInstanceUID for ref in series.ReferencedSOPSequence
        }
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
    }
    assert evidence[ge_head[0].SeriesInstanceUID] == {ds.SOPInstanceUID for ds in ge_head}
    assert evidence[built.seg.SeriesInstanceUID] == {built.seg.SOPInstanceUID}


def test_sr_volume_equals_input_volume(built):
    volumes = [m for m in _group(built).get_measurements() if m.name == node_codes.VOLUME]
    assert len(volumes) == 1
    assert volumes[0].value == pytest.approx(built.finding.volume_ml, rel=1e-9, abs=1e-12)
    assert volumes[0].unit == node_codes.MILLILITER
    if built.case == "absent":
        assert volumes[0].value == 0.0


def test_sr_references_the_seg_segment(built, ge_head):
    group = _group(built)
    reference = group.referenced_segment
    image_item = reference[0]
    assert image_item.referenced_sop_instance_uid == built.seg.SOPInstanceUID
    assert image_item.referenced_sop_class_uid == built.seg.SOPClassUID
    assert image_item.referenced_segment_numbers == [1]
    assert reference[1].value == ge_head[0].SeriesInstanceUID  # Source Series for Segmentation
    assert group.tracking_uid == built.seg.SegmentSequence[0].TrackingUID
    assert group.finding_type == node_codes.INTRACRANIAL_HEMORRHAGE
    assert group.finding_category == node_codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE
    assert [site.value for site in group.finding_sites] == [node_codes.INTRACRANIAL]


def test_sr_presence_evaluation(built):
    evaluations = [
        q
        for q in _group(built).get_qualitative_evaluations()
        if q.name == node_codes.INTRACRANIAL_HEMORRHAGE
    ]
    assert len(evaluations) == 1
    expected = node_codes.PRESENT if built.finding.present else node_codes.ABSENT
    assert evaluations[0].value == expected
    probabilities = [
        m for m in _group(built).get_measurements() if m.name == node_codes.PROBABILITY
    ]
    if built.finding.probability is None or not built.finding.present:
        assert probabilities == []
    else:
        assert probabilities[0].value == pytest.approx(built.finding.probability)


def test_sr_device_observer_and_procedure(built):
    sr = built.sr
    content = sr.ContentSequence
    names = {(item.ConceptNameCodeSequence[0].CodeValue, item.ValueType): item for item in content}
    procedure = names[("121058", "CODE")]  # Procedure reported
    assert procedure.ConceptCodeSequence[0].CodeValue == "24725-4"
    observer_type = names[("121005", "CODE")]
    assert observer_type.ConceptCodeSequence[0].CodeValue == "121007"  # Device
    assert names[("121012", "UIDREF")].UID == EQUIPMENT.device_observer_uid
    assert names[("121013", "TEXT")].TextValue == "ich-test"


# --- inputs are not modified; several segments ----------------------------------


def test_builders_leave_source_datasets_untouched(ge_head):
    before = [set(ds.keys()) for ds in ge_head]
    mask = np.zeros((28, 512, 512), dtype=bool)
    result = PipelineResult(
        "ich", ALGORITHM, [SegmentFinding("intracranial hemorrhage", False, 0.0, mask)]
    )
    build_results(ge_head, result, equipment=EQUIPMENT)
    assert [set(ds.keys()) for ds in ge_head] == before
    assert "PatientBirthDate" not in ge_head[0]
    assert ge_head[0].DeidentificationMethod == ""


def test_logs_carry_no_patient_name_or_id(ge_head, caplog):
    caplog.set_level(logging.DEBUG)
    mask, volume_ml = _ball(ge_head)
    result = PipelineResult(
        "ich", ALGORITHM, [SegmentFinding("intracranial hemorrhage", True, volume_ml, mask)]
    )
    build_results(ge_head, result, equipment=EQUIPMENT)
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("dicom_node"))
    assert "built SEG" in ours and "built SR" in ours
    assert str(ge_head[0].PatientName) not in ours
    assert str(ge_head[0].PatientID) not in ours


def test_two_segments_with_omitted_empty_frames(ge_head, tmp_path):
    ich, _ = _ball(ge_head)
    sah = np.zeros_like(ich)
    sah[20:22, 100:110, 250:260] = True
    findings = [
        SegmentFinding("intracranial hemorrhage", True, 1.0, ich),
        SegmentFinding("Subarachnoid Hemorrhage", True, 0.5, sah),
    ]
    result = PipelineResult("ich", ALGORITHM, findings)
    seg = build_segmentation(ge_head, result, equipment=EQUIPMENT, omit_empty_frames=True)
    sr = build_measurement_report(ge_head, seg, result, equipment=EQUIPMENT)
    assert int(seg.NumberOfFrames) == int(ich.any(axis=(1, 2)).sum() + 2)
    for name, dataset in (("seg.dcm", seg), ("sr.dcm", sr)):
        dataset.save_as(tmp_path / name)
        assert run_dciodvfy(tmp_path / name).errors == ()
    pixels = hd.seg.segread(tmp_path / "seg.dcm").get_pixels_by_source_instance(
        [ds.SOPInstanceUID for ds in ge_head], segment_numbers=[1, 2]
    )
    np.testing.assert_array_equal(pixels.astype(bool), np.stack([ich, sah], axis=-1))
    groups = hd.sr.srread(tmp_path / "sr.dcm").content.get_volumetric_roi_measurement_groups()
    assert [g.finding_type for g in groups] == [
        node_codes.INTRACRANIAL_HEMORRHAGE,
        node_codes.SUBARACHNOID_HEMORRHAGE,
    ]


# --- refusals -------------------------------------------------------------------


def _result(mask: np.ndarray, *, label="intracranial hemorrhage", volume_ml=0.0) -> PipelineResult:
    return PipelineResult("ich", ALGORITHM, [SegmentFinding(label, False, volume_ml, mask)])


def test_mask_not_on_source_grid_is_refused(ge_head):
    with pytest.raises(ResultBuildError, match="shape"):
        build_segmentation(ge_head, _result(np.zeros((27, 512, 512), bool)), equipment=EQUIPMENT)


def test_unknown_label_is_refused(ge_head):
    with pytest.raises(ResultBuildError, match="no coded concept"):
        build_segmentation(
            ge_head,
            _result(np.zeros((28, 512, 512), bool), label="extra-axial collection"),
            equipment=EQUIPMENT,
        )


def test_volume_of_empty_mask_must_be_zero(ge_head):
    result = _result(np.zeros((28, 512, 512), bool))
    seg = build_segmentation(ge_head, result, equipment=EQUIPMENT)
    bad = _result(np.zeros((28, 512, 512), bool), volume_ml=2.0)
    with pytest.raises(ResultBuildError, match="empty"):
        build_measurement_report(ge_head, seg, bad, equipment=EQUIPMENT)


def test_invalid_uid_is_refused(ge_head):
    with pytest.raises(InvalidUIDError):
        build_segmentation(
            ge_head,
            _result(np.zeros((28, 512, 512), bool)),
            equipment=EQUIPMENT,
            sop_instance_uid="1.2.3.abc",
        )


def test_images_of_two_series_are_refused(ge_head):
    other = copy.deepcopy(ge_head[-1])  # update() would share, and change, its elements
    other.SeriesInstanceUID = pydicom.uid.generate_uid()
    with pytest.raises(ResultBuildError, match="SeriesInstanceUID"):
        build_segmentation(
            [*ge_head[:-1], other], _result(np.zeros((28, 512, 512), bool)), equipment=EQUIPMENT
        )


def test_equipment_values_are_checked():
    with pytest.raises(ResultBuildError):
        EquipmentIdentity(manufacturer="x" * 65)
    assert EquipmentIdentity().device_observer_uid == EquipmentIdentity().device_observer_uid
    assert dataclasses.replace(EQUIPMENT, device_serial_number="OTHER").device_observer_uid != (
        EQUIPMENT.device_observer_uid
    )


# --- codes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "cid_attribute"),
    [
        (
            node_codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
            ("cid7150", "MorphologicallyAbnormalStructure"),
        ),
        (node_codes.HEMORRHAGE, ("cid7151", "Hemorrhage")),
        (node_codes.INTRACRANIAL, ("cid4", "Intracranial")),
        (node_codes.INTRACRANIAL, ("cid7151", "Intracranial")),
        (node_codes.BRAIN, ("cid4", "Brain")),
        (node_codes.SUBARACHNOID_SPACE, ("cid7151", "SubarachnoidSpace")),
        (node_codes.PRESENT, ("cid240", "Present")),
        (node_codes.ABSENT, ("cid240", "Absent")),
        (node_codes.VOLUME, ("cid7469", "Volume")),
        (node_codes.NO_UNITS, ("cid7181", "NoUnits")),
        (node_codes.ARTIFICIAL_INTELLIGENCE, ("cid7162", "ArtificialIntelligence")),
        (node_codes.MORPHOLOGICAL_OPERATIONS, ("cid7162", "MorphologicalOperations")),
        (node_codes.HISTOGRAM_ANALYSIS, ("cid7162", "HistogramAnalysis")),
        (node_codes.PROCESSING_EQUIPMENT, ("cid7005", "ProcessingEquipment")),
        (node_codes.DEVICE_OBSERVER, ("cid270", "Device")),
        (node_codes.IMAGING_MEASUREMENT_REPORT, ("cid7021", "ImagingMeasurementReport")),
    ],
)
def test_codes_are_the_context_group_members(code: Code, cid_attribute):
    cid, keyword = cid_attribute
    expected = getattr(getattr(dicom_codes, cid), keyword)
    assert (code.value, code.scheme_designator) == (expected.value, expected.scheme_designator)


@pytest.mark.parametrize(
    ("code", "scheme", "keyword"),
    [
        (node_codes.INTRACRANIAL_HEMORRHAGE, "SCT", "IntracranialHemorrhage"),
        (node_codes.IMAGE_PROCESSING, "DCM", "ImageProcessing"),
        (node_codes.PROBABILITY, "DCM", "Probability"),
        (node_codes.INTRACRANIAL_STRUCTURE, "SCT", "IntracranialStructure"),
        (node_codes.CT_HEAD, "LN", "HeadCT"),
    ],
)
def test_codes_outside_context_groups_are_in_the_dictionary(code: Code, scheme, keyword):
    expected = getattr(getattr(dicom_codes, scheme), keyword)
    assert (code.value, code.scheme_designator) == (expected.value, expected.scheme_designator)


def test_finding_codes_lookup():
    assert node_codes.finding_codes("  Intracranial  Hemorrhage ").abbreviation == "ICH"
    assert "intracranial hemorrhage" in node_codes.known_finding_labels()
    with pytest.raises(ResultBuildError):
        node_codes.finding_codes("subdural hygroma")
    with pytest.raises(ResultBuildError):
        node_codes.algorithm_family_code("deep magic")


# --- the dciodvfy wrapper on objects others made ---------------------------------


@pytest.mark.needs_shared_data
def test_dciodvfy_reports_the_source_ct_defects():
    report = run_dciodvfy(GE_HEAD / "01.dcm")
    assert report.iod == "CTImage"
    assert report.returncode == 1 and not report.ok
    texts = [m.text for m in report.errors]
    assert any("PatientBirthDate" in t for t in texts)
    assert any("PatientSex" in t for t in texts)
    assert any("DeidentificationMethod" in t for t in texts)
    tagged = [m for m in report.warnings if m.tag == "0x0043,0x106d"]
    assert tagged and "Explicit value representation" in tagged[0].text
    names = [m for m in report.warnings if "Patient's Name" in m.line]
    assert names and "REMOVED" in names[0].line and "REMOVED" not in names[0].redacted()
    with pytest.raises(ResultBuildError, match="PatientSex"):
        report.raise_for_errors()


EXAMPLE_FILES = sorted(
    p for p in EXAMPLES.rglob("*") if p.suffix in {".dcm", ".seg"} and p.is_file()
)


@pytest.mark.needs_shared_data
@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_dciodvfy_wrapper_on_example_objects(path: Path):
    report = run_dciodvfy(path)
    assert report.iod is not None or report.errors
    # The parser agrees with dciodvfy's own verdict (exit status 1 = errors).
    assert (report.returncode != 0) == bool(report.errors)
    assert report.other_lines == ()
    if "sparse-labelmap" in path.name:
        allowed = run_dciodvfy(path, allowed_errors=LABEL_MAP_SEGMENTATION_FALSE_POSITIVES)
        assert allowed.errors == () and len(allowed.allowed_errors) == 2


@pytest.mark.needs_shared_data
def test_dciodvfy_missing_or_unreadable(tmp_path):
    with pytest.raises(ResultBuildError, match="dicom3tools"):
        run_dciodvfy(GE_HEAD / "01.dcm", executable="dciodvfy-not-installed")
    report = run_dciodvfy(tmp_path / "missing.dcm")
    assert not report.ok and report.errors[0].severity == "Abort"


def test_dciodvfy_parser_never_drops_a_failure():
    silent = parse_dciodvfy_output("", path=Path("x.dcm"), returncode=2)
    assert len(silent.errors) == 1 and "status 2" in silent.errors[0].text
    odd = parse_dciodvfy_output(
        "Segmentation\n  something: Error in sequence\n", path=Path("x"), returncode=1
    )
    assert odd.iod == "Segmentation" and len(odd.errors) == 1


def _fresh_ge_head() -> list[pydicom.Dataset]:
    """The GE head's headers in slice order, read afresh (the module fixture is shared)."""
    datasets = [pydicom.dcmread(path, stop_before_pixels=True) for path in GE_HEAD.glob("*.dcm")]
    return sorted(datasets, key=_position_along_normal)


def _patient_centroid(masks: np.ndarray, positions, orientation, spacing) -> np.ndarray:
    """Mean patient position (LPS mm) of the voxels of ``masks`` (planes, rows, columns)."""
    row_dir, col_dir = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    points = []
    for k, position in enumerate(positions):
        rows, columns = np.nonzero(masks[k])
        if rows.size:
            points.append(
                np.asarray(position, float)
                + np.outer(columns * spacing[1], row_dir)
                + np.outer(rows * spacing[0], col_dir)
            )
    return np.concatenate(points).mean(axis=0)


@pytest.mark.needs_shared_data
def test_a_regular_grid_seg_of_the_tilted_ge_head_is_evenly_spaced_and_in_place(tmp_path, dciodvfy):
    ge_head = _fresh_ge_head()
    """dcmqi (3D Slicer) refuses the GE head's SEG: its frames follow the 18.5 degree tilt and
    the 4 mm / 7 mm steps. The regular-grid SEG has planes perpendicular to the image normal,
    evenly spaced, and puts the ball where the source-grid SEG puts it."""
    mask, _ = _ball(ge_head)
    result = PipelineResult(
        "ich", ALGORITHM, [SegmentFinding("intraparenchymal hemorrhage", True, 1.0, mask)]
    )
    source = build_segmentation(ge_head, result, equipment=EQUIPMENT)
    regular = build_segmentation(ge_head, result, equipment=EQUIPMENT, grid="regular")
    path = tmp_path / "regular.dcm"
    regular.save_as(path, enforce_file_format=True)
    from dicom_node.results.validate import validate_result_file

    report = validate_result_file(path)
    assert not report.errors, [m.text for m in report.errors]
    seg = hd.seg.segread(path)
    frames = seg.PerFrameFunctionalGroupsSequence
    positions = np.array(
        [[float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient] for f in frames]
    )
    orientation = [
        float(v)
        for v in seg.SharedFunctionalGroupsSequence[0]
        .PlaneOrientationSequence[0]
        .ImageOrientationPatient
    ]
    normal = np.cross(orientation[:3], orientation[3:])
    steps = np.diff(np.sort(positions @ normal))
    assert steps.min() > 0 and np.ptp(steps) < 1e-3, steps  # evenly spaced
    # collinear along the normal: no in-plane shear between planes (what dcmqi checks)
    in_plane = positions - np.outer(positions @ normal, normal)
    assert np.ptp(in_plane, axis=0).max() < 1e-3, in_plane
    spacing = [float(v) for v in ge_head[0].PixelSpacing]
    # the ball is where it was: centroids within one pixel and half the smallest step
    source_frames = source.PerFrameFunctionalGroupsSequence
    src_positions = [
        [float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient] for f in source_frames
    ]
    src_centroid = _patient_centroid(
        np.asarray(source.pixel_array).reshape(len(source_frames), *mask.shape[1:]),
        src_positions,
        orientation,
        spacing,
    )
    reg_centroid = _patient_centroid(
        np.asarray(seg.pixel_array).reshape(len(frames), *mask.shape[1:]),
        positions,
        orientation,
        spacing,
    )
    assert np.linalg.norm(reg_centroid - src_centroid) < max(spacing) + steps.min() / 2, (
        reg_centroid,
        src_centroid,
    )
    # every source image is still referenced
    referenced = {
        r.ReferencedSOPInstanceUID
        for s in seg.ReferencedSeriesSequence
        for r in s.ReferencedInstanceSequence
    }
    assert referenced == {str(ds.SOPInstanceUID) for ds in ge_head}


@pytest.mark.needs_shared_data
def test_a_regular_grid_profile_builds_a_seg_and_an_sr_that_validate(tmp_path, dciodvfy):
    ge_head = _fresh_ge_head()
    from dicom_node.results.builder import build_results_for_profiles
    from dicom_node.results.profiles import ResultProfile
    from dicom_node.results.validate import validate_result_file

    mask, _ = _ball(ge_head)
    result = PipelineResult(
        "ich", ALGORITHM, [SegmentFinding("intraparenchymal hemorrhage", True, 1.0, mask)]
    )
    profiles = {"pacs": ResultProfile(), "slicer": ResultProfile(seg_grid="regular")}
    built = build_results_for_profiles(ge_head, result, equipment=EQUIPMENT, profiles=profiles)
    kinds = sorted((o.kind, o.destinations) for o in built)
    assert kinds == [
        ("SEG", ("pacs",)),
        ("SEG", ("slicer",)),
        ("SR", ("pacs",)),
        ("SR", ("slicer",)),
    ], kinds
    for number, o in enumerate(built):
        path = tmp_path / f"{number}-{o.kind}.dcm"
        o.dataset.save_as(path, enforce_file_format=True)
        report = validate_result_file(path)
        assert not report.errors, (o.kind, o.destinations, [m.text for m in report.errors])
    with pytest.raises(ValueError, match="max_frames"):
        ResultProfile(seg_grid="regular", max_frames=10)


@pytest.mark.needs_shared_data
def test_an_absent_finding_carries_no_probability():
    """A negative series' any-ICH score is not written as the Absent finding's probability."""
    ge_head = _fresh_ge_head()
    mask = np.zeros((28, 512, 512), dtype=bool)
    result = PipelineResult(
        "ich", ALGORITHM, [SegmentFinding("intracranial hemorrhage", False, 0.0, mask, 0.14)]
    )
    _, report = build_results(ge_head, result, equipment=EQUIPMENT)
    names = [str(item.ConceptNameCodeSequence[0].CodeMeaning) for item in _walk_content(report)]
    assert "Probability" not in names, names
    assert "Absent" in [
        str(item.ConceptCodeSequence[0].CodeMeaning)
        for item in _walk_content(report)
        if "ConceptCodeSequence" in item
    ]


def _walk_content(dataset):
    for item in dataset.get("ContentSequence", []):
        yield item
        yield from _walk_content(item)
