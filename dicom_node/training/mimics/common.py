"""What every mimic shares: the kinds, the spec of a mimic, its measurement, the falx sites.

:class:`MimicSpec` records what one mimic (or one scanner change) did to a
case, :func:`_measure` derives it from the image crops before and after, and
:func:`_falx_rows` and :func:`_supratentorial_slices` find the falx on the
slices above the ventricles for the falx plaque
(:mod:`~dicom_node.training.mimics.calcifications`) and the dense falx
(:mod:`~dicom_node.training.mimics.dura`).

References
----------
Kiroglu Y, et al. Diagn Interv Radiol. 2010;16(4):263-269; Barrett JF,
Keat N. RadioGraphics. 2004;24(6):1679-1691 (partial volume, artefacts);
Solomon J, Samei E. Phys Med Biol. 2014;59(21):6637-6657 (image-domain
insertion with the system's blur).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dicom_node.series.volume import CTVolume
from dicom_node.training.anatomy import HeadAnatomy
from dicom_node.training.landmarks import HeadLandmarks

CALCIFICATION = "calcification"
DENSE_DURA = "dense dura"
BEAM_HARDENING = "beam hardening"
PARTIAL_VOLUME_BONE = "partial-volume bone"
MOTION = "motion"

#: SD (mm) of the Gaussian in-plane point-spread function of the scanner.
PSF_SIGMA_MM = 0.4
#: Below this HU a voxel is reconstruction padding, not air.
_PADDING_MAX_HU = -1100.0


@dataclass(frozen=True)
class MimicSpec:
    """What one mimic (or one scanner change) did to a case.

    Parameters
    ----------
    kind : str
        ``"calcification"``, ``"dense dura"``, ``"beam hardening"``,
        ``"partial-volume bone"``, ``"motion"``, or for
        :func:`vary_scanner` ``"kernel"``, ``"noise"``, ``"field of view"``.
    site : str
        Where or what: ``"pineal"``, ``"habenula"``, ``"choroid plexus
        left"``, ``"globus pallidus right"``, ``"falx plaque"``, ``"falx"``,
        ``"tentorium"``, ``"skull base"``, ``"inner table"``, ``"in-plane"``,
        or a description of the scanner change.
    centre_mm : tuple of float
        Centre (x, y, z) in LPS patient coordinates, mm: the drawn centre of
        an object, the |change|-weighted centroid of an artefact, the head's
        centre for a change of the whole image.
    peak_hu : float
        Highest CT number (HU) among the voxels the mimic raised by at least
        10 HU (bone above 300 HU excluded), as left in the image (noise
        included); 0.0 when it raised none.
    change_hu : float
        The largest change it made (HU), signed (new minus old).
    slices : tuple of int
        Slice indices it changed.

    References
    ----------
    Kiroglu Y, et al. Diagn Interv Radiol. 2010;16(4):263-269; Barrett JF,
    Keat N. RadioGraphics. 2004;24(6):1679-1691.
    """

    kind: str
    site: str
    centre_mm: tuple[float, float, float]
    peak_hu: float
    change_hu: float
    slices: tuple[int, ...]


class NoMimicSiteError(ValueError):
    """The anatomy of a case has no place for a mimic (for example no ventricles)."""


def _thickness_mm(volume: CTVolume) -> np.ndarray:
    spacing = volume.slice_spacing_mm
    return np.array(
        [t if t else s for t, s in zip(volume.slice_thicknesses_mm, spacing, strict=True)]
    )


def _tuple3(p: np.ndarray) -> tuple[float, float, float]:
    return (float(p[0]), float(p[1]), float(p[2]))


def _measure(
    kind: str,
    site: str,
    old: dict[int, tuple[tuple[slice, slice], np.ndarray]],
    hu: np.ndarray,
    volume: CTVolume,
    centre: np.ndarray | None = None,
) -> MimicSpec:
    """Spec of a mimic from the crops before (``old``) and the image after."""
    peak, change = 0.0, 0.0
    slices = []
    weight_sum, weighted = 0.0, np.zeros(3)
    for k, ((rows, cols), before) in sorted(old.items()):
        after = hu[k][rows, cols]
        delta = after - before
        if not np.any(np.abs(delta) > 1e-3):
            continue
        slices.append(int(k))
        raised = (delta >= 10.0) & (before < 300.0)
        if raised.any():
            peak = max(peak, float(after[raised].max()))
        i = int(np.argmax(np.abs(delta)))
        if abs(float(delta.flat[i])) > abs(change):
            change = float(delta.flat[i])
        if centre is None:
            w = np.abs(delta)
            rr, cc = np.nonzero(w > 0.25 * float(w.max()))
            pts = volume.pixel_to_patient(int(k), rr + rows.start, cc + cols.start)
            ww = w[rr, cc].astype(np.float64)
            weighted += (pts * ww[:, None]).sum(axis=0)
            weight_sum += float(ww.sum())
    if centre is None:
        centre = weighted / weight_sum if weight_sum > 0 else np.zeros(3)
    return MimicSpec(
        kind=kind,
        site=site,
        centre_mm=_tuple3(centre),
        peak_hu=round(peak, 3),
        change_hu=round(change, 3),
        slices=tuple(slices),
    )


def _falx_rows(
    volume: CTVolume, anatomy: HeadAnatomy, landmarks: HeadLandmarks, k: int, min_depth_mm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of slice k where the falx curve lies inside the head, and its columns there."""
    rows = np.arange(volume.shape[1])
    cols = landmarks.midline_columns(k, rows)
    ci = np.clip(np.round(cols).astype(int), 0, volume.shape[2] - 1)
    ok = anatomy.intracranial[k, rows, ci] & (anatomy.depth_mm[k, rows, ci] >= min_depth_mm)
    return rows[ok], cols[ok]


def _supratentorial_slices(
    volume: CTVolume, anatomy: HeadAnatomy, landmarks: HeadLandmarks
) -> np.ndarray:
    """Slices with a large intracranial section at or above the ventricles' centre."""
    area = anatomy.intracranial.sum(axis=(1, 2))
    level = (
        landmarks.ventricle_centre_mm
        if landmarks.ventricle_centre_mm is not None
        else landmarks.centre_mm
    ) @ landmarks.up
    centres = np.array(
        [
            volume.pixel_to_patient(k, volume.shape[1] / 2.0, volume.shape[2] / 2.0) @ landmarks.up
            for k in range(volume.shape[0])
        ]
    )
    return np.flatnonzero((area >= 0.3 * area.max()) & (centres >= level - 5.0))
