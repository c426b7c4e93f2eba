"""Every coded concept the result objects use, in one place.

Each constant is a :class:`pydicom.sr.coding.Code`; a comment names the DICOM
context group (CID) or template (TID) row it comes from. Where pydicom's code
dictionary (``pydicom.sr.codedict.codes``, generated from PS3.16) holds the
concept, the code value and scheme here are the same (a unit test checks it);
code meanings are the DICOM ones, not SNOMED CT fully specified names.

Choices that needed a judgement, and why:

* Anatomic region and finding site: SCT 1101003 "Intracranial" is the concept
  that CID 4 "Anatomic Region" and CID 7151 "Segmentation Property Types" list
  for the intracranial compartment. SCT 128319008 "Intracranial structure" is
  only in CID 7140 "Brain Structures for Volumetric Measurement"; it is kept
  below for reference but not used, so the SEG Anatomic Region Sequence and the
  TID 1411 Finding Site carry a code from the context group they name.
* Presence: TID 1411 qualitative evaluations are coded name-value pairs
  (question and answer). The name is the finding itself (for example SCT
  1386000 "Intracranial hemorrhage") and the value comes from CID 240
  "Present-Absent" (SCT 52101004 Present / SCT 272519000 Absent). DCM 121071
  "Finding" is not used for this: TID 1411 already uses it as the concept name
  of the Finding (type) row, and a Finding row cannot say "absent".
* Algorithm family: the Algorithm Family Code Sequence (PS3.3 Table 10-19) and
  TID 4019 use BCID 7162 "Surface Processing Algorithm Family", an extensible
  group. DCM 123110 "Artificial Intelligence" is in it; "image processing" has
  no member there, so DCM 110001 "Image Processing" (a DCM concept, used in
  CID 9231) extends it for the rule-based baseline pipelines.
* Procedure reported: TID 1500 row "Procedure reported" suggests the extensible
  CID 100, which lists only generic CT (LN 25045-6 "CT unspecified body
  region"). LN 24725-4 "CT Head" is the LOINC code for the procedure the node
  actually reports on (pydicom's dictionary lists it in CID 646 and CID 7000),
  so it is used instead.
* Volume unit: UCUM "ml" (milliliter); UCUM defines both "l" and "L" for liter.
* Hemorrhage subtypes: only codes we are confident of are listed
  (SCT 21454007 subarachnoid, SCT 274100004 cerebral = intraparenchymal).
  Epidural, subdural and intraventricular are deliberately absent until their
  SNOMED CT codes are checked against a SNOMED CT browser; asking for them
  raises :class:`~dicom_node.errors.ResultBuildError`.

References
----------
PS3.16 CID 4, CID 100, CID 240, CID 270, CID 7005, CID 7150, CID 7151,
CID 7162, CID 7181, CID 7469; PS3.16 TID 1500, TID 1411, TID 4019;
PS3.3 C.8.20.2 Segmentation Image Module (Segment Description Macro).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.sr.coding import Code

from dicom_node.errors import ResultBuildError

# --- Segmentation: segmented property category (CID 7150) -------------------
MORPHOLOGICALLY_ABNORMAL_STRUCTURE = Code("49755003", "SCT", "Morphologically Abnormal Structure")

# --- Segmentation: segmented property type (CID 7151) ------------------------
HEMORRHAGE = Code("50960005", "SCT", "Hemorrhage")

# --- Anatomic region of a segment / TID 1411 finding site (CID 4, CID 7151) --
INTRACRANIAL = Code("1101003", "SCT", "Intracranial")
BRAIN = Code("12738006", "SCT", "Brain")
SUBARACHNOID_SPACE = Code("35951006", "SCT", "Subarachnoid space")  # CID 7151 only
# CID 7140 only; kept for reference, not used (see the module docstring).
INTRACRANIAL_STRUCTURE = Code("128319008", "SCT", "Intracranial structure")

# --- Findings: TID 1411 "Finding" value and qualitative-evaluation name ------
# SNOMED CT disorders; not in a DICOM CID (TID 1411 leaves the value open).
INTRACRANIAL_HEMORRHAGE = Code("1386000", "SCT", "Intracranial hemorrhage")
SUBARACHNOID_HEMORRHAGE = Code("21454007", "SCT", "Subarachnoid hemorrhage")
CEREBRAL_HEMORRHAGE = Code("274100004", "SCT", "Cerebral hemorrhage")

# --- Qualitative evaluation values (CID 240 "Present-Absent") ----------------
PRESENT = Code("52101004", "SCT", "Present")
ABSENT = Code("272519000", "SCT", "Absent")

# --- Measurements (TID 1419 rows; CID 7469 / CID 7472 "Volume") --------------
VOLUME = Code("118565006", "SCT", "Volume")
PROBABILITY = Code("122157", "DCM", "Probability")  # DCM concept, no CID

# --- Units (UCUM; CID 7181 lists "1" no units) --------------------------------
MILLILITER = Code("ml", "UCUM", "milliliter")
NO_UNITS = Code("1", "UCUM", "no units")

# --- Algorithm family (BCID 7162, extended; see the module docstring) --------
ARTIFICIAL_INTELLIGENCE = Code("123110", "DCM", "Artificial Intelligence")  # CID 7162
IMAGE_PROCESSING = Code("110001", "DCM", "Image Processing")  # DCM; extends CID 7162
MORPHOLOGICAL_OPERATIONS = Code("123104", "DCM", "Morphological Operations")  # CID 7162
HISTOGRAM_ANALYSIS = Code("123105", "DCM", "Histogram Analysis")  # CID 7162

# --- Contributing Equipment purpose of reference (CID 7005) ------------------
PROCESSING_EQUIPMENT = Code("109102", "DCM", "Processing Equipment")

# --- SR observation context (TID 1002 Observer Type, CID 270) ----------------
DEVICE_OBSERVER = Code("121007", "DCM", "Device")

# --- SR procedure reported (TID 1500 row 4; extends CID 100) -----------------
CT_HEAD = Code("24725-4", "LN", "CT Head")

# --- SR document title (TID 1500 row 1, CID 7021) ----------------------------
IMAGING_MEASUREMENT_REPORT = Code("126000", "DCM", "Imaging Measurement Report")

ALGORITHM_FAMILIES: dict[str, Code] = {
    "artificial intelligence": ARTIFICIAL_INTELLIGENCE,
    "image processing": IMAGE_PROCESSING,
    "morphological operations": MORPHOLOGICAL_OPERATIONS,
    "histogram analysis": HISTOGRAM_ANALYSIS,
}


@dataclass(frozen=True)
class FindingCodes:
    """The coded description of one kind of finding, for SEG and SR alike.

    Parameters
    ----------
    label : str
        The key pipelines use in :attr:`SegmentFinding.label`, lower case.
    segment_label : str
        Segment Label (0062,0005) written into the SEG (LO, at most 64 chars).
    abbreviation : str
        Short upper-case form used for Content Label and Tracking ID
        (for example ``"ICH"``).
    segmented_property_category : pydicom.sr.coding.Code
        Segmented Property Category Code Sequence value (CID 7150).
    segmented_property_type : pydicom.sr.coding.Code
        Segmented Property Type Code Sequence value (CID 7151).
    anatomic_region : pydicom.sr.coding.Code
        Anatomic Region Sequence value of the segment (CID 4 / CID 7151).
    finding_type : pydicom.sr.coding.Code
        TID 1411 "Finding" value and the name of the presence evaluation.
    finding_site : pydicom.sr.coding.Code
        TID 1411 "Finding Site" value.
    recommended_display_rgb : tuple of int
        Recommended display colour as sRGB (0-255 each); the SEG stores it
        as CIELab (Recommended Display CIELab Value).

    References
    ----------
    PS3.3 C.8.20.2 Segment Description Macro; PS3.16 CID 7150, CID 7151,
    CID 4, TID 1411.
    """

    label: str
    segment_label: str
    abbreviation: str
    segmented_property_category: Code
    segmented_property_type: Code
    anatomic_region: Code
    finding_type: Code
    finding_site: Code
    recommended_display_rgb: tuple[int, int, int]


_FINDINGS: dict[str, FindingCodes] = {
    "intracranial hemorrhage": FindingCodes(
        label="intracranial hemorrhage",
        segment_label="Intracranial hemorrhage",
        abbreviation="ICH",
        segmented_property_category=MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
        segmented_property_type=HEMORRHAGE,
        anatomic_region=INTRACRANIAL,
        finding_type=INTRACRANIAL_HEMORRHAGE,
        finding_site=INTRACRANIAL,
        recommended_display_rgb=(255, 0, 0),
    ),
    "subarachnoid hemorrhage": FindingCodes(
        label="subarachnoid hemorrhage",
        segment_label="Subarachnoid hemorrhage",
        abbreviation="SAH",
        segmented_property_category=MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
        segmented_property_type=HEMORRHAGE,
        anatomic_region=SUBARACHNOID_SPACE,
        finding_type=SUBARACHNOID_HEMORRHAGE,
        finding_site=SUBARACHNOID_SPACE,
        recommended_display_rgb=(255, 160, 0),
    ),
    "intraparenchymal hemorrhage": FindingCodes(
        label="intraparenchymal hemorrhage",
        segment_label="Intraparenchymal hemorrhage",
        abbreviation="IPH",
        segmented_property_category=MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
        segmented_property_type=HEMORRHAGE,
        anatomic_region=BRAIN,
        finding_type=CEREBRAL_HEMORRHAGE,
        finding_site=BRAIN,
        recommended_display_rgb=(200, 0, 200),
    ),
}


def known_finding_labels() -> tuple[str, ...]:
    """Return the finding labels :func:`finding_codes` knows, sorted.

    Returns
    -------
    tuple of str
        Lower-case labels such as ``"intracranial hemorrhage"``.
    """
    return tuple(sorted(_FINDINGS))


def finding_codes(label: str) -> FindingCodes:
    """Look up the coded description of a finding label.

    Parameters
    ----------
    label : str
        Finding label as pipelines write it, for example
        ``"intracranial hemorrhage"``; case and surrounding blanks are ignored.

    Returns
    -------
    FindingCodes
        Segment category/type/region codes and the TID 1411 finding codes.

    Raises
    ------
    dicom_node.errors.ResultBuildError
        If the label has no coded description (the result cannot be encoded
        without guessing a code).

    References
    ----------
    PS3.16 CID 7150, CID 7151, CID 4, TID 1411.
    """
    key = " ".join(label.split()).lower()
    try:
        return _FINDINGS[key]
    except KeyError as err:
        raise ResultBuildError(
            f"no coded concept for finding label {label!r}; "
            f"known labels: {', '.join(known_finding_labels())}"
        ) from err


def algorithm_family_code(family: str) -> Code:
    """Return the Algorithm Family code for an :class:`AlgorithmIdentity` family key.

    Parameters
    ----------
    family : str
        Family key, for example ``"artificial intelligence"`` or
        ``"image processing"``; case and surrounding blanks are ignored.

    Returns
    -------
    pydicom.sr.coding.Code
        The coded algorithm family.

    Raises
    ------
    dicom_node.errors.ResultBuildError
        If the key is unknown.

    References
    ----------
    PS3.16 CID 7162; PS3.3 Table 10-19 Algorithm Identification Macro.
    """
    key = " ".join(family.split()).lower()
    try:
        return ALGORITHM_FAMILIES[key]
    except KeyError as err:
        raise ResultBuildError(
            f"unknown algorithm family {family!r}; known: {', '.join(sorted(ALGORITHM_FAMILIES))}"
        ) from err
