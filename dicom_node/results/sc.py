"""Secondary Capture overlay series: the result as pictures, for viewers without SEG.

Many PACS viewers cannot display a DICOM SEG. For them the node renders the
result into ordinary images, stored as a Secondary Capture series in the
source study:

* **key slices** (at most ``max_key_slices``): first the slice where each
  present finding is largest (largest finding first), so that every subtype
  of a multi-finding result is shown while the limit allows, then the slices
  with the most segmented area; in the brain window (centre 40 HU, width
  80 HU), each finding drawn as a coloured outline (its SEG Recommended
  Display colour, one per finding label), with a legend naming each finding,
  its side and its volume in mL;
* **a summary image** with the table of findings (or "No intracranial
  hemorrhage detected", or "NOT ANALYSABLE: <reason>").

Every image carries a visible banner "NOT FOR DIAGNOSTIC USE - AI RESULT",
Burned In Annotation YES, and references its source slice (Source Image
Sequence, purpose DCM 121322). The images are single-frame SC Image Storage
(RGB, 8 bit), the SOP class every PACS stores and displays.

This module chooses the key slices and builds the SC datasets; the images
are drawn by :mod:`dicom_node.results.sc_render` (outlines, legend, table,
banner), whose public names are importable from here too.

References
----------
PS3.3 A.8.1 Secondary Capture Image IOD; C.8.6.1 SC Equipment Module;
C.7.6.1 General Image Module (Burned In Annotation, Patient Orientation);
C.12.4 General Reference Module (Source Image Sequence); PS3.3 C.11.2.1.2
Window Center and Window Width; PS3.16 CID 7202; IHE AIR.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from dicom_node.errors import ResultBuildError
from dicom_node.pipelines.base import AlgorithmIdentity, PipelineResult
from dicom_node.results import codes
from dicom_node.results.equipment import EquipmentIdentity, contributing_equipment_for_algorithm

# The rendering of the images has a module of its own (issue 14); its names stay
# importable from here.
from dicom_node.results.sc_render import BANNER_RGB as BANNER_RGB
from dicom_node.results.sc_render import BANNER_TEXT as BANNER_TEXT
from dicom_node.results.sc_render import BANNER_TEXT_RGB as BANNER_TEXT_RGB
from dicom_node.results.sc_render import PANEL_RGB as PANEL_RGB
from dicom_node.results.sc_render import SUMMARY_COLUMNS as SUMMARY_COLUMNS
from dicom_node.results.sc_render import (
    OverlayLayout,
    finding_line,
    finding_table_row,
    render_key_slice,
    render_summary,
)
from dicom_node.results.sc_render import wrap_text as wrap_text
from dicom_node.results.seg import NOT_FOR_DIAGNOSTIC_USE, content_label_for, replay_warnings
from dicom_node.results.source import prepare_source_images, uid_or_new

logger = logging.getLogger(__name__)


def patient_orientation(image_orientation: Sequence[float]) -> tuple[str, str]:
    """Return Patient Orientation (row, column) letters of an image plane.

    Parameters
    ----------
    image_orientation : sequence of float
        Image Orientation (Patient): row then column direction cosines (6 values).

    Returns
    -------
    tuple of str
        The dominant patient direction of the rows and of the columns, one of
        L, R, A, P, H, F each (for a tilted axial slice, ``("L", "P")``).

    References
    ----------
    PS3.3 C.7.6.1.1.1 Patient Orientation.
    """
    letters = (("L", "R"), ("P", "A"), ("H", "F"))

    def letter(vector: Sequence[float]) -> str:
        axis = int(np.argmax(np.abs(vector)))
        return letters[axis][0] if vector[axis] > 0 else letters[axis][1]

    values = [float(v) for v in image_orientation]
    return letter(values[:3]), letter(values[3:])


def key_slice_indices(result: PipelineResult, max_key_slices: int) -> list[int]:
    """Choose the key slices: every present finding shown if possible, then the largest areas.

    First, for each present finding in order of decreasing segmented voxel
    count, the slice where its area is largest (so that a result with several
    hemorrhage subtypes shows each one while ``max_key_slices`` allows);
    then the remaining slices by total segmented area.

    Parameters
    ----------
    result : dicom_node.pipelines.base.PipelineResult
        Findings with masks of shape (slices, rows, columns).
    max_key_slices : int
        Largest number of key slices.

    Returns
    -------
    list of int
        Slice indices, ascending; empty when no finding is present or every
        mask is empty.
    """
    present = [np.asarray(f.mask, dtype=bool) for f in result.findings if f.present]
    if not present or max_key_slices <= 0:
        return []
    per_slice = np.stack([m.reshape(len(m), -1).sum(axis=1) for m in present])  # (findings, slices)
    chosen: list[int] = []
    for finding in np.argsort(-per_slice.sum(axis=1), kind="stable"):
        areas = per_slice[finding]
        best = int(np.argmax(areas))
        if areas[best] > 0 and best not in chosen and len(chosen) < max_key_slices:
            chosen.append(best)
    area = per_slice.sum(axis=0)
    for index in np.argsort(-area, kind="stable"):
        if len(chosen) >= max_key_slices or area[index] <= 0:
            break
        if int(index) not in chosen:
            chosen.append(int(index))
    return sorted(chosen)


#: Patient and study attributes the SC copies from its source when present, as
#: highdicom's SEG and SR do, so every result object of a study repeats the same values
#: (PS3.3 C.7.1.1 Patient, C.7.2.1 General Study, C.7.2.2 Patient Study; checked by dcentvfy).
PATIENT_STUDY_KEYWORDS = (
    "StudyDescription",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "IssuerOfPatientID",
    "OtherPatientIDsSequence",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "EthnicGroup",
    "PatientComments",
    "AdmittingDiagnosesDescription",
    "ReferringPhysicianName",
    "AccessionNumber",
    "StudyID",
)


def _secondary_capture(
    reference: Dataset,
    pixels: np.ndarray,
    *,
    orientation: tuple[str, str] | None,
    series_instance_uid: str,
    series_number: int,
    instance_number: int,
    series_description: str,
    comment: str,
    source: Dataset | None,
    equipment: EquipmentIdentity,
    algorithm: AlgorithmIdentity,
) -> hd.sc.SCImage:
    """Wrap one rendered RGB image as an SC Image Storage instance."""
    sop_instance_uid = str(hd.UID())
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            image = hd.sc.SCImage.from_ref_dataset(
                ref_dataset=reference,
                pixel_array=pixels,
                photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
                bits_allocated=8,
                coordinate_system=hd.CoordinateSystemNames.PATIENT,
                series_instance_uid=series_instance_uid,
                series_number=series_number,
                sop_instance_uid=sop_instance_uid,
                instance_number=instance_number,
                manufacturer=equipment.manufacturer,
                patient_orientation=orientation or ("L", "P"),
                transfer_syntax_uid=ExplicitVRLittleEndian,
                contributing_equipment=[contributing_equipment_for_algorithm(equipment, algorithm)],
            )
    except (TypeError, ValueError, AttributeError, KeyError) as err:
        raise ResultBuildError(f"highdicom rejected the secondary capture: {err}") from err
    replay_warnings(caught, sop_instance_uid, logger)
    for keyword in PATIENT_STUDY_KEYWORDS:
        if keyword in reference and keyword not in image:
            image[keyword] = copy.deepcopy(reference[keyword])
    if orientation is None:
        # Type 2: a table has no patient orientation (pydicom's typed keywords omit None)
        image.PatientOrientation = None  # type: ignore[assignment]
    body_part = str(reference.get("BodyPartExamined", "") or "").strip()
    if body_part:
        # Tells validators the body part, so the Type 2C Laterality may be absent
        # (the head is not a paired structure).
        image.BodyPartExamined = body_part
    elif "Laterality" not in image:
        # General Series Type 2C: unknown body part, empty (pydicom's typed keywords omit None)
        image.Laterality = None  # type: ignore[assignment]
    image.ManufacturerModelName = equipment.manufacturer_model_name
    image.SoftwareVersions = equipment.software_versions
    image.DeviceSerialNumber = equipment.device_serial_number
    if equipment.institution_name:
        image.InstitutionName = equipment.institution_name
    image.SeriesDescription = series_description
    image.ConversionType = "WSD"  # rendered on a workstation
    image.BurnedInAnnotation = "YES"
    image.ImageComments = comment[:10240]
    image.DerivationDescription = (
        f"Rendered by {equipment.manufacturer_model_name} from {algorithm.name} "
        f"{algorithm.version} results; brain window 40/80 HU"
    )[:1024]
    if source is not None:
        item = Dataset()
        item.ReferencedSOPClassUID = source.SOPClassUID
        item.ReferencedSOPInstanceUID = source.SOPInstanceUID
        purpose = codes.SOURCE_IMAGE_FOR_PROCESSING
        item.PurposeOfReferenceCodeSequence = [
            hd.sr.CodedConcept(purpose.value, purpose.scheme_designator, purpose.meaning)
        ]
        image.SourceImageSequence = [item]
    return image


def build_overlay_series(
    source_images: Sequence[Dataset],
    hu: np.ndarray,
    result: PipelineResult,
    *,
    equipment: EquipmentIdentity,
    max_key_slices: int = 4,
    series_number: int = 9903,
    series_instance_uid: str | None = None,
    layout: OverlayLayout = OverlayLayout(),
) -> list[hd.sc.SCImage]:
    """Build the Secondary Capture overlay series of a result.

    Parameters
    ----------
    source_images : sequence of pydicom.Dataset
        The source series (headers suffice), in the slice order of ``hu`` and
        of the masks. Not modified.
    hu : numpy.ndarray
        float array of shape (slices, rows, columns) in HU.
    result : dicom_node.pipelines.base.PipelineResult
        Findings with masks on the same grid, volumes in mL.
    equipment : EquipmentIdentity
        The node (General Equipment; the algorithm is Contributing Equipment).
    max_key_slices : int
        Largest number of key-slice images.
    series_number : int
        Series Number of the overlay series.
    series_instance_uid : str or None
        Series Instance UID; new when None.
    layout : OverlayLayout
        Image geometry.

    Returns
    -------
    list of highdicom.sc.SCImage
        The key slices (Instance Number 1..k, slice order), then the summary
        image (last instance). All in the source study.

    Raises
    ------
    dicom_node.errors.ResultBuildError
        If ``hu`` or a mask does not match the source grid, a label has no
        codes, or highdicom rejects the input.
    dicom_node.errors.InvalidUIDError
        If ``series_instance_uid`` is not valid.

    References
    ----------
    PS3.3 A.8.1 Secondary Capture Image IOD; IHE AIR.
    """
    started = time.perf_counter()
    sources = prepare_source_images(source_images)
    hu = np.asarray(hu)
    shape = (len(sources), int(sources[0].Rows), int(sources[0].Columns))
    if hu.shape != shape:
        raise ResultBuildError(f"HU array has shape {hu.shape}, expected {shape}")
    for finding in result.findings:
        if np.asarray(finding.mask).shape != shape:
            raise ResultBuildError(f"mask of {finding.label} is not on the source grid {shape}")
    series_instance_uid = uid_or_new("SeriesInstanceUID", series_instance_uid)
    label = content_label_for(result.pipeline)
    description = f"AI {label} overlay {NOT_FOR_DIAGNOSTIC_USE}"
    colours = [codes.finding_codes(f.label).recommended_display_rgb for f in result.findings]
    legend = [finding_line(f.label, f.present, f.volume_ml, f.laterality) for f in result.findings]
    algorithm_text = f"{result.algorithm.name} {result.algorithm.version}"
    images = []
    key_slices = key_slice_indices(result, max_key_slices)
    for number, index in enumerate(key_slices, start=1):
        caption = f"Slice {index + 1} of {shape[0]} - {algorithm_text} - not for diagnostic use"
        pixels = render_key_slice(
            hu[index],
            [np.asarray(f.mask[index], dtype=bool) for f in result.findings],
            colours,
            legend,
            caption,
            layout=layout,
        )
        source = sources[index]
        images.append(
            _secondary_capture(
                source,
                pixels,
                orientation=patient_orientation(source.ImageOrientationPatient),
                series_instance_uid=series_instance_uid,
                series_number=series_number,
                instance_number=number,
                series_description=description,
                comment=f"AI result, not for diagnostic use. {'; '.join(legend)}",
                source=source,
                equipment=equipment,
                algorithm=result.algorithm,
            )
        )
    table = [
        (finding_table_row(f.label, f.present, f.volume_ml, f.laterality, f.probability), colour)
        for f, colour in zip(result.findings, colours, strict=True)
    ]
    if any(f.present for f in result.findings):
        title = f"AI result ({label}): " + "; ".join(
            finding_line(f.label, f.present, f.volume_ml, f.laterality)
            for f in result.findings
            if f.present
        )
    else:
        title = f"AI result ({label}): " + "; ".join(
            f"no {codes.finding_codes(f.label).segment_label.lower()} detected"
            for f in result.findings
        )
    summary = render_summary(
        title,
        table,
        [
            f"Algorithm: {algorithm_text}",
            f"Key slices: {', '.join(str(i + 1) for i in key_slices) or 'none'}",
            "Volumes in mL. Outlines and volumes are machine-generated.",
        ],
        width=shape[2] * layout.scale,
        layout=layout,
    )
    images.append(
        _secondary_capture(
            sources[0],
            summary,
            orientation=None,
            series_instance_uid=series_instance_uid,
            series_number=series_number,
            instance_number=len(images) + 1,
            series_description=description,
            comment=f"AI result summary, not for diagnostic use. {'; '.join(legend)}",
            source=None,
            equipment=equipment,
            algorithm=result.algorithm,
        )
    )
    logger.info(
        "built SC overlay series %s: %d key slice(s) + summary in %.2f s",
        series_instance_uid,
        len(key_slices),
        time.perf_counter() - started,
    )
    return images


def build_not_analysable_overlay(
    source_images: Sequence[Dataset],
    *,
    pipeline: str,
    algorithm: AlgorithmIdentity,
    reason: str,
    equipment: EquipmentIdentity,
    series_number: int = 9903,
    series_instance_uid: str | None = None,
    width: int = 1024,
    layout: OverlayLayout = OverlayLayout(),
) -> list[hd.sc.SCImage]:
    """Build a one-image SC series saying the series was not analysable, and why.

    Parameters
    ----------
    source_images : sequence of pydicom.Dataset
        The series (headers suffice).
    pipeline : str
        Pipeline name.
    algorithm : dicom_node.pipelines.base.AlgorithmIdentity
        The algorithm that would have run.
    reason : str
        Why (no patient identifiers).
    equipment : EquipmentIdentity
        The node.
    series_number : int
        Series Number.
    series_instance_uid : str or None
        Series Instance UID; new when None.
    width : int
        Image width in pixels.
    layout : OverlayLayout
        Sizes.

    Returns
    -------
    list of highdicom.sc.SCImage
        One summary image.

    Raises
    ------
    dicom_node.errors.ResultBuildError
        If highdicom rejects the input.

    References
    ----------
    PS3.3 A.8.1 Secondary Capture Image IOD.
    """
    sources = prepare_source_images(source_images, require_geometry=False)
    series_instance_uid = uid_or_new("SeriesInstanceUID", series_instance_uid)
    label = content_label_for(pipeline)
    words = reason.split()
    wrapped, line = [], ""
    for word in words:
        if len(line) + len(word) + 1 > 70:
            wrapped.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    wrapped.append(line)
    summary = render_summary(
        f"AI result ({label}): NOT ANALYSABLE - the series was not analysed",
        [],
        [*wrapped, "", f"Algorithm: {algorithm.name} {algorithm.version}"],
        width=width,
        layout=layout,
    )
    return [
        _secondary_capture(
            sources[0],
            summary,
            orientation=None,
            series_instance_uid=series_instance_uid,
            series_number=series_number,
            instance_number=1,
            series_description=f"AI {label} overlay {NOT_FOR_DIAGNOSTIC_USE}",
            comment=f"Not analysable: {reason}. AI result, not for diagnostic use.",
            source=None,
            equipment=equipment,
            algorithm=algorithm,
        )
    ]
