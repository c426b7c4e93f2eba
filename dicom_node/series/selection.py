"""Series selection: which pipeline, if any, fits a complete series.

Rules are written over DICOM keywords, as in the MONAI Deploy series selector,
and live in the configuration file (``[[selection.rules]]``). The first rule
whose every condition holds selects its pipeline. When no rule holds, the
series is NOT_ELIGIBLE and the reason names, for each rule, the first condition
that failed, so an administrator can see why a series was not analysed.

Conditions, each over one DICOM attribute: Modality, SOP Class UID,
ImageType values required and excluded, BodyPartExamined (or, when absent, a
pattern over StudyDescription/SeriesDescription/ProtocolName), patterns that
SeriesDescription and ProtocolName must (or must not) match,
ConvolutionKernel patterns, ContrastBolusAgent presence, orientation (axial),
minimum number of slices and a SliceThickness range.

When one study holds several series eligible for the same pipeline (a 5 mm and
a 1 mm reconstruction, a soft-tissue and a bone kernel), ``[selection.preference]``
decides: ``multiple_series = "all"`` analyses each; ``"best"`` (default) ranks
them by the ordered ``criteria`` and analyses only the first; the others are
NOT_ELIGIBLE with a reason naming the preferred series and the criterion that
decided (:func:`rank_candidates`). The default order is: soft-tissue kernel
first (``soft_tissue_kernel_pattern``), then the thinnest slices, then the most
slices, then the series received first.
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
    image_type_required : list of str
        Values that must appear in ImageType (0008,0008), for example ``AXIAL``.
    series_description_pattern : str or None
        Regular expression SeriesDescription (0008,103E) must match
        (case-insensitive search).
    series_description_excluded : str or None
        Regular expression SeriesDescription must not match (for example
        ``"scout|dose|bone"``).
    protocol_name_pattern : str or None
        Regular expression ProtocolName (0018,1030) must match.
    convolution_kernel_pattern : str or None
        Regular expression ConvolutionKernel (0018,1210) must match; a series
        without ConvolutionKernel fails it.
    convolution_kernel_excluded : str or None
        Regular expression ConvolutionKernel must not match (sharp bone and
        lung kernels); a series without ConvolutionKernel passes.

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
    image_type_required: list[str] = Field(default_factory=list)
    series_description_pattern: str | None = None
    series_description_excluded: str | None = None
    protocol_name_pattern: str | None = None
    convolution_kernel_pattern: str | None = None
    convolution_kernel_excluded: str | None = None

    @field_validator(
        "description_pattern",
        "series_description_pattern",
        "series_description_excluded",
        "protocol_name_pattern",
        "convolution_kernel_pattern",
        "convolution_kernel_excluded",
    )
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            re.compile(value)
        return value


#: A ranking criterion of :class:`SeriesPreference`.
Criterion = Literal[
    "soft_tissue_kernel",
    "thinnest",
    "thickest",
    "closest_thickness",
    "most_slices",
    "earliest",
]


def _default_criteria() -> list[Criterion]:
    return ["soft_tissue_kernel", "thinnest", "most_slices", "earliest"]


class SeriesPreference(BaseModel):
    """Which of several eligible series of one study a pipeline analyses.

    Parameters
    ----------
    multiple_series : {"best", "all"}
        ``"best"``: analyse only the best-ranked series of a study for each
        pipeline; ``"all"``: analyse each eligible series.
    criteria : list of str
        Ranking criteria, most important first: ``"soft_tissue_kernel"``
        (ConvolutionKernel matches ``soft_tissue_kernel_pattern``),
        ``"thinnest"`` / ``"thickest"`` (SliceThickness), ``"closest_thickness"``
        (nearest to ``preferred_slice_thickness_mm``), ``"most_slices"``,
        ``"earliest"`` (received first).
    soft_tissue_kernel_pattern : str
        Regular expression of soft-tissue (brain, standard) reconstruction
        kernels, searched case-insensitively.
    preferred_slice_thickness_mm : float
        Target of ``"closest_thickness"`` (mm).

    References
    ----------
    PS3.3 C.8.2.1 CT Image Module (Convolution Kernel); C.7.6.2 (Slice Thickness).
    """

    model_config = ConfigDict(extra="forbid")

    multiple_series: Literal["best", "all"] = "best"
    criteria: list[Criterion] = Field(default_factory=_default_criteria)
    soft_tissue_kernel_pattern: str = (
        r"^(STD\+?|STANDARD|SOFT|UA|UB|UC|B|C|FC[0-4]\d|[BHIJQ][1-4]\d[a-z]?|[BH]r[1-4]\d[a-z]?)$"
    )
    preferred_slice_thickness_mm: float = Field(5.0, gt=0)

    @field_validator("soft_tissue_kernel_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
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
    convolution_kernel : str
        ConvolutionKernel of the first instance (values joined with a
        backslash); empty string when absent.
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
    convolution_kernel: str = ""


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


def _search(pattern: str, text: str) -> bool:
    return re.search(pattern, text or "", re.IGNORECASE) is not None


def _text_failure(rule: SelectionRule, series: SeriesAttributes) -> str | None:
    """The first failed SeriesDescription, ProtocolName or ConvolutionKernel condition."""
    description = series.series_description
    if rule.series_description_pattern and not _search(
        rule.series_description_pattern, description
    ):
        return (
            f"SeriesDescription {description or '(absent)'!r} does not match "
            f"{rule.series_description_pattern!r}"
        )
    if rule.series_description_excluded and _search(rule.series_description_excluded, description):
        return f"SeriesDescription {description!r} matches {rule.series_description_excluded!r}"
    if rule.protocol_name_pattern and not _search(rule.protocol_name_pattern, series.protocol_name):
        return (
            f"ProtocolName {series.protocol_name or '(absent)'!r} does not match "
            f"{rule.protocol_name_pattern!r}"
        )
    kernel = series.convolution_kernel
    if rule.convolution_kernel_pattern:
        if not kernel:
            return "ConvolutionKernel is absent"
        if not _search(rule.convolution_kernel_pattern, kernel):
            return (
                f"ConvolutionKernel {kernel!r} does not match {rule.convolution_kernel_pattern!r}"
            )
    if (
        rule.convolution_kernel_excluded
        and kernel
        and _search(rule.convolution_kernel_excluded, kernel)
    ):
        return f"ConvolutionKernel {kernel!r} matches {rule.convolution_kernel_excluded!r}"
    return None


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
    missing = [v for v in rule.image_type_required if v.upper() not in series.image_types]
    if missing:
        return f"ImageType lacks {missing[0]}"
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
    failure = _text_failure(rule, series)
    if failure is not None:
        return failure
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


@dataclass(frozen=True)
class Candidate:
    """A complete series eligible for a pipeline, competing with others of its study.

    Parameters
    ----------
    series_instance_uid : str
        Series Instance UID.
    attributes : SeriesAttributes
        Its selection attributes.
    received_order : int
        Smaller for series received earlier (the series row id).
    """

    series_instance_uid: str
    attributes: SeriesAttributes
    received_order: int


def _criterion_key(criterion: str, candidate: Candidate, preference: SeriesPreference) -> float:
    """Sort key of one criterion: smaller is better."""
    attributes = candidate.attributes
    thickness = attributes.slice_thickness_mm
    if criterion == "soft_tissue_kernel":
        kernel = attributes.convolution_kernel
        return 0.0 if kernel and _search(preference.soft_tissue_kernel_pattern, kernel) else 1.0
    if criterion == "thinnest":
        return thickness if thickness is not None else float("inf")
    if criterion == "thickest":
        return -thickness if thickness is not None else float("inf")
    if criterion == "closest_thickness":
        if thickness is None:
            return float("inf")
        return abs(thickness - preference.preferred_slice_thickness_mm)
    if criterion == "most_slices":
        return -float(attributes.slice_count)
    return float(candidate.received_order)  # "earliest"


def _describe(candidate: Candidate) -> str:
    attributes = candidate.attributes
    thickness = attributes.slice_thickness_mm
    parts = [
        f"{attributes.series_description or 'no description'}",
        f"{thickness:g} mm" if thickness is not None else "no SliceThickness",
        f"kernel {attributes.convolution_kernel or '(absent)'}",
        f"{attributes.slice_count} slices",
    ]
    return f"series {candidate.series_instance_uid} ({', '.join(parts)})"


def rank_candidates(
    candidates: list[Candidate], preference: SeriesPreference
) -> list[tuple[Candidate, str]]:
    """Rank eligible series of one study for one pipeline, best first.

    Parameters
    ----------
    candidates : list of Candidate
        The eligible series (at least one).
    preference : SeriesPreference
        The ordered criteria.

    Returns
    -------
    list of tuple of (Candidate, str)
        Candidates best first; the text is empty for the best and, for each
        other, says which series is preferred and by which criterion.

    Raises
    ------
    ValueError
        If ``candidates`` is empty.
    """
    if not candidates:
        raise ValueError("no candidates to rank")
    criteria = [*preference.criteria, "earliest"]

    def key(candidate: Candidate) -> tuple[float, ...]:
        return tuple(_criterion_key(c, candidate, preference) for c in criteria)

    ranked = sorted(candidates, key=key)
    best = ranked[0]
    out: list[tuple[Candidate, str]] = [(best, "")]
    for other in ranked[1:]:
        decisive = next(
            (
                c
                for c in criteria
                if _criterion_key(c, other, preference) != _criterion_key(c, best, preference)
            ),
            "earliest",
        )
        out.append(
            (
                other,
                f"{_describe(best)} of the same study is preferred ({decisive.replace('_', ' ')})",
            )
        )
    return out
