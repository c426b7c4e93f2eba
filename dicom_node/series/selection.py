"""Series selection: which pipeline, if any, fits a complete series.

Rules are written over DICOM keywords, as in the MONAI Deploy series selector,
and live in the configuration file (``[[selection.rules]]``). The first rule
whose every condition holds selects its pipeline. When no rule holds, the
series is NOT_ELIGIBLE and the reason names, for each rule, the first condition
that failed, so an administrator can see why a series was not analysed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydicom.uid import UID

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"


class SelectionRule(BaseModel):
    """One selection rule: conditions over DICOM attributes and the pipeline they select.

    Parameters
    ----------
    name : str
        Human-readable rule name, shown in NOT_ELIGIBLE reasons.
    pipeline : str
        Pipeline the rule selects (for example ``"ich"``).
    modality : list of str
        Allowed values of Modality (0008,0060).
    sop_class_uid : list of str
        Allowed SOP Class UIDs; every instance of the series must have one.
    body_part_examined : list of str
        Allowed values of BodyPartExamined (0018,0015), compared case-insensitively.
        When the series has no BodyPartExamined, ``description_pattern`` decides.
    description_pattern : str or None
        Regular expression searched (case-insensitively) in StudyDescription,
        SeriesDescription and ProtocolName when BodyPartExamined is absent.
    image_type_excluded : list of str
        Values that must not appear in ImageType (0008,0008) of any instance,
        for example ``LOCALIZER``.
    contrast : {"absent", "present", "any"}
        Whether ContrastBolusAgent (0018,0010) must be absent or present.
    orientation : {"axial", "any"}
        ``"axial"`` requires the slice normal within 45 degrees of the patient
        z axis, so gantry-tilted axial scans still qualify.
    min_slices : int
        Minimum number of slices (frames summed over instances).
    slice_thickness_mm : tuple of float or None
        Inclusive (min, max) range of SliceThickness in mm.

    References
    ----------
    DICOM PS3.3 C.7.3.1 General Series Module, C.7.6.2 Image Plane Module,
    C.8.2.1 CT Image Module.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    pipeline: str
    modality: list[str] = Field(default_factory=lambda: ["CT"])
    sop_class_uid: list[str] = Field(
        default_factory=lambda: [CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE]
    )
    body_part_examined: list[str] = Field(default_factory=list)
    description_pattern: str | None = None
    image_type_excluded: list[str] = Field(default_factory=lambda: ["LOCALIZER"])
    contrast: Literal["absent", "present", "any"] = "any"
    orientation: Literal["axial", "any"] = "any"
    min_slices: int = 1
    slice_thickness_mm: tuple[float, float] | None = None

    @field_validator("description_pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            re.compile(value)
        return value


@dataclass(frozen=True)
class SeriesAttributes:
    """What selection looks at, gathered at receive time without decoding pixels.

    Parameters
    ----------
    modality, body_part_examined, study_description, series_description, protocol_name : str
        Values of the series' first instance; empty string when absent.
    contrast_bolus_agent : str or None
        ContrastBolusAgent of the first instance, None when absent.
    image_orientation_patient : tuple of float or None
        ImageOrientationPatient (6 direction cosines) of the first instance.
    slice_thickness_mm : float or None
        SliceThickness of the first instance in mm.
    sop_class_uids : frozenset of str
        SOP Class UIDs seen in the series.
    image_types : frozenset of str
        Every ImageType value seen in any instance.
    slice_count : int
        Number of slices: NumberOfFrames summed, 1 for a single-frame instance.
    """

    modality: str
    body_part_examined: str
    study_description: str
    series_description: str
    protocol_name: str
    contrast_bolus_agent: str | None
    image_orientation_patient: tuple[float, ...] | None
    slice_thickness_mm: float | None
    sop_class_uids: frozenset[str]
    image_types: frozenset[str]
    slice_count: int


@dataclass(frozen=True)
class Selection:
    """Outcome of :func:`select_pipeline`.

    Parameters
    ----------
    pipeline : str or None
        Selected pipeline, None when the series is not eligible.
    rule_name : str or None
        Name of the rule that matched.
    reason : str
        Why the series was or was not selected.
    """

    pipeline: str | None
    rule_name: str | None
    reason: str
    failures: dict[str, str] = field(default_factory=dict)


def _sop_class_name(uid: str) -> str:
    name = UID(uid).name
    return name if name and name != uid else uid


def first_failure(rule: SelectionRule, series: SeriesAttributes) -> str | None:
    """Return the first condition of ``rule`` that ``series`` breaks, or None if all hold.

    Parameters
    ----------
    rule : SelectionRule
        The rule to test.
    series : SeriesAttributes
        The series' attributes.

    Returns
    -------
    str or None
        A sentence naming the DICOM attribute and the rule's condition.
    """
    if rule.modality and series.modality not in rule.modality:
        return (
            f"Modality {series.modality or '(absent)'!r} is not one of {', '.join(rule.modality)}"
        )
    bad_classes = sorted(series.sop_class_uids - set(rule.sop_class_uid))
    if bad_classes:
        allowed = ", ".join(_sop_class_name(u) for u in rule.sop_class_uid)
        return f"SOP class {_sop_class_name(bad_classes[0])} is not one of {allowed}"
    excluded = sorted(series.image_types & set(rule.image_type_excluded))
    if excluded:
        return f"ImageType contains {excluded[0]}"
    if rule.body_part_examined or rule.description_pattern:
        body_part = series.body_part_examined.strip().upper()
        allowed_parts = [p.upper() for p in rule.body_part_examined]
        if body_part:
            if body_part not in allowed_parts:
                return f"BodyPartExamined {body_part!r} is not one of {', '.join(allowed_parts)}"
        else:
            texts = [series.study_description, series.series_description, series.protocol_name]
            pattern = rule.description_pattern
            if pattern is None or not any(re.search(pattern, t, re.IGNORECASE) for t in texts):
                return (
                    "BodyPartExamined is absent and no StudyDescription, SeriesDescription or "
                    f"ProtocolName matches {pattern!r}"
                )
    has_contrast = bool(series.contrast_bolus_agent and series.contrast_bolus_agent.strip())
    if rule.contrast == "absent" and has_contrast:
        return f"ContrastBolusAgent is present ({series.contrast_bolus_agent!r})"
    if rule.contrast == "present" and not has_contrast:
        return "ContrastBolusAgent is absent"
    if rule.orientation == "axial":
        iop = series.image_orientation_patient
        if iop is None or len(iop) != 6:
            return "ImageOrientationPatient is absent, orientation cannot be checked"
        normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
        if abs(normal[2]) < np.cos(np.deg2rad(45.0)) * np.linalg.norm(normal):
            return "orientation is not axial (slice normal more than 45 deg from the z axis)"
    if series.slice_count < rule.min_slices:
        return f"{series.slice_count} slices, fewer than the {rule.min_slices} required"
    if rule.slice_thickness_mm is not None:
        low, high = rule.slice_thickness_mm
        thickness = series.slice_thickness_mm
        if thickness is None or not low <= thickness <= high:
            return f"SliceThickness {thickness} mm is outside [{low}, {high}] mm"
    return None


def select_pipeline(series: SeriesAttributes, rules: list[SelectionRule]) -> Selection:
    """Choose the pipeline for a complete series by the first rule that holds.

    Parameters
    ----------
    series : SeriesAttributes
        Attributes of the complete series.
    rules : list of SelectionRule
        Rules in priority order.

    Returns
    -------
    Selection
        The pipeline and rule name, or ``pipeline=None`` with a reason naming,
        for each rule, the first condition the series broke.
    """
    failures: dict[str, str] = {}
    for rule in rules:
        failure = first_failure(rule, series)
        if failure is None:
            return Selection(rule.pipeline, rule.name, f"matched rule {rule.name!r}")
        failures[rule.name] = failure
    if not rules:
        return Selection(None, None, "no selection rules are configured")
    reason = "; ".join(f"rule {name!r}: {why}" for name, why in failures.items())
    return Selection(None, None, reason, failures)
