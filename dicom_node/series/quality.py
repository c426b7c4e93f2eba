"""Quality gates: is a selected series fit for analysis?

Selection (:mod:`dicom_node.series.selection`) decides from header values of
the first instance whether a series is the right *kind* of series. The gates
here run in the worker, before inference, on every instance and then on the
voxels, and decide whether this particular series can be analysed at all. A
failed gate is not an error of the node: the job still succeeds and delivers
a TID 1500 "not analysable" report that names the gate and the reason, so
the radiologist knows the study was looked at and why there is no result.

The gates, in the order they run:

``pixel_format``
    Every instance is single-frame, monochrome (MONOCHROME1/2, one sample),
    8 or 16 bits allocated, with Pixel Data, Rescale Slope and Intercept (so
    stored values become HU), one matrix size, and a transfer syntax a pixel
    decoder is installed for.
``orientation``
    Every Image Orientation (Patient) within ``orientation_tolerance_deg`` of
    the first: a tilted or reformatted slice mixed into an axial stack is
    caught here.
``slice_count``
    At least ``min_slices`` slices.
``missing_slices``
    No gap along the slice normal larger than ``max_gap_factor`` times the
    step expected there, and larger than ``min_gap_mm`` (a thin-slice
    series missing one slice keeps a step below the slab the ICH model
    reads). The expected step of two neighbours is the larger
    of the *modal* steps between slices of their Slice Thickness (the modal
    step of the whole series when thickness is absent). So a protocol that
    changes step with thickness, such as the GE head in the shared data
    (4 mm slices every 4 mm, then 7 mm slices every 7 mm, with a 1.08 mm
    overlap at the junction), passes, while one slice removed from either
    part (a step of 8 mm among 4 mm steps, 14 mm among 7 mm steps) fails.
    A slice removed exactly at a thickness junction, where the steps of the
    two parts meet, is caught only when the gap exceeds the factor times the
    larger step.
``field_of_view``
    On the HU volume: the cranial cavity, found as the region the skull
    (bone above ``bone_min_hu``) encloses slice by slice, must hold at least
    ``min_intracranial_ml``, and the first and last slices must cut it by at
    most ``max_end_area_fraction`` of its largest cross-section: a series
    that stops inside the head, or an in-plane field of view that cuts the
    skull (no closed ring, so no enclosed region), fails.

References
----------
PS3.3 C.7.6.2 Image Plane Module (Image Position/Orientation (Patient),
Slice Thickness); C.7.6.3 Image Pixel Module; C.8.2.1 CT Image Module
(Rescale Slope/Intercept); PS3.5 section 8 (encapsulated transfer syntaxes).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pydicom
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from dicom_node.series.volume import CTVolume

logger = logging.getLogger(__name__)

_SUPPORTED_PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2")


class QualitySettings(BaseModel):
    """Thresholds of the quality gates (``[quality]`` in the configuration).

    Parameters
    ----------
    enabled : bool
        Run the gates; when False every selected series is analysed.
    min_slices : int
        Fewest slices analysed.
    max_gap_factor : float
        A step along the normal larger than this times the expected step is a
        gap (missing slices).
    min_gap_mm : float
        Steps up to this (mm) are never gaps: in a thin-slice series one
        missing 0.625 mm slice leaves a 1.25 mm step, well inside the 5 mm
        slab the ICH model reads, so nothing is lost.
    orientation_tolerance_deg : float
        Largest angle (degrees) between the row or column direction of any
        slice and that of the first slice.
    min_intracranial_ml : float
        Smallest skull-enclosed volume (mL) of a head that is covered.
    max_end_area_fraction : float
        Largest skull-enclosed area of the first or last slice, as a fraction
        of the largest cross-section (a series ending inside the head fails).
    bone_min_hu : float
        HU above which a pixel is bone, for the field-of-view gate.
    skull_closing_mm : float
        Radius (mm) of the closing that seals sutures and foramina before the
        skull-enclosed region is filled.

    References
    ----------
    PS3.3 C.7.6.2 Image Plane Module.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    min_slices: int = Field(10, ge=1)
    max_gap_factor: float = Field(1.5, gt=1.0)
    min_gap_mm: float = Field(2.5, ge=0.0)
    orientation_tolerance_deg: float = Field(1.0, ge=0.0)
    min_intracranial_ml: float = Field(400.0, ge=0.0)
    max_end_area_fraction: float = Field(0.5, gt=0.0, le=1.0)
    bone_min_hu: float = 150.0
    skull_closing_mm: float = Field(5.0, ge=0.0)


