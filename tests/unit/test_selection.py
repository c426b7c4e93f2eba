"""Selection rules on the real headers in ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from dicom_node.config import load_settings
from dicom_node.series.selection import SelectionRule, SeriesAttributes, select_pipeline


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
    assert "ContrastBolusAgent is present" in select_pipeline(contrast, rules).reason
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
