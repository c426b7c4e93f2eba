"""Synthetic lesions blended into real CT series, with exact ground truth.

There is no public head CT with hemorrhage ground truth in the project's
test data, so tests, demos and training insert lesions of known shape,
position and density into real scans. The lesion is an ellipsoid in patient
coordinates (LPS mm), so it is the same physical object whatever the slice
geometry; it is blended with partial volume: each slice integrates the
ellipsoid over its thickness along the normal, as a CT slice does. Pixels
are written back as stored values, so the result is a valid CT series that
goes through receive, loading and every pipeline like a real one.

A lesion series keeps the source UIDs until :func:`with_new_uids` is applied;
never send such a series anywhere before giving it new UIDs.

References
----------
DICOM PS3.3 C.7.6.2 Image Plane Module; PS3.3 C.8.2.1 CT Image Module
(Rescale Slope, Rescale Intercept); PS3.5 section 9 (UID encoding);
Cavalieri principle for the mask volume.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.uid import UID, generate_uid
from scipy import ndimage

from dicom_node.imaging.masks import in_plane_depth_mm, intracranial_mask
from dicom_node.series.volume import CTVolume, load_ct_volume

logger = logging.getLogger(__name__)

#: Text appended to Series Description of a series with an inserted lesion.
SYNTHETIC_HEMORRHAGE_NOTE = "synthetic hemorrhage"
#: Margin (mm) between an automatically placed lesion and the edge of the intracranial mask.
AUTO_CENTER_MARGIN_MM = 5.0
#: HU range of brain parenchyma used to reject automatically placed centres in CSF.
PARENCHYMA_HU_RANGE = (18.0, 45.0)


@dataclass(frozen=True, eq=False)
class SyntheticBleed:
    """A series with an inserted hemorrhage and its ground truth.

    Parameters
    ----------
    datasets : list of pydicom.Dataset
        Deep copies of the input datasets, in the input order, with the
        lesion blended into the pixels of the slices it touches.
    mask : numpy.ndarray
        Boolean ground truth of shape (slices, rows, columns), slices in
        :func:`dicom_node.series.volume.load_ct_volume` order: voxels whose
        partial-volume fraction inside the ellipsoid is at least 0.5.
    sop_instance_uids : tuple of str
        SOP Instance UID of each mask slice, in mask order.
    inserted_volume_ml : float
        Analytic ellipsoid volume 4/3 pi a b c, in mL.
    mask_volume_ml : float
        Volume of ``mask`` in mL, integrated per slice (Cavalieri).
    center_mm : tuple of float
        Ellipsoid centre in LPS patient coordinates (mm).
    semi_axes_mm : tuple of float
        Semi-axes (a, b, c) in mm.
    hu : float
        CT number of the lesion in HU.
    noise_hu : tuple of float
        Standard deviation (HU) of the noise added to each touched slice,
        in mask slice order (0.0 for untouched slices).

    References
    ----------
    Cavalieri principle (see :attr:`CTVolume.slice_spacing_mm`).
    """

    datasets: list[pydicom.Dataset]
    mask: np.ndarray
    sop_instance_uids: tuple[str, ...]
    inserted_volume_ml: float
    mask_volume_ml: float
    center_mm: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]
    hu: float
    noise_hu: tuple[float, ...]


def _stored_value_range(dataset: pydicom.Dataset) -> tuple[int, int]:
    bits_stored = int(dataset.BitsStored)
    if int(dataset.PixelRepresentation) == 1:
        return -(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1
    return 0, 2**bits_stored - 1


def _write_hu(dataset: pydicom.Dataset, hu: np.ndarray) -> None:
    """Write HU back as stored values through this slice's rescale, clipped to its range."""
    slope = float(dataset.RescaleSlope)
    intercept = float(dataset.RescaleIntercept)
    if dataset.file_meta.TransferSyntaxUID.is_compressed:
        # Decodes and switches to Explicit VR Little Endian, keeping the SOP Instance UID.
        dataset.decompress(generate_instance_uid=False)
    dtype = dataset.pixel_array.dtype
    low, high = _stored_value_range(dataset)
    stored = np.clip(np.rint((hu.astype(np.float64) - intercept) / slope), low, high)
    dataset.PixelData = stored.astype(dtype.newbyteorder("<")).tobytes()


