"""Selection rules on the real headers in ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from dicom_node.config import load_settings
from dicom_node.series.selection import (
    Candidate,
    SelectionRule,
    SeriesAttributes,
    SeriesPreference,
    first_failure,
    rank_candidates,
    select_pipeline,
)


def attributes_of(folder: Path) -> SeriesAttributes:
    datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.iterdir())]
    first = datasets[0]
    iop = first.get("ImageOrientationPatient")
    image_types = {str(v).upper() for ds in datasets for v in ds.get("ImageType", [])}
    return SeriesAttributes(
        modality=str(first.get("Modality", "")),
        body_part_examined=str(first.get("BodyPartExamined", "")),
        study_description=str(first.get("StudyDescription", "")),
        series_description=str(first.get("SeriesDescription", "")),
        protocol_name=str(first.get("ProtocolName", "")),
        contrast_bolus_agent=first.get("ContrastBolusAgent"),
        image_orientation_patient=tuple(float(v) for v in iop) if iop else None,
        slice_thickness_mm=float(first.SliceThickness) if first.get("SliceThickness") else None,
        sop_class_uids=frozenset(str(ds.SOPClassUID) for ds in datasets),
        image_types=frozenset(image_types),
        slice_count=len(datasets),
        convolution_kernel="\\".join(first.get("ConvolutionKernel", []))
        if not isinstance(first.get("ConvolutionKernel"), str)
        else first.ConvolutionKernel,
    )


@pytest.fixture(scope="module")
def rules():
    return load_settings().selection.rules


@pytest.mark.parametrize("folder", ["head-ct-ge", "head-phantom-philips/S2010"])
def test_axial_non_contrast_head_ct_goes_to_ich(shared_data, rules, folder):
    selection = select_pipeline(attributes_of(shared_data / folder), rules)
    assert selection.pipeline == "ich", selection.reason


@pytest.mark.parametrize(
    "folder, fragment",
    [
        ("head-phantom-philips/S1000", "ImageType contains LOCALIZER"),
        ("head-phantom-philips/S4010", "SOP class Secondary Capture Image Storage"),
        ("chest-ct/lung-30", "BodyPartExamined 'CHEST'"),
        ("chest-ct/jpeg-lossless-40", "BodyPartExamined is absent"),
    ],
)
def test_other_series_are_not_eligible_with_a_reason(shared_data, rules, folder, fragment):
    selection = select_pipeline(attributes_of(shared_data / folder), rules)
    assert selection.pipeline is None
    assert fragment in selection.reason
    assert "non-contrast head CT" in selection.reason


def test_contrast_orientation_and_slice_count_conditions(shared_data, rules):
    base = attributes_of(shared_data / "head-ct-ge")
    fields = base.__dict__
    contrast = SeriesAttributes(**{**fields, "contrast_bolus_agent": "IOMERON 400"})
    head_rules = [r for r in rules if r.pipeline == "ich"]
    assert "ContrastBolusAgent is present" in select_pipeline(contrast, head_rules).reason
    assert select_pipeline(contrast, rules).pipeline == "cta"  # CT angiography
    sagittal = SeriesAttributes(**{**fields, "image_orientation_patient": (0, 1, 0, 0, 0, -1)})
    assert "not axial" in select_pipeline(sagittal, rules).reason
    few = SeriesAttributes(**{**fields, "slice_count": 3})
    assert "fewer than the 10 required" in select_pipeline(few, rules).reason


def test_first_matching_rule_wins_and_empty_rules_say_so(shared_data):
    attrs = attributes_of(shared_data / "head-ct-ge")
    any_ct = SelectionRule(name="any CT", pipeline="other")
    head = SelectionRule(name="head", pipeline="ich", body_part_examined=["HEAD"])
    assert select_pipeline(attrs, [any_ct, head]).pipeline == "other"
    assert select_pipeline(attrs, []).reason == "no selection rules are configured"


# --- one test per condition, on real headers changed in that one attribute --------


def _with(attributes: SeriesAttributes, **changes) -> SeriesAttributes:
    return SeriesAttributes(**{**attributes.__dict__, **changes})


@pytest.fixture(scope="module")
def ge(shared_data) -> SeriesAttributes:
    return attributes_of(shared_data / "head-ct-ge")


def test_default_rule_accepts_the_ge_head_with_its_kernel(ge, rules):
    assert ge.convolution_kernel == "STD+"
    assert select_pipeline(ge, rules).pipeline == "ich"


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"modality": "MR"}, "Modality 'MR' is not one of CT"),
        (
            {"sop_class_uids": frozenset({"1.2.840.10008.5.1.4.1.1.4"})},
            "SOP class MR Image Storage is not one of",
        ),
        ({"image_types": frozenset({"ORIGINAL", "LOCALIZER"})}, "ImageType contains LOCALIZER"),
        ({"body_part_examined": "ABDOMEN"}, "BodyPartExamined 'ABDOMEN' is not one of"),
        (
            {"body_part_examined": "", "study_description": "", "protocol_name": ""},
            "BodyPartExamined is absent and no StudyDescription",
        ),
        ({"series_description": "Dose Report"}, "SeriesDescription 'Dose Report' matches"),
        ({"convolution_kernel": "BONE"}, "ConvolutionKernel 'BONE' matches"),
        ({"convolution_kernel": "H70h"}, "ConvolutionKernel 'H70h' matches"),
        ({"contrast_bolus_agent": "IOMERON 400"}, "ContrastBolusAgent is present"),
        ({"image_orientation_patient": (1, 0, 0, 0, 0, -1)}, "orientation is not axial"),
        ({"slice_count": 9}, "9 slices, fewer than the 10 required"),
        ({"slice_thickness_mm": 12.0}, "SliceThickness 12.0 mm is outside [0.5, 10.0] mm"),
    ],
)
def test_each_default_condition_rejects_with_its_reason(ge, rules, changes, fragment):
    # The conditions of the non-contrast head rule (a contrast series is the CTA rules' own).
    rules = [r for r in rules if r.pipeline == "ich"]
    selection = select_pipeline(_with(ge, **changes), rules)
    assert selection.pipeline is None
    assert fragment in selection.reason, selection.reason


OPTIONAL_CONDITIONS = [
    ({"image_type_required": ["AXIAL"]}, {}, {"image_types": frozenset({"ORIGINAL"})},
     "ImageType lacks AXIAL"),
    ({"series_description_pattern": "brain"}, {}, {"series_description": "HEAD STD"},
     "SeriesDescription 'HEAD STD' does not match"),
    ({"series_description_excluded": "1 ?mm"}, {}, {"series_description": "BRAIN 1MM"},
     "SeriesDescription 'BRAIN 1MM' matches"),
    ({"protocol_name_pattern": "trauma"}, {}, {"protocol_name": "ROUTINE"},
     "ProtocolName 'ROUTINE' does not match"),
    ({"convolution_kernel_pattern": "^(STD|UB)"}, {}, {"convolution_kernel": "SOFT"},
     "ConvolutionKernel 'SOFT' does not match"),
    ({"convolution_kernel_pattern": "^(STD|UB)"}, {}, {"convolution_kernel": ""},
     "ConvolutionKernel is absent"),
    ({"contrast": "present"}, {"contrast_bolus_agent": "IOMERON 400"},
     {"contrast_bolus_agent": None}, "ContrastBolusAgent is absent"),
]  # fmt: skip


@pytest.mark.parametrize(("rule_fields", "base", "changes", "fragment"), OPTIONAL_CONDITIONS)
def test_optional_conditions_on_the_phantom_5_mm_series(
    shared_data, rule_fields, base, changes, fragment
):
    phantom = _with(attributes_of(shared_data / "head-phantom-philips/S2010"), **base)
    rule = SelectionRule(name="custom", pipeline="ich", **rule_fields)
    assert first_failure(rule, phantom) is None
    assert fragment in (first_failure(rule, _with(phantom, **changes)) or "")


def test_philips_phantom_5_mm_and_1_mm_both_eligible_thinnest_soft_kernel_wins(shared_data, rules):
    five = attributes_of(shared_data / "head-phantom-philips/S2010")
    one = attributes_of(shared_data / "head-phantom-philips/S2020")
    assert select_pipeline(five, rules).pipeline == select_pipeline(one, rules).pipeline == "ich"
    candidates = [
        Candidate("1.2.3.5mm", five, received_order=1),
        Candidate("1.2.3.1mm", one, received_order=2),
    ]
    (best, _), (other, why) = rank_candidates(candidates, SeriesPreference())
    assert (best.series_instance_uid, other.series_instance_uid) == ("1.2.3.1mm", "1.2.3.5mm")
    assert "series 1.2.3.1mm (STD BRAIN 1MM, iDose, 1 mm, kernel UB, 140 slices)" in why
    assert why.endswith("is preferred (thinnest)")
    # A bone kernel loses to a soft-tissue kernel before thickness is looked at.
    bone = Candidate("1.2.3.bone", _with(one, convolution_kernel="YC"), received_order=3)
    ranked = rank_candidates([bone, candidates[0]], SeriesPreference())
    assert ranked[0][0].series_instance_uid == "1.2.3.5mm"
    assert ranked[1][1].endswith("(soft tissue kernel)")
    closest = SeriesPreference(criteria=["closest_thickness"], preferred_slice_thickness_mm=5.0)
    assert rank_candidates(candidates, closest)[0][0].series_instance_uid == "1.2.3.5mm"
