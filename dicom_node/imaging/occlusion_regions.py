"""Territories of the left-right comparison and the circle of Willis that anchors them.

The head frame's boxes, one per territory and mirrored for the two sides
(:class:`Region`, :data:`DEFAULT_REGIONS`), sums over them
(:func:`_region_sums`), and the circle of Willis found by mean shift over the
large vessel components (:func:`locate_circle_of_willis`), the origin of the
frame the boxes are defined in: steps 2 and 3 of the LVO assessment in
:mod:`dicom_node.imaging.occlusion`, which still exports every name here.
Split from that module (issue 14). The boxes were set on synthetic
angiograms (:mod:`dicom_node.training.synthetic_cta`).

References
----------
Fukunaga K, Hostetler L. The estimation of the gradient of a density
function. IEEE Trans Inf Theory. 1975;21(1):32-40 (mean shift).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from dicom_node.imaging.midline import HeadFrame, MidsagittalPlane, head_frame
from dicom_node.imaging.vessels import voxel_centres_mm
from dicom_node.series.volume import CTVolume

#: Patient sides.
LEFT, RIGHT = "left", "right"


@dataclass(frozen=True)
class Region:
    """A box in the head frame, defined for one side and mirrored for the other.

    Parameters
    ----------
    name : str
        Anatomical name.
    lateral_mm : tuple of float
        (min, max) distance from the mid-sagittal plane, mm, on the side measured.
    posterior_mm : tuple of float
        (min, max) along the posterior axis from the circle of Willis, mm.
    superior_mm : tuple of float
        (min, max) along the superior axis (slice normal) from the circle, mm.
    exclude_posterior_cerebral : bool
        Leave out the course of the posterior cerebral artery around the
        midbrain (posterior to 8 mm, within 30 mm of the midline, below 20 mm).
    exclude_ventricular_atrium : bool
        Leave out the atrium (trigone) of the lateral ventricle and its
        choroid plexus glomus (:data:`VENTRICULAR_ATRIUM_MM`): the commonest
        site of physiological intracranial calcification, which a single
        CTA cannot tell from contrast, and a place no MCA trunk runs through.
    """

    name: str
    lateral_mm: tuple[float, float]
    posterior_mm: tuple[float, float]
    superior_mm: tuple[float, float]
    exclude_posterior_cerebral: bool = False
    exclude_ventricular_atrium: bool = False

    def contains(self, local_mm: np.ndarray, side: str) -> np.ndarray:
        """Return which points lie in the region on one side.

        Parameters
        ----------
        local_mm : numpy.ndarray
            Array (n, 3) of head-frame coordinates (left, posterior,
            superior) in mm.
        side : {"left", "right"}
            Patient side.

        Returns
        -------
        numpy.ndarray
            Boolean array (n,).
        """
        lateral = local_mm[:, 0] * (1.0 if side == LEFT else -1.0)
        posterior, superior = local_mm[:, 1], local_mm[:, 2]
        inside = (
            (lateral >= self.lateral_mm[0])
            & (lateral <= self.lateral_mm[1])
            & (posterior >= self.posterior_mm[0])
            & (posterior <= self.posterior_mm[1])
            & (superior >= self.superior_mm[0])
            & (superior <= self.superior_mm[1])
        )
        if self.exclude_posterior_cerebral:
            inside &= ~((posterior > 8.0) & (lateral < 30.0) & (superior < 20.0))
        if self.exclude_ventricular_atrium:
            medial_of, posterior_to, above = VENTRICULAR_ATRIUM_MM
            inside &= ~((lateral < medial_of) & (posterior > posterior_to) & (superior > above))
        return inside


#: The atrium (trigone) of the lateral ventricle with the choroid plexus glomus, in the
#: head frame: medial to 34 mm from the midline, more than 15 mm posterior to and more than
#: 15 mm above the circle of Willis (lateral max, posterior min, superior min; mm). The
#: insular M2 trunks run lateral to it, over the insula (about 35-45 mm from the midline).
#: Calcified choroid plexus (about 100-300 HU, common in adults) lies here and, being as
#: dense as contrast-filled lumen, would pass for vessel on one side only.
VENTRICULAR_ATRIUM_MM = (34.0, 15.0, 15.0)


#: The territories compared, relative to the circle of Willis (mm).
DEFAULT_REGIONS: dict[str, Region] = {
    "terminal_internal_carotid_artery": Region(
        "terminal_internal_carotid_artery", (9.0, 19.0), (-12.0, 4.0), (-8.0, 3.0)
    ),
    "anterior_cerebral_artery_a1": Region(
        "anterior_cerebral_artery_a1", (3.0, 11.0), (-18.0, -2.0), (-4.0, 6.0)
    ),
    "middle_cerebral_artery_m1": Region(
        "middle_cerebral_artery_m1", (16.0, 38.0), (-25.0, 5.0), (-8.0, 8.0)
    ),
    "middle_cerebral_artery_m2": Region(
        "middle_cerebral_artery_m2",
        (30.0, 52.0),
        (-25.0, 30.0),
        (0.0, 40.0),
        exclude_ventricular_atrium=True,
    ),
    "middle_cerebral_artery_territory": Region(
        "middle_cerebral_artery_territory",
        (12.0, 80.0),
        (-60.0, 45.0),
        (-12.0, 65.0),
        exclude_posterior_cerebral=True,
        exclude_ventricular_atrium=True,
    ),
}
#: Approximate position of the carotid terminus in the head frame (lateral, posterior, superior).
CAROTID_TERMINUS_MM = (13.0, -3.0, 0.0)


def locate_circle_of_willis(
    volume: CTVolume,
    vessel_mask: np.ndarray,
    plane: MidsagittalPlane,
    *,
    component_fraction: float = 0.2,
    radius_mm: float = 25.0,
    iterations: int = 20,
    offset_mm: tuple[float, float, float] = (0.0, 2.0, 5.0),
) -> HeadFrame:
    """Find the circle of Willis as the centre of mass of the large vessel components.

    The 26-connected components of the vessel mask at least
    ``component_fraction`` as large as the largest one are kept (the
    circle, its trunks; not skull-base fragments or calcifications).
    Starting at their median position, a mean shift with a flat kernel of
    ``radius_mm`` (half weight on the left-right axis) converges to the
    densest cluster; its left-right position is set on the mid-sagittal
    plane, and ``offset_mm`` (posterior, superior) moves it from the centre
    of mass of the trunks, which the carotid and basilar arteries below pull
    down, to the carotid-terminus level.

    Parameters
    ----------
    volume : CTVolume
        The angiogram.
    vessel_mask : numpy.ndarray
        Boolean vessel mask (slices, rows, columns).
    plane : MidsagittalPlane
        The mid-sagittal plane.
    component_fraction : float
        Smallest component kept, relative to the largest.
    radius_mm : float
        Mean-shift radius in mm.
    iterations : int
        Mean-shift iterations.
    offset_mm : tuple of float
        (left, posterior, superior) correction in mm added to the mean-shift
        mode; set on synthetic angiograms.

    Returns
    -------
    HeadFrame
        The anatomical frame with its origin at the circle of Willis.

    Raises
    ------
    ValueError
        If the vessel mask is empty.

    References
    ----------
    Fukunaga K, Hostetler L. IEEE Trans Inf Theory. 1975;21(1):32-40.
    """
    provisional = head_frame(volume, plane, plane.point_mm)
    labels, count = ndimage.label(vessel_mask, structure=np.ones((3, 3, 3), dtype=bool))
    if count == 0:
        raise ValueError("the vessel mask is empty")
    voxel_ml = np.broadcast_to(volume.voxel_volume_ml[:, None, None], volume.shape)
    sizes = ndimage.sum_labels(voxel_ml, labels, np.arange(count + 1))
    sizes[0] = 0.0
    keep = sizes >= component_fraction * sizes.max()
    indices = np.argwhere(keep[labels])
    local = provisional.to_local(voxel_centres_mm(volume, indices))
    weight = volume.voxel_volume_ml[indices[:, 0]]
    centre = np.array([0.0, np.median(local[:, 1]), np.median(local[:, 2])])
    scale = np.array([0.5, 1.0, 1.0])
    for _ in range(iterations):
        near = np.linalg.norm((local - centre) * scale, axis=1) < radius_mm
        if not near.any():
            break
        moved = np.array([0.0, *np.average(local[near][:, 1:], axis=0, weights=weight[near])])
        if np.linalg.norm(moved - centre) < 0.05:
            centre = moved
            break
        centre = moved
    origin = provisional.to_patient(centre + np.asarray(offset_mm))
    return head_frame(volume, plane, origin)


def _region_sums(
    local: np.ndarray, values: np.ndarray, regions: dict[str, Region]
) -> dict[str, dict[str, float]]:
    return {
        side: {
            name: float(values[region.contains(local, side)].sum())
            for name, region in regions.items()
        }
        for side in (LEFT, RIGHT)
    }
