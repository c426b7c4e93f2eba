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
from dataclasses import dataclass

import cv2
import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from dicom_node.errors import ResultBuildError
from dicom_node.imaging.windowing import BRAIN_WINDOW, apply_window
from dicom_node.pipelines.base import AlgorithmIdentity, PipelineResult
from dicom_node.results import codes
from dicom_node.results.equipment import EquipmentIdentity, contributing_equipment_for_algorithm
from dicom_node.results.seg import NOT_FOR_DIAGNOSTIC_USE, content_label_for, replay_warnings
from dicom_node.results.source import prepare_source_images, uid_or_new

logger = logging.getLogger(__name__)

#: The text of the banner on every overlay image.
BANNER_TEXT = "NOT FOR DIAGNOSTIC USE - AI RESULT"
#: Banner background (RGB): dark red, unlike every finding colour.
BANNER_RGB = (150, 0, 0)
#: Banner text colour (RGB).
BANNER_TEXT_RGB = (255, 255, 255)
#: Background of the legend and summary panels (RGB).
PANEL_RGB = (24, 24, 24)

_FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class OverlayLayout:
    """Geometry of a rendered overlay image (pixels).

    Parameters
    ----------
    scale : int
        Integer magnification of the slice (2 turns 512 x 512 into 1024 x 1024),
        so that outlines and text stay legible.
    banner_height_px : int
        Height of the banner at the top.
    legend_row_px : int
        Height of one legend or table row.
    outline_px : int
        Outline thickness.
    """

    scale: int = 2
    banner_height_px: int = 64
    legend_row_px: int = 40
    outline_px: int = 2