@dataclass(frozen=True)
class QualityFailure:
    """A failed quality gate.

    Parameters
    ----------
    gate : str
        ``"pixel_format"``, ``"orientation"``, ``"slice_count"``,
        ``"missing_slices"``, ``"field_of_view"`` or ``"volume"`` (the
        series could not be assembled into a volume).
    reason : str
        What was found, in words a radiologist understands; UIDs and
        numbers only, no patient identifiers.
    """

    gate: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        """Return ``{"gate": ..., "reason": ...}`` for the job summary."""
        return {"gate": self.gate, "reason": self.reason}


@dataclass(frozen=True)
class SliceGap:
    """A gap between two neighbouring slices along the normal.

    Parameters
    ----------
    index : int
        0-based index of the lower slice of the pair in position order.
    step_mm : float
        Distance along the normal between the two slices (mm).
    expected_mm : float
        The step expected there (mm).
    """

    index: int
    step_mm: float
    expected_mm: float


def _modal(values: np.ndarray) -> float:
    """Mode of values rounded to 0.1 mm (ties: the smallest)."""
    rounded = np.round(np.asarray(values, dtype=float), 1)
    uniques, counts = np.unique(rounded, return_counts=True)
    return float(uniques[int(np.argmax(counts))])


def slice_gaps(
    positions_mm: np.ndarray,
    thicknesses_mm: Sequence[float | None],
    max_gap_factor: float,
    min_gap_mm: float = 0.0,
) -> list[SliceGap]:
    """Find steps along the normal larger than ``max_gap_factor`` times the expected step.

    Parameters
    ----------
    positions_mm : numpy.ndarray
        float array (slices,): position of each slice along the normal (mm),
        ascending.
    thicknesses_mm : sequence of float or None
        Slice Thickness of each slice (mm), same order; None where absent.
    max_gap_factor : float
        Factor above which a step is a gap.
    min_gap_mm : float
        A step must also exceed this (mm) to be a gap.

    Returns
    -------
    list of SliceGap
        The gaps, in position order.

    References
    ----------
    PS3.3 C.7.6.2.1.1 (positions along the normal), C.7.6.2 Slice Thickness.
    """
    positions = np.asarray(positions_mm, dtype=float)
    steps = np.diff(positions)
    if steps.size == 0:
        return []
    thickness = [None if t is None else round(float(t), 1) for t in thicknesses_mm]
    overall = _modal(steps)
    modal_by_thickness: dict[float | None, float] = {}
    for value in set(thickness):
        same = [steps[i] for i in range(steps.size) if thickness[i] == value == thickness[i + 1]]
        if value is None or not same:
            modal_by_thickness[value] = overall if value is None else max(value, overall)
        else:
            modal_by_thickness[value] = _modal(np.asarray(same))
    gaps = []
    for i, step in enumerate(steps.tolist()):
        expected = max(modal_by_thickness[thickness[i]], modal_by_thickness[thickness[i + 1]])
        if expected > 0 and step > max_gap_factor * expected and step > min_gap_mm:
            gaps.append(SliceGap(i, float(step), float(expected)))
    return gaps


def _decodable(transfer_syntax_uid: str) -> bool:
    from pydicom.pixels import get_decoder

    try:
        return bool(get_decoder(pydicom.uid.UID(transfer_syntax_uid)).is_available)
    except (NotImplementedError, ValueError, KeyError):
        return False