def _unit_noise(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Spatially correlated Gaussian noise with unit high-pass deviation."""
    white = rng.standard_normal(shape)
    field = ndimage.gaussian_filter(white, sigma=0.7)
    return field / max(_high_pass_sd(field), 1e-6)


def _high_pass_sd(image: np.ndarray, where: np.ndarray | None = None) -> float:
    """Robust SD (1.4826 MAD) of an image minus its 2-pixel Gaussian blur."""
    residual = image - ndimage.gaussian_filter(image, sigma=2.0)
    values = residual[where] if where is not None else residual.ravel()
    if values.size < 50:
        return 0.0
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def _fibonacci_sphere(count: int) -> np.ndarray:
    i = np.arange(count) + 0.5
    polar = np.arccos(1.0 - 2.0 * i / count)
    azimuth = np.pi * (1.0 + 5.0**0.5) * i
    return np.stack(
        [np.cos(azimuth) * np.sin(polar), np.sin(azimuth) * np.sin(polar), np.cos(polar)], axis=1
    )


def pick_parenchyma_center(
    volume: CTVolume,
    radius_mm: float,
    *,
    seed: int = 0,
    candidate_slices: Sequence[int] | None = None,
    margin_mm: float = AUTO_CENTER_MARGIN_MM,
    max_tries: int = 500,
) -> tuple[float, float, float]:
    """Pick a point in brain parenchyma far enough from the edge of the intracranial mask.

    A sphere of radius ``radius_mm + margin_mm`` around the point must lie in
    the intracranial mask (checked in patient coordinates, slice by slice, so
    exact for sheared and irregular stacks), and the median HU within
    ``radius_mm`` must be that of parenchyma (18-45 HU), not CSF.

    Parameters
    ----------
    volume : CTVolume
        The head CT.
    radius_mm : float
        Radius (mm) of the lesion to place, usually its largest semi-axis.
    seed : int
        Seed of the random choice among the candidates.
    candidate_slices : sequence of int or None
        Restrict centres to these slice indices (load order); all slices if None.
    margin_mm : float
        Extra distance (mm) between the lesion and the mask edge.
    max_tries : int
        Candidates to test before giving up.

    Returns
    -------
    tuple of float
        The centre (x, y, z) in LPS mm; it is the centre of a voxel.

    Raises
    ------
    ValueError
        If no point fits (lesion too large for this head or these slices).

    References
    ----------
    DICOM PS3.3 C.7.6.2.1.1 Image Position and Image Orientation.
    """
    brain = intracranial_mask(volume)
    depth = in_plane_depth_mm(brain, volume.pixel_spacing_mm)
    allowed = depth > radius_mm + margin_mm
    if candidate_slices is not None:
        keep = np.zeros(allowed.shape[0], dtype=bool)
        keep[list(candidate_slices)] = True
        allowed &= keep[:, None, None]
    candidates = np.argwhere(allowed)
    if candidates.size == 0:
        raise ValueError(
            f"no voxel is deeper than {radius_mm + margin_mm:.1f} mm inside the intracranial mask"
        )
    rng = np.random.default_rng(seed)
    directions = _fibonacci_sphere(256)
    shells = np.concatenate(
        [directions * (radius_mm + margin_mm) * s for s in (1.0, 0.66, 0.33)], axis=0
    )
    inner = np.concatenate([directions * radius_mm * s for s in (0.8, 0.5, 0.2)], axis=0)
    order = rng.permutation(len(candidates))[:max_tries]
    row_mm, col_mm = volume.pixel_spacing_mm
    for k, r, c in candidates[order]:
        center = (
            volume.image_positions_mm[k]
            + r * row_mm * volume.column_direction
            + c * col_mm * volume.row_direction
        )
        index = volume.nearest_voxel_indices(center + shells)
        if np.any(index[:, 0] < 0) or not np.all(brain[index[:, 0], index[:, 1], index[:, 2]]):
            continue
        index = volume.nearest_voxel_indices(center + inner)
        median_hu = float(np.median(volume.hu[index[:, 0], index[:, 1], index[:, 2]]))
        if PARENCHYMA_HU_RANGE[0] <= median_hu <= PARENCHYMA_HU_RANGE[1]:
            return (float(center[0]), float(center[1]), float(center[2]))
    raise ValueError(
        f"no centre found in brain parenchyma for a lesion of radius {radius_mm:.1f} mm "
        f"after {len(order)} tries"
    )


def insert_ellipsoid_hemorrhage(
    datasets: Sequence[pydicom.Dataset],
    *,
    center_mm: tuple[float, float, float] | None,
    semi_axes_mm: tuple[float, float, float],
    hu: float = 65.0,
    noise_hu: float | None = None,
    seed: int = 0,
    rotation: np.ndarray | None = None,
    thickness_samples: int = 5,
    candidate_slices: Sequence[int] | None = None,
) -> SyntheticBleed:
    """Blend an ellipsoidal hemorrhage into a CT series with partial volume.

    For every slice the ellipsoid is sampled at each pixel centre and at
    ``thickness_samples`` positions spread evenly across the slice thickness
    along the normal; the fraction ``f`` of samples inside gives
    ``new = (1 - f) * old + f * (hu + noise)``. Noise is spatially correlated
    Gaussian noise matched to the noise measured around the lesion in that
    slice (or of SD ``noise_hu``), seeded. The HU are written back as stored
    values through the slice's Rescale Slope and Intercept, clipped to the
    stored range; compressed slices are re-encoded as Explicit VR Little
    Endian. Series Description and Derivation Description record that the
    series carries a synthetic lesion. UIDs are unchanged: apply
    :func:`with_new_uids` before the series leaves the process.

    Parameters
    ----------
    datasets : sequence of pydicom.Dataset
        The single-frame CT instances of one series, in any order. They are
        not modified.
    center_mm : tuple of float or None
        Ellipsoid centre (x, y, z) in LPS mm; None picks a point in brain
        parenchyma more than the largest semi-axis + 5 mm inside the
        intracranial mask (:func:`pick_parenchyma_center`).
    semi_axes_mm : tuple of float
        Semi-axes (a, b, c) in mm, along the columns of ``rotation``.
    hu : float
        CT number of the blood in HU (acute: about 50-90).
    noise_hu : float or None
        SD (HU) of the added noise; None measures it around the lesion in
        each slice (robust SD of the high-pass residual of tissue 0-80 HU);
        0 adds none.
    seed : int
        Seed of the noise and of the automatic centre.
    rotation : numpy.ndarray or None
        3 x 3 rotation matrix whose columns are the ellipsoid axes in LPS;
        None aligns them with x, y, z.
    thickness_samples : int
        Sub-positions across the slice thickness (at least 1).
    candidate_slices : sequence of int or None
        With ``center_mm=None``, restrict the centre to these slice indices
        (load order).

    Returns
    -------
    SyntheticBleed
        The new datasets and the ground truth.

    Raises
    ------
    ValueError
        If a semi-axis is not positive, ``rotation`` is not a rotation,
        ``thickness_samples`` < 1, or no automatic centre fits.
    SeriesLoadError
        If the datasets do not form a volume (see
        :func:`dicom_node.series.volume.load_ct_volume`).

    References
    ----------
    DICOM PS3.3 C.7.6.2 Image Plane Module; PS3.3 C.8.2.1 CT Image Module;
    Cavalieri principle for ``mask_volume_ml``.
    """
    axes = np.asarray(semi_axes_mm, dtype=np.float64)
    if axes.shape != (3,) or np.any(axes <= 0):
        raise ValueError(f"semi_axes_mm must be three positive lengths, got {semi_axes_mm}")
    if thickness_samples < 1:
        raise ValueError(f"thickness_samples must be at least 1, got {thickness_samples}")
    rot = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
    if rot.shape != (3, 3) or not np.allclose(rot.T @ rot, np.eye(3), atol=1e-6):
        raise ValueError("rotation must be a 3 x 3 orthonormal matrix")

    copies = [copy.deepcopy(ds) for ds in datasets]
    volume = load_ct_volume(copies)
    radius_mm = float(axes.max())
    if center_mm is None:
        center_mm = pick_parenchyma_center(
            volume, radius_mm, seed=seed, candidate_slices=candidate_slices
        )
    center = np.asarray(center_mm, dtype=np.float64)
    index_of_uid = {str(ds.SOPInstanceUID): i for i, ds in enumerate(copies)}
    rng = np.random.default_rng(seed)

    slices, rows, columns = volume.shape
    row_mm, col_mm = volume.pixel_spacing_mm
    normal = volume.normal
    mask = np.zeros(volume.shape, dtype=bool)
    noise_used = np.zeros(slices, dtype=np.float64)
    for k in range(slices):
        thickness = volume.slice_thicknesses_mm[k] or float(volume.slice_spacing_mm[k])
        relative = center - volume.image_positions_mm[k]
        if abs(relative @ normal) > radius_mm + thickness / 2.0:
            continue
        r0 = relative @ volume.column_direction / row_mm
        c0 = relative @ volume.row_direction / col_mm
        r_lo = max(int(np.floor(r0 - radius_mm / row_mm)) - 1, 0)
        r_hi = min(int(np.ceil(r0 + radius_mm / row_mm)) + 2, rows)
        c_lo = max(int(np.floor(c0 - radius_mm / col_mm)) - 1, 0)
        c_hi = min(int(np.ceil(c0 + radius_mm / col_mm)) + 2, columns)
        if r_lo >= r_hi or c_lo >= c_hi:
            continue
        rr = np.arange(r_lo, r_hi, dtype=np.float64)[:, None, None] * row_mm
        cc = np.arange(c_lo, c_hi, dtype=np.float64)[None, :, None] * col_mm
        pixel = (
            volume.image_positions_mm[k]
            + rr * volume.column_direction
            + cc * volume.row_direction
            - center
        )
        offsets = ((np.arange(thickness_samples) + 0.5) / thickness_samples - 0.5) * thickness
        fraction = np.zeros((r_hi - r_lo, c_hi - c_lo), dtype=np.float64)
        for offset in offsets:
            local = (pixel + offset * normal) @ rot / axes
            fraction += np.sum(local * local, axis=-1) <= 1.0
        fraction /= thickness_samples
        if not fraction.any():
            continue

        old = volume.hu[k, r_lo:r_hi, c_lo:c_hi].astype(np.float64)
        if noise_hu is None:
            sd = _high_pass_sd(old, (old >= 0.0) & (old <= 80.0))
        else:
            sd = float(noise_hu)
        noise = _unit_noise(old.shape, rng) * sd if sd > 0 else 0.0
        noise_used[k] = sd
        new_slice = volume.hu[k].astype(np.float64)
        new_slice[r_lo:r_hi, c_lo:c_hi] = (1.0 - fraction) * old + fraction * (hu + noise)
        _write_hu(copies[index_of_uid[volume.sop_instance_uids[k]]], new_slice)
        mask[k, r_lo:r_hi, c_lo:c_hi] = fraction >= 0.5

    for ds in copies:
        _note_synthetic(ds)

    inserted_volume_ml = 4.0 / 3.0 * np.pi * float(np.prod(axes)) / 1000.0
    mask_volume_ml = volume.mask_volume_ml(mask)
    logger.info(
        "inserted synthetic hemorrhage into series %s: %.2f mL analytic, %.2f mL mask, %.0f HU",
        volume.series_instance_uid,
        inserted_volume_ml,
        mask_volume_ml,
        hu,
    )
    return SyntheticBleed(
        datasets=copies,
        mask=mask,
        sop_instance_uids=volume.sop_instance_uids,
        inserted_volume_ml=inserted_volume_ml,
        mask_volume_ml=mask_volume_ml,
        center_mm=(float(center[0]), float(center[1]), float(center[2])),
        semi_axes_mm=(float(axes[0]), float(axes[1]), float(axes[2])),
        hu=float(hu),
        noise_hu=tuple(float(x) for x in noise_used),
    )


def _note_synthetic(dataset: pydicom.Dataset) -> None:
    description = str(dataset.get("SeriesDescription", "") or "")
    if SYNTHETIC_HEMORRHAGE_NOTE not in description:
        suffix = f" ({SYNTHETIC_HEMORRHAGE_NOTE})" if description else SYNTHETIC_HEMORRHAGE_NOTE
        dataset.SeriesDescription = (description[: 64 - len(suffix)] + suffix).strip()
    dataset.DerivationDescription = (
        "Synthetic hemorrhage blended in by dicom-node; not a patient finding"
    )


def with_new_uids(datasets: Sequence[pydicom.Dataset], *, seed: int) -> list[pydicom.Dataset]:
    """Return copies of one series with new, deterministic UIDs.

    Study Instance UID, Series Instance UID, Frame of Reference UID (one
    each for the whole series) and every SOP Instance UID (with the file meta
    Media Storage SOP Instance UID) are replaced by UIDs generated from the
    seed and the original UIDs (:func:`pydicom.uid.generate_uid` with
    ``entropy_srcs``), so the same input and seed always give the same
    output, and different seeds give unrelated UIDs.

    Parameters
    ----------
    datasets : sequence of pydicom.Dataset
        Instances of one series, in any order. They are not modified.
    seed : int
        Seed mixed into every new UID.

    Returns
    -------
    list of pydicom.Dataset
        Deep copies in the input order.

    Raises
    ------
    ValueError
        If ``datasets`` is empty.

    References
    ----------
    DICOM PS3.5 section 9 and Annex B (UID encoding and derivation);
    PS3.3 C.7.2.1 General Study, C.7.3.1 General Series, C.7.4.1 Frame of
    Reference, C.12.1 SOP Common Modules.
    """
    if not datasets:
        raise ValueError("no datasets given")

    def originals(keyword: str) -> list[str]:
        return sorted({str(ds.get(keyword, "")) for ds in datasets})

    def new_uid(kind: str, *sources: str) -> str:
        return str(generate_uid(entropy_srcs=[f"dicom-node seed={seed}", kind, *sources]))

    study_uid = new_uid("study", *originals("StudyInstanceUID"))
    series_uid = new_uid("series", *originals("SeriesInstanceUID"))
    frame_uid = new_uid("frame of reference", *originals("FrameOfReferenceUID"))
    copies = []
    for ds in datasets:
        new = copy.deepcopy(ds)
        sop_uid = new_uid("sop instance", str(ds.get("SOPInstanceUID", "")))
        new.StudyInstanceUID = study_uid
        new.SeriesInstanceUID = series_uid
        new.FrameOfReferenceUID = frame_uid
        new.SOPInstanceUID = sop_uid
        if getattr(new, "file_meta", None) is not None:
            new.file_meta.MediaStorageSOPInstanceUID = UID(sop_uid)
        copies.append(new)
    return copies