def _bgr(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    return (int(rgb[2]), int(rgb[1]), int(rgb[0]))


def wrap_text(text: str, width_px: int, *, scale: float = 0.7, thickness: int = 1) -> list[str]:
    """Split text into lines that fit a pixel width in OpenCV's Hershey simplex font.

    Parameters
    ----------
    text : str
        ASCII text; split at blanks (a single word wider than the line stays whole).
    width_px : int
        Largest line width in pixels.
    scale : float
        Font scale as passed to ``cv2.putText``.
    thickness : int
        Stroke thickness in pixels.

    Returns
    -------
    list of str
        At least one line (empty text gives ``[""]``).
    """
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and cv2.getTextSize(candidate, _FONT, scale, thickness)[0][0] > width_px:
            lines.append(line)
            line = word
        else:
            line = candidate
    lines.append(line)
    return lines


def _banner(width: int, layout: OverlayLayout) -> np.ndarray:
    """The banner strip, BGR uint8 of shape (banner_height_px, width, 3)."""
    strip = np.zeros((layout.banner_height_px, width, 3), dtype=np.uint8)
    strip[:] = _bgr(BANNER_RGB)
    scale = 1.0
    (text_w, text_h), _ = cv2.getTextSize(BANNER_TEXT, _FONT, scale, 2)
    while text_w > width - 20 and scale > 0.3:
        scale -= 0.05
        (text_w, text_h), _ = cv2.getTextSize(BANNER_TEXT, _FONT, scale, 2)
    origin = ((width - text_w) // 2, (layout.banner_height_px + text_h) // 2)
    cv2.putText(strip, BANNER_TEXT, origin, _FONT, scale, _bgr(BANNER_TEXT_RGB), 2, cv2.LINE_AA)
    return strip


def _text_panel(
    lines: Sequence[tuple[str, tuple[int, int, int] | None]], width: int, layout: OverlayLayout
) -> np.ndarray:
    """Rows of text, each optionally led by a colour swatch; BGR uint8."""
    height = layout.legend_row_px * max(len(lines), 1) + layout.legend_row_px // 2
    panel = np.zeros((height, width, 3), dtype=np.uint8)
    panel[:] = _bgr(PANEL_RGB)
    for row, (text, colour) in enumerate(lines):
        top = layout.legend_row_px // 4 + row * layout.legend_row_px
        x = 16
        if colour is not None:
            size = layout.legend_row_px // 2
            cv2.rectangle(panel, (x, top + 6), (x + size, top + 6 + size), _bgr(colour), -1)
            x += size + 14
        baseline = top + layout.legend_row_px // 2 + 10
        cv2.putText(panel, text, (x, baseline), _FONT, 0.7, (235, 235, 235), 1, cv2.LINE_AA)
    return panel


def finding_line(label: str, present: bool, volume_ml: float, laterality: str | None) -> str:
    """Return the legend text of one finding, such as ``"Intracranial hemorrhage (left): 8.46 mL"``.

    Parameters
    ----------
    label : str
        Finding label.
    present : bool
        Whether the finding is present.
    volume_ml : float
        Volume in mL.
    laterality : str or None
        ``"left"``, ``"right"``, ``"bilateral"`` or None.

    Returns
    -------
    str
        ASCII text (OpenCV's Hershey fonts draw ASCII only).
    """
    name = codes.finding_codes(label).segment_label
    side = f" ({laterality})" if laterality else ""
    if not present:
        return f"{name}: not detected ({volume_ml:.2f} mL)"
    return f"{name}{side}: {volume_ml:.2f} mL"


def render_key_slice(
    hu_slice: np.ndarray,
    masks: Sequence[np.ndarray],
    colours_rgb: Sequence[tuple[int, int, int]],
    legend: Sequence[str],
    caption: str,
    *,
    layout: OverlayLayout = OverlayLayout(),
) -> np.ndarray:
    """Render one slice in the brain window with coloured finding outlines and a legend.

    Parameters
    ----------
    hu_slice : numpy.ndarray
        float array of shape (rows, columns) in HU.
    masks : sequence of numpy.ndarray
        bool arrays of shape (rows, columns), one per finding.
    colours_rgb : sequence of tuple of int
        Outline colour (RGB, 0-255) of each mask.
    legend : sequence of str
        Legend line of each mask (ASCII).
    caption : str
        Extra legend line (slice number, algorithm).
    layout : OverlayLayout
        Sizes.

    Returns
    -------
    numpy.ndarray
        uint8 RGB image of shape (banner + scale x rows + legend, scale x
        columns, 3): banner on top, then the slice, then the legend.

    Raises
    ------
    ValueError
        If a mask does not have the slice's shape or the lists differ in length.

    References
    ----------
    PS3.3 C.11.2.1.2 (brain window: centre 40 HU, width 80 HU).
    """
    if not len(masks) == len(colours_rgb) == len(legend):
        raise ValueError("masks, colours and legend lines must have the same length")
    rows, columns = hu_slice.shape
    grey = apply_window(hu_slice, BRAIN_WINDOW)
    size = (columns * layout.scale, rows * layout.scale)
    grey = cv2.resize(grey, size, interpolation=cv2.INTER_LINEAR)
    image = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    for mask, colour in zip(masks, colours_rgb, strict=True):
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (rows, columns):
            raise ValueError(f"mask shape {mask.shape} differs from slice shape {(rows, columns)}")
        if not mask.any():
            continue
        big = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(image, contours, -1, _bgr(colour), layout.outline_px)
    lines: list[tuple[str, tuple[int, int, int] | None]] = [
        (text, colour) for text, colour in zip(legend, colours_rgb, strict=True)
    ]
    lines.append((caption, None))
    canvas = np.vstack([_banner(size[0], layout), image, _text_panel(lines, size[0], layout)])
    return cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)


#: Columns of the summary table: header and left edge as a fraction of the width.
SUMMARY_COLUMNS = (
    ("Finding", 0.0),
    ("Side", 0.42),
    ("Volume (mL)", 0.56),
    ("Probability", 0.72),
    ("Result", 0.87),
)


def finding_table_row(
    label: str, present: bool, volume_ml: float, laterality: str | None, probability: float | None
) -> tuple[str, str, str, str, str]:
    """Return the summary-table cells of one finding.

    Parameters
    ----------
    label : str
        Finding label.
    present : bool
        Whether the finding is present.
    volume_ml : float
        Volume in mL.
    laterality : str or None
        Side, when known.
    probability : float or None
        Probability in [0, 1], when the algorithm gives one.

    Returns
    -------
    tuple of str
        Finding, side, volume, probability, result (ASCII).
    """
    return (
        codes.finding_codes(label).segment_label,
        laterality or "-",
        f"{float(volume_ml):.2f}",
        "-" if probability is None else f"{float(probability):.2f}",
        "PRESENT" if present else "not detected",
    )


def render_summary(
    title: str,
    table: Sequence[tuple[tuple[str, ...], tuple[int, int, int] | None]],
    footer: Sequence[str],
    *,
    width: int = 1024,
    layout: OverlayLayout = OverlayLayout(),
) -> np.ndarray:
    """Render the summary image: banner, title, table of findings, footer.

    Parameters
    ----------
    title : str
        Title, for example ``"AI result (ICH): 1 finding(s) reported"``;
        wrapped over several lines when wider than the image.
    table : sequence of tuple
        (cells, swatch colour RGB or None) per table row; five cells are
        laid out in :data:`SUMMARY_COLUMNS`, one cell spans the row. An empty
        sequence draws no table.
    footer : sequence of str
        Lines after the table (algorithm, key slices, warning), each wrapped
        to the image width.
    width : int
        Image width in pixels.
    layout : OverlayLayout
        Sizes.

    Returns
    -------
    numpy.ndarray
        uint8 RGB image of shape (height, width, 3).
    """
    row_px = layout.legend_row_px
    margin, swatch = 16, row_px // 2
    title_lines = wrap_text(title, width - 2 * margin, thickness=2)
    footer_lines = [part for text in footer for part in wrap_text(text, width - 2 * margin)]
    body_rows = len(title_lines) + 1 + (len(table) + 1 if table else 0) + 1 + len(footer_lines)
    body = np.zeros((row_px * body_rows + row_px // 2, width, 3), dtype=np.uint8)
    body[:] = _bgr(PANEL_RGB)

    def put(text: str, x: int, row: int, bold: bool = False) -> None:
        baseline = row_px // 4 + row * row_px + row_px // 2 + 10
        cv2.putText(
            body, text, (x, baseline), _FONT, 0.7, (235, 235, 235), 2 if bold else 1, cv2.LINE_AA
        )

    for row, text in enumerate(title_lines):
        put(text, margin, row, bold=True)
    row = len(title_lines) + 1
    if table:
        left = margin + swatch + 14
        span = width - left - margin
        for header, fraction in SUMMARY_COLUMNS:
            put(header, left + int(fraction * span), row, bold=True)
        row += 1
        for cells, colour in table:
            if colour is not None:
                top = row_px // 4 + row * row_px + 6
                cv2.rectangle(
                    body, (margin, top), (margin + swatch, top + swatch), _bgr(colour), -1
                )
            if len(cells) == len(SUMMARY_COLUMNS):
                for cell, (_, fraction) in zip(cells, SUMMARY_COLUMNS, strict=True):
                    put(cell, left + int(fraction * span), row)
            else:
                put(" ".join(cells), left, row)
            row += 1
    row += 1
    for text in footer_lines:
        put(text, margin, row)
        row += 1
    canvas = np.vstack([_banner(width, layout), body])
    return cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)


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