def _pixel_format_failure(datasets: Sequence[pydicom.Dataset]) -> QualityFailure | None:
    matrix = {(int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)) for ds in datasets}
    for index, ds in enumerate(datasets):
        where = f"instance {ds.get('SOPInstanceUID', index)}"
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
        bits = int(ds.get("BitsAllocated", 0) or 0)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        problems = []
        if "PixelData" not in ds:
            problems.append("no Pixel Data")
        if samples != 1 or photometric not in _SUPPORTED_PHOTOMETRIC:
            problems.append(
                f"{photometric or 'unknown'} with {samples} sample(s) per pixel "
                "(greyscale MONOCHROME1/2 expected)"
            )
        if bits not in (8, 16):
            problems.append(f"{bits} bits allocated (8 or 16 expected)")
        if frames != 1:
            problems.append(f"{frames} frames in one instance (single-frame expected)")
        if ds.get("RescaleSlope") in (None, "") or ds.get("RescaleIntercept") in (None, ""):
            problems.append("no Rescale Slope/Intercept, so no Hounsfield units")
        syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
        if syntax and not _decodable(syntax):
            problems.append(f"no decoder for transfer syntax {pydicom.uid.UID(syntax).name}")
        if problems:
            return QualityFailure(
                "pixel_format", f"unsupported pixel format in {where}: {'; '.join(problems)}"
            )
    if len(matrix) != 1:
        sizes = ", ".join(f"{r}x{c}" for r, c in sorted(matrix))
        return QualityFailure(
            "pixel_format", f"unsupported pixel format: mixed matrix sizes {sizes}"
        )
    return None


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    cosine = float(a @ b) / float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def _orientation_failure(
    datasets: Sequence[pydicom.Dataset], tolerance_deg: float
) -> QualityFailure | None:
    orientations = []
    for ds in datasets:
        value = ds.get("ImageOrientationPatient")
        if value is None or len(value) != 6:
            return QualityFailure(
                "orientation",
                f"instance {ds.get('SOPInstanceUID', '?')} has no Image Orientation (Patient)",
            )
        orientations.append(np.asarray([float(v) for v in value]))
    first = orientations[0]
    deviations = [
        max(_angle_deg(o[:3], first[:3]), _angle_deg(o[3:], first[3:])) for o in orientations
    ]
    off = [d for d in deviations if d > tolerance_deg]
    if off:
        return QualityFailure(
            "orientation",
            f"mixed orientations: {len(off)} of {len(datasets)} slices are tilted by up to "
            f"{max(off):.1f} deg against the first slice (tolerance {tolerance_deg:g} deg)",
        )
    return None


def check_series_headers(
    datasets: Sequence[pydicom.Dataset], settings: QualitySettings
) -> QualityFailure | None:
    """Run the header gates: pixel format, orientation, slice count, missing slices.

    Parameters
    ----------
    datasets : sequence of pydicom.Dataset
        The instances of one series, in any order (pixel data need not be
        decoded).
    settings : QualitySettings
        Thresholds.

    Returns
    -------
    QualityFailure or None
        The first gate that fails, None when all pass (or gates are disabled).

    References
    ----------
    PS3.3 C.7.6.2 Image Plane Module; C.7.6.3 Image Pixel Module; C.8.2.1
    CT Image Module.
    """
    if not settings.enabled:
        return None
    if not datasets:
        return QualityFailure("slice_count", "the series has no instance")
    failure = _pixel_format_failure(datasets)
    if failure is None:
        failure = _orientation_failure(datasets, settings.orientation_tolerance_deg)
    if failure is None and len(datasets) < settings.min_slices:
        failure = QualityFailure(
            "slice_count",
            f"too few slices: {len(datasets)}, at least {settings.min_slices} needed",
        )
    if failure is None:
        failure = _missing_slices_failure(datasets, settings.max_gap_factor, settings.min_gap_mm)
    if failure is not None:
        logger.info("quality gate %s failed: %s", failure.gate, failure.reason)
    return failure


def _missing_slices_failure(
    datasets: Sequence[pydicom.Dataset], max_gap_factor: float, min_gap_mm: float = 0.0
) -> QualityFailure | None:
    orientation = np.asarray([float(v) for v in datasets[0].ImageOrientationPatient])
    normal = np.cross(orientation[:3], orientation[3:])
    normal /= np.linalg.norm(normal)
    rows = []
    for ds in datasets:
        position = ds.get("ImagePositionPatient")
        if position is None or len(position) != 3:
            return QualityFailure(
                "missing_slices",
                f"instance {ds.get('SOPInstanceUID', '?')} has no Image Position (Patient)",
            )
        thickness = ds.get("SliceThickness")
        rows.append(
            (
                float(np.asarray([float(v) for v in position]) @ normal),
                None if thickness in (None, "") else float(thickness),
            )
        )
    rows.sort(key=lambda row: row[0])
    positions = np.asarray([row[0] for row in rows])
    duplicates = np.flatnonzero(np.diff(positions) < 1e-3)
    if duplicates.size:
        return QualityFailure(
            "missing_slices",
            f"two slices at the same position ({positions[duplicates[0]]:.2f} mm along the normal)",
        )
    gaps = slice_gaps(positions, [row[1] for row in rows], max_gap_factor, min_gap_mm)
    if not gaps:
        return None
    first = gaps[0]
    return QualityFailure(
        "missing_slices",
        f"missing slices: {len(gaps)} gap(s) along the slice normal; the first is "
        f"{first.step_mm:.1f} mm between slices {first.index + 1} and {first.index + 2} "
        f"where {first.expected_mm:.1f} mm is expected (limit {max_gap_factor:g}x)",
    )


