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
* Hemorrhage subtypes: a subtype is coded only with a source checked for it.
  Pre-coordinated SNOMED CT disorders are used for subarachnoid hemorrhage
  (SCT 21454007) and intraparenchymal (cerebral) hemorrhage (SCT 274100004):
  both appear with those fully specified names in the RES-Q stroke FHIR
  implementation guide value set expanded by tx.fhir.org from SNOMED CT
  International (2025-02) (repository ``tecnomod-um/RES-Q-FHIR-IG``), and
  274100004 also as "Cerebral hemorrhage" in the OHDSI LEGEND hemorrhagic
  stroke concept set. Intraventricular hemorrhage is post-coordinated: the
  finding is SCT 50960005 "Hemorrhage" (CID 7151) and the site SCT 35764002
  "Brain ventricle" (CID 7151/7153), both DICOM concepts.
* Subdural hemorrhage: SCT 35486000. Two independent public sources name
  this code for it: the MR-RATE pathology-to-SNOMED CT mapping ("SNOMED CT:
  35486000 (Subdural intracranial hemorrhage)", as quoted in a public MR-RATE
  research workspace), and the OHDSI Athena OMOP vocabulary (an Athena-built
  concept list labels "SNOMED/35486000" "Subdural hemorrhage"). The rival
  candidate SCT 95455008 is ruled out: the same tx.fhir.org expansion of
  SNOMED CT International 2025-02 used for 21454007 lists it as "Thrombosis
  of cerebral veins (disorder)" (``tecnomod-um/RES-Q-FHIR-IG``;
  ``tecnomod-um/SK-FHIR-IG`` ``input/pagecontent/valuesets-StrokeDiagnosisVS.md``).
  Both naming sources are second-hand (quoted in public code whose
  repository the search index did not name; the MR-RATE file itself was
  not seen), so confirm the code in a SNOMED CT browser when one is
  reachable. DICOM has no "subdural space" concept, so the finding site and the SEG
  anatomic region are SCT 1101003 "Intracranial" (CID 4/7151): true, if
  less specific than the finding itself.