def skull_enclosed_mask(volume: CTVolume, settings: QualitySettings) -> np.ndarray:
    """Return, slice by slice, the region the skull encloses (the cranial cavity).

    Parameters
    ----------
    volume : CTVolume
        The series in HU.
    settings : QualitySettings
        ``bone_min_hu`` and ``skull_closing_mm``.

    Returns
    -------
    numpy.ndarray
        bool array (slices, rows, columns): pixels inside a closed bone ring,
        the bone itself excluded. Whatever fills the cavity counts (brain,
        blood, or the air of an empty phantom skull).

    References
    ----------
    Muschelli J, et al. NeuroImage. 2015;114:379-385 (skull fill approach).
    """
    import cv2  # imported here: the settings import this module, the CLI should start fast
    from scipy import ndimage

    from dicom_node.series.kernels import disk_structuring_element

    bone = (volume.hu > settings.bone_min_hu).astype(np.uint8)
    kernel = disk_structuring_element(settings.skull_closing_mm, volume.pixel_spacing_mm)
    enclosed = np.zeros(bone.shape, dtype=bool)
    for k in range(bone.shape[0]):
        ring = cv2.morphologyEx(bone[k], cv2.MORPH_CLOSE, kernel) > 0
        enclosed[k] = ndimage.binary_fill_holes(ring) & ~ring
    return enclosed


def check_head_coverage(volume: CTVolume, settings: QualitySettings) -> QualityFailure | None:
    """Run the field-of-view gate on the HU volume.

    Parameters
    ----------
    volume : CTVolume
        The series in HU, slices in position order.
    settings : QualitySettings
        ``min_intracranial_ml``, ``max_end_area_fraction`` and the skull
        thresholds.

    Returns
    -------
    QualityFailure or None
        ``field_of_view`` when the cranial cavity is too small (the in-plane
        field of view cuts the skull, or the series covers only part of the
        head or no head) or when the first or last slice still cuts through
        the cavity; None when the head is covered or gates are disabled.

    References
    ----------
    PS3.3 C.7.6.2 Image Plane Module (Pixel Spacing, Slice Thickness).
    """
    if not settings.enabled:
        return None
    enclosed = skull_enclosed_mask(volume, settings)
    cavity_ml = volume.mask_volume_ml(enclosed)
    row_mm, col_mm = volume.pixel_spacing_mm
    area_cm2 = enclosed.reshape(len(enclosed), -1).sum(axis=1) * row_mm * col_mm / 100.0
    largest = float(area_cm2.max()) if area_cm2.size else 0.0
    failure = None
    if cavity_ml < settings.min_intracranial_ml:
        failure = QualityFailure(
            "field_of_view",
            f"the field of view does not cover the head: the skull encloses {cavity_ml:.0f} mL, "
            f"at least {settings.min_intracranial_ml:.0f} mL expected (skull cut in-plane, "
            "partial coverage, or not a head)",
        )
    else:
        for name, value in (("first", area_cm2[0]), ("last", area_cm2[-1])):
            if value > settings.max_end_area_fraction * largest:
                failure = QualityFailure(
                    "field_of_view",
                    f"the series stops inside the head: its {name} slice cuts the cranial "
                    f"cavity over {value:.0f} cm2 ({value / largest:.0%} of the largest "
                    f"cross-section, limit {settings.max_end_area_fraction:.0%})",
                )
                break
    if failure is not None:
        logger.info(
            "series %s: quality gate %s failed: %s",
            volume.series_instance_uid,
            failure.gate,
            failure.reason,
        )
    else:
        logger.debug(
            "series %s: cranial cavity %.0f mL, largest cross-section %.0f cm2",
            volume.series_instance_uid,
            cavity_ml,
            largest,
        )
    return failure