* Epidural hemorrhage: not settled as a pre-coordinated concept. Only one
  public source was found for a code (SCT 82999001 "Epidural intracranial
  hemorrhage", the same Athena-built list); the other candidates seen in
  public code (68752002, 75063001, 83329005) appear without a fully
  specified name or in unsourced hobby mappings, and no SNOMED CT browser
  was reachable. It is therefore post-coordinated from DICOM concepts only:
  the finding is SCT 50960005 "Hemorrhage" (CID 7151) and the site SCT
  1101003 "Intracranial" (CID 4/7151). A site of SCT 18545000 "Dura mater"
  (CID 7151) was rejected as wrong: an epidural bleed lies outside the dura
  (between the dura and the skull), not in it, and DICOM lists no "epidural
  (extradural) space". The coded meaning is thus "intracranial hemorrhage";
  what makes it epidural is the segment label "Epidural hemorrhage", the
  tracking identifier ("EDH-n") and the report text. Replace it with the
  pre-coordinated disorder once a second source confirms the code.
* Laterality: CID 244 (SCT 7771000 Left, 24028007 Right, 51440002 Bilateral),
  used as the TID 1411 Finding Site laterality (concept name SCT 272741003
  "Laterality") and as the SEG Anatomic Region Modifier (CID 2 lists the same
  three concepts).
* Vessels and occlusion (for CT angiography pipelines): the arteries are the
  SNOMED CT concepts of CID 12105 "Intracranial Cerebral Vessel" and CID 7151
  (internal carotid artery, MCA and its M1/M2 segments, ACA, basilar artery,
  PCA); "occlusion" is SCT 26036001 from CID 3810 "Vascular Morphology". All
  come from pydicom's PS3.16 dictionary (a unit test checks each).
* Report-level statements (TID 1500 rows 12-14, "Qualitative Evaluations",
  UMLS C0034375): the finding with Present/Absent, or with SCT 373121007
  "Not Evaluated" when the series was not analysable, and a TEXT "Comment"
  (DCM 121106) that says it in words. DCMTK's TID 1500 implementation accepts
  a report whose only content is this container (its validity check asks for
  Imaging Measurements *or* Qualitative Evaluations), which is how the
  "not analysable" report is built.

References
----------
PS3.16 CID 2, CID 4, CID 100, CID 240, CID 244, CID 270, CID 3810, CID 7005,
CID 7150, CID 7151, CID 7153, CID 7162, CID 7181, CID 7469, CID 12105;
PS3.16 TID 1500, TID 1411, TID 4019;
PS3.3 C.8.20.2 Segmentation Image Module (Segment Description Macro).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.sr.coding import Code

from dicom_node.errors import ResultBuildError

# --- Segmentation: segmented property category (CID 7150) -------------------
MORPHOLOGICALLY_ABNORMAL_STRUCTURE = Code("49755003", "SCT", "Morphologically Abnormal Structure")
ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical Structure")  # CID 7150

# --- Segmentation: segmented property type (CID 7151) ------------------------
HEMORRHAGE = Code("50960005", "SCT", "Hemorrhage")

# --- Anatomic region of a segment / TID 1411 finding site (CID 4, CID 7151) --
INTRACRANIAL = Code("1101003", "SCT", "Intracranial")
BRAIN = Code("12738006", "SCT", "Brain")
SUBARACHNOID_SPACE = Code("35951006", "SCT", "Subarachnoid space")  # CID 7151 only
BRAIN_VENTRICLE = Code("35764002", "SCT", "Brain ventricle")  # CID 7151, CID 7153
# CID 7140 only; kept for reference, not used (see the module docstring).
INTRACRANIAL_STRUCTURE = Code("128319008", "SCT", "Intracranial structure")

# --- Findings: TID 1411 "Finding" value and qualitative-evaluation name ------
# SNOMED CT disorders; not in a DICOM CID (TID 1411 leaves the value open).
# 1386000: pydicom's PS3.16 dictionary ("Intracranial hemorrhage (disorder)").
INTRACRANIAL_HEMORRHAGE = Code("1386000", "SCT", "Intracranial hemorrhage")
# 21454007 "Subarachnoid intracranial hemorrhage (disorder)": RES-Q FHIR IG value
# set expanded by tx.fhir.org from SNOMED CT International 2025-02.
SUBARACHNOID_HEMORRHAGE = Code("21454007", "SCT", "Subarachnoid hemorrhage")
# 274100004 "Cerebral hemorrhage (disorder)": same value set; OHDSI LEGEND concept set.
CEREBRAL_HEMORRHAGE = Code("274100004", "SCT", "Cerebral hemorrhage")
# 35486000 "Subdural intracranial hemorrhage": MR-RATE SNOMED CT mapping; OHDSI Athena
# ("Subdural hemorrhage"). Not 95455008 (= "Thrombosis of cerebral veins (disorder)").
SUBDURAL_HEMORRHAGE = Code("35486000", "SCT", "Subdural hemorrhage")
# Epidural hemorrhage has no settled pre-coordinated code: HEMORRHAGE at INTRACRANIAL.

# --- Laterality (CID 244; also CID 2 "Anatomic Modifier") ---------------------
LATERALITY = Code("272741003", "SCT", "Laterality")  # concept name, TID 1411 finding site
LEFT = Code("7771000", "SCT", "Left")
RIGHT = Code("24028007", "SCT", "Right")
BILATERAL = Code("51440002", "SCT", "Bilateral")

# --- Intracranial arteries (CID 12105 "Intracranial Cerebral Vessel", CID 7151) ---
INTERNAL_CAROTID_ARTERY = Code("86117002", "SCT", "Internal carotid artery")  # CID 7151
TERMINAL_INTERNAL_CAROTID_ARTERY = Code("415646005", "SCT", "Terminal internal carotid artery")
MIDDLE_CEREBRAL_ARTERY = Code("17232002", "SCT", "Middle cerebral artery")
MIDDLE_CEREBRAL_ARTERY_M1 = Code("414722000", "SCT", "Middle cerebral artery M1 segment")
MIDDLE_CEREBRAL_ARTERY_M2 = Code("414723005", "SCT", "Middle cerebral artery M2 segment")
ANTERIOR_CEREBRAL_ARTERY = Code("60176003", "SCT", "Anterior cerebral artery")
BASILAR_ARTERY = Code("59011009", "SCT", "Basilar artery")  # CID 7151
POSTERIOR_CEREBRAL_ARTERY = Code("70382005", "SCT", "Posterior cerebral artery")
# CT angiography vessel map: CID 4, CID 7151.
CEREBRAL_ARTERY = Code("88556005", "SCT", "Cerebral artery")

# --- Vascular morphology (CID 3810) and segmentable abnormalities (CID 7151) ---
OCCLUSION = Code("26036001", "SCT", "Occlusion")  # CID 3810 "Vascular Morphology"
THROMBUS = Code("396339007", "SCT", "Thrombus")  # CID 7151

# --- CT angiography report additions (cta pipeline; kept together, edit as a block) ---
# Left-right asymmetry of the MCA vessel volume (lower over higher side), a TID 1419/300
# NUM: DCM 113288 "Volume Ratio" (CID 218 "Quantitative Image Feature", CID 7180, CID 7469)
# in UCUM "{ratio}" (CID 7181); both from pydicom's PS3.16 dictionary.
VOLUME_RATIO = Code("113288", "DCM", "Volume Ratio")
RATIO = Code("{ratio}", "UCUM", "ratio")
# TID 1500 "Procedure reported" of a head CTA (extends CID 100). No LOINC code for a head
# CT angiogram is in pydicom's PS3.16 dictionary; SCT 582101000119108 "Computed
# tomography angiography of head with contrast (procedure)" is the SNOMED CT Editorial
# Guide's example of its CTA naming pattern (confluence.ihtsdotools.org, DOCEG "Computed
# Tomography - CT"). It lies in the US extension namespace (1000119), not the
# International release.
CT_ANGIOGRAPHY_HEAD = Code("582101000119108", "SCT", "CT angiography of head with contrast")
#: Extra TID 1411 measurements a pipeline may name in ``details["sr"]``: (concept, unit).
EXTRA_MEASUREMENTS: dict[str, tuple[Code, Code]] = {"volume ratio": (VOLUME_RATIO, RATIO)}
#: TID 1500 "Procedure reported" per pipeline name; CT_HEAD for any other pipeline.
PROCEDURES_REPORTED: dict[str, Code] = {"cta": CT_ANGIOGRAPHY_HEAD}
# TID 1410 "Geometric purpose of region" (DCM 130400) of the suspected occlusion's location,
# a SCOORD3D POINT: DCM 128140 "Representative point", CID 219 "Geometry Graphical
# Representation" in pydicom's PS3.16 dictionary (the point stands for the finding; it is
# not the centre of a measured region).
REPRESENTATIVE_POINT = Code("128140", "DCM", "Representative point")
# --- end of CT angiography report additions ---

# --- Report-level qualitative evaluations (TID 1500 rows 12-14) ----------------
QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")  # TID 1500
NOT_EVALUATED = Code("373121007", "SCT", "Not Evaluated")  # SCT qualifier; DICOM CID 3703
COMMENT = Code("121106", "DCM", "Comment")  # DCM concept

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

# --- Secondary Capture source image purpose of reference (CID 7202) ----------
SOURCE_IMAGE_FOR_PROCESSING = Code("121322", "DCM", "Source image for image processing operation")

# --- SR observation context (TID 1002 Observer Type, CID 270) ----------------
DEVICE_OBSERVER = Code("121007", "DCM", "Device")

# --- SR procedure reported (TID 1500 row 4; extends CID 100) -----------------
CT_HEAD = Code("24725-4", "LN", "CT Head")

# --- SR document title (TID 1500 row 1, CID 7021) ----------------------------
IMAGING_MEASUREMENT_REPORT = Code("126000", "DCM", "Imaging Measurement Report")

LATERALITIES: dict[str, Code] = {"left": LEFT, "right": RIGHT, "bilateral": BILATERAL}

#: Anatomic sites a finding may name instead of its default site (``SegmentFinding.finding_site``).
ANATOMIC_SITES: dict[str, Code] = {
    "intracranial": INTRACRANIAL,
    "brain": BRAIN,
    "subarachnoid space": SUBARACHNOID_SPACE,
    "brain ventricle": BRAIN_VENTRICLE,
    "internal carotid artery": INTERNAL_CAROTID_ARTERY,
    "terminal internal carotid artery": TERMINAL_INTERNAL_CAROTID_ARTERY,
    "middle cerebral artery": MIDDLE_CEREBRAL_ARTERY,
    "middle cerebral artery m1 segment": MIDDLE_CEREBRAL_ARTERY_M1,
    "middle cerebral artery m2 segment": MIDDLE_CEREBRAL_ARTERY_M2,
    "anterior cerebral artery": ANTERIOR_CEREBRAL_ARTERY,
    "basilar artery": BASILAR_ARTERY,
    "posterior cerebral artery": POSTERIOR_CEREBRAL_ARTERY,
}

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
    # Post-coordinated: Hemorrhage (CID 7151), intracranial (CID 4); see the module docstring.
    "epidural hemorrhage": FindingCodes(
        label="epidural hemorrhage",
        segment_label="Epidural hemorrhage",
        abbreviation="EDH",
        segmented_property_category=MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
        segmented_property_type=HEMORRHAGE,
        anatomic_region=INTRACRANIAL,
        finding_type=HEMORRHAGE,
        finding_site=INTRACRANIAL,
        recommended_display_rgb=(0, 200, 0),
    ),
    # SCT 35486000; DICOM has no subdural space, so the site is Intracranial (CID 4).
    "subdural hemorrhage": FindingCodes(
        label="subdural hemorrhage",
        segment_label="Subdural hemorrhage",
        abbreviation="SDH",
        segmented_property_category=MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
        segmented_property_type=HEMORRHAGE,
        anatomic_region=INTRACRANIAL,
        finding_type=SUBDURAL_HEMORRHAGE,
        finding_site=INTRACRANIAL,
        recommended_display_rgb=(0, 255, 255),
    ),
    # Post-coordinated: Hemorrhage (CID 7151) at Brain ventricle (CID 7151).
    "intraventricular hemorrhage": FindingCodes(
        label="intraventricular hemorrhage",
        segment_label="Intraventricular hemorrhage",
        abbreviation="IVH",
        segmented_property_category=MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
        segmented_property_type=HEMORRHAGE,
        anatomic_region=BRAIN_VENTRICLE,
        finding_type=HEMORRHAGE,
        finding_site=BRAIN_VENTRICLE,
        recommended_display_rgb=(0, 160, 255),
    ),
    # CT angiography: an occluded artery segment (the site names the artery).
    "vessel occlusion": FindingCodes(
        label="vessel occlusion",
        segment_label="Vessel occlusion",
        abbreviation="OCC",
        segmented_property_category=MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
        segmented_property_type=THROMBUS,
        anatomic_region=MIDDLE_CEREBRAL_ARTERY,
        finding_type=OCCLUSION,
        finding_site=MIDDLE_CEREBRAL_ARTERY,
        recommended_display_rgb=(255, 255, 0),
    ),
    # CT angiography: the segmented vessel tree (an anatomical structure, not a lesion).
    "cerebral arteries": FindingCodes(
        label="cerebral arteries",
        segment_label="Cerebral arteries",
        abbreviation="ART",
        segmented_property_category=ANATOMICAL_STRUCTURE,
        segmented_property_type=CEREBRAL_ARTERY,
        anatomic_region=INTRACRANIAL,
        finding_type=CEREBRAL_ARTERY,
        finding_site=INTRACRANIAL,
        recommended_display_rgb=(255, 64, 64),
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


def laterality_code(laterality: str) -> Code:
    """Return the CID 244 code of a laterality key.

    Parameters
    ----------
    laterality : str
        ``"left"``, ``"right"`` or ``"bilateral"``; case and blanks ignored.

    Returns
    -------
    pydicom.sr.coding.Code
        SCT 7771000 Left, SCT 24028007 Right or SCT 51440002 Bilateral.

    Raises
    ------
    dicom_node.errors.ResultBuildError
        If the key is unknown.

    References
    ----------
    PS3.16 CID 244 Laterality, CID 2 Anatomic Modifier.
    """
    key = " ".join(str(laterality).split()).lower()
    try:
        return LATERALITIES[key]
    except KeyError as err:
        raise ResultBuildError(
            f"unknown laterality {laterality!r}; known: {', '.join(sorted(LATERALITIES))}"
        ) from err


def anatomic_site_code(site: str) -> Code:
    """Return the code of an anatomic site key (finding site of a finding).

    Parameters
    ----------
    site : str
        A key of :data:`ANATOMIC_SITES`, for example ``"basilar artery"``;
        case and blanks ignored.

    Returns
    -------
    pydicom.sr.coding.Code
        The SNOMED CT body structure (CID 4, CID 7151 or CID 12105).

    Raises
    ------
    dicom_node.errors.ResultBuildError
        If the key is unknown.

    References
    ----------
    PS3.16 CID 4, CID 7151, CID 12105; TID 1411 Finding Site.
    """
    key = " ".join(str(site).split()).lower()
    try:
        return ANATOMIC_SITES[key]
    except KeyError as err:
        raise ResultBuildError(
            f"unknown anatomic site {site!r}; known: {', '.join(sorted(ANATOMIC_SITES))}"
        ) from err
