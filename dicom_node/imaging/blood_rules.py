"""Blood plausibility: which voxels the model calls blood can really be acute blood.

The ICH network answers for every pixel, and on real scans it answers "blood"
where a radiologist sees the falx, a calcified pineal gland or choroid plexus,
the inner table, the skull base or the scalp. These rules run after the model
on the source grid, each on its own and each measurable on its own
(``docs/ich-model.md`` has the ablation table):

``intracranial``
    Blood lies inside the cranial cavity (the region the skull encloses,
    :func:`dicom_node.imaging.head_ct.cranial_cavity`). Scalp, orbits,
    muscles of the neck and the sinuses are not.
``density``
    Acute blood reads 40-90 HU (up to about 100 HU for a retracted clot).
    Voxels whose lightly smoothed HU (sigma 0.5 mm) lies outside
    ``[min_hu, max_hu]`` are not blood: above is calcification or bone,
    below is brain, CSF or fat.
``calcification``
    Dense foci (at least ``calcification_min_hu``) more than
    ``calcification_depth_mm`` inside the head's bony outline are physiologic
    calcifications (pineal gland, habenula, choroid plexus, basal ganglia,
    falx) up to ``calcification_max_ml`` (larger ones are skull-base bone
    inside the outline, left to ``density``). Their partial-volume halo
    (``calcification_halo_mm`` in plane, and one source slice above and
    below) reads like blood and is removed. Each focus is reported with its
    likely site (:func:`calcification_site`).
``dural``
    The falx is a thin dense line on the mid-sagittal plane, the tentorium
    a thin oblique sheet. Within ``falx_zone_mm`` of the midline, blood
    that vanishes under an in-plane opening of diameter
    ``dural_max_thickness_mm`` is dense dura; elsewhere the same holds for
    ``line_max_thickness_mm``, except where the model calls the voxel
    subarachnoid (sulcal blood is thin). A parafalcine or convexity subdural
    hematoma is thicker and survives.
``dural_band``
    A normal dense tentorium or falx is a *bilaterally symmetric*, smooth,
    thin band between brain on both sides; a tentorial or parafalcine
    subdural hematoma is one-sided or thicker. On each slice, the dense band
    that holds the candidate blood (smoothed HU above half-way between the
    local brain and the candidate's median, up to ``max_hu``) is a dural
    band when its mean thickness (area over skeleton length) is at most
    ``band_max_thickness_mm``, it is at least ``band_min_length_mm`` long,
    its median depth from the inner table is at least
    ``band_min_depth_mm`` (convexity subdurals hug the table), at most
    ``band_max_csf_fraction`` of its rim is CSF (intraventricular and
    cisternal blood lie in CSF) and at least ``band_min_symmetry`` of it,
    mirrored about the mid-sagittal line, lands on dense band again. The
    candidate blood on such a band is removed.

The settings, the report, ``intracranial``, ``density`` and ``calcification``
are here; the mid-sagittal line the rules measure from is in
:mod:`dicom_node.imaging.cavity_midline`, the ``dural`` and ``dural_band``
rules in :mod:`dicom_node.imaging.dural_rules`. Their public names are
importable from here too.

References
----------
Parizel PM, et al. Intracranial hemorrhage: principles of CT and MRI
interpretation. Eur Radiol 2001;11:1770-1783 (CT numbers of blood over
time). Kiroglu Y, et al. Intracranial calcifications on CT. Diagn Interv
Radiol 2010;16:263-269 (sites and prevalence of physiologic
calcifications). Osborn AG. Osborn's Brain. 2nd ed. Elsevier; 2017 (dense
falx, the hyperdense dura of young patients and polycythemia). Barrett JF,
Keat N. Artifacts in CT: recognition and avoidance. RadioGraphics
2004;24:1679-1691 (beam hardening and partial volume at the skull base).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy import ndimage

from dicom_node.imaging.cavity_midline import MidsagittalLine, fit_midsagittal_line
from dicom_node.imaging.dural_rules import (
    BAND_LEVEL_FRACTION,
    BAND_MIN_CONTRAST_HU,
    BAND_MIRROR_SHIFT_MM,
    BAND_WINDOW_MM,
    _drop_dural_bands,
    _drop_dural_lines,
    dural_band_figures,
)
from dicom_node.imaging.head_ct import CranialCavity
from dicom_node.series.kernels import disk_structuring_element

#: The names importable from this module: its own, and those of the modules it was split
#: into (:mod:`~dicom_node.imaging.cavity_midline`, :mod:`~dicom_node.imaging.dural_rules`).
__all__ = [
    "BAND_LEVEL_FRACTION",
    "BAND_MIN_CONTRAST_HU",
    "BAND_MIRROR_SHIFT_MM",
    "BAND_WINDOW_MM",
    "BLOOD_RULES",
    "BloodRuleReport",
    "BloodRuleSettings",
    "Calcification",
    "MidsagittalLine",
    "apply_blood_rules",
    "calcification_site",
    "dural_band_figures",
    "fit_midsagittal_line",
]

#: Rule names in the order they run.
#: ``dural_band`` judges a candidate's whole shape, so it runs before ``dural`` cuts the
#: candidate's thin parts away.
BLOOD_RULES: tuple[str, ...] = ("intracranial", "density", "calcification", "dural_band", "dural")


@dataclass(frozen=True)
class BloodRuleSettings:
    """Parameters of the blood plausibility rules (manifest ``detection.blood_rules``).

    Parameters
    ----------
    enabled : tuple of str
        Rules that run, a subset of :data:`BLOOD_RULES`.
    min_hu, max_hu : float
        Density range of acute blood (HU), after smoothing with sigma 0.5 mm.
    calcification_min_hu : float
        HU (smoothed) from which a focus inside the cavity is dense.
    calcification_depth_mm : float
        Foci closer than this (mm) to the outside of the head's bony outline
        belong to the skull vault.
    calcification_max_ml : float
        Larger dense regions are not calcifications (mL).
    calcification_halo_mm : float
        In-plane margin (mm) around a focus where blood is removed.
    dural_max_thickness_mm : float
        In the falx zone, blood thinner than this (mm) in plane is dura.
    line_max_thickness_mm : float
        Elsewhere (tentorium, inner table), blood thinner than this (mm) is
        a dural line or partial-volume bone, unless the model calls it
        subarachnoid.
    falx_zone_mm : float
        Half-width (mm) of the midline zone of the falx.
    band_max_thickness_mm : float
        ``dural_band``: largest mean in-plane thickness (mm) of a dural band
        (an oblique tentorium cut by a 5 mm slab reads several mm).
    band_min_length_mm : float
        ``dural_band``: shortest band (mm of skeleton).
    band_min_depth_mm : float
        ``dural_band``: smallest median distance (mm) of the band from the
        inner table.
    band_max_csf_fraction : float
        ``dural_band``: largest fraction of the band's rim (1-3 mm outside
        it) that reads as CSF (-5 to 15 HU).
    band_min_symmetry : float
        ``dural_band``: smallest fraction of the band that, mirrored about
        the mid-sagittal line (and shifted as a whole by up to 6 mm), lands on
        dense pixels.
    band_mirror_level_fraction : float
        ``dural_band``: the mirror side counts as dense from this fraction of
        the way between the surrounding brain's HU and the candidate's
        (its two halves need not be equally dense).

    References
    ----------
    Parizel PM, et al. Eur Radiol 2001;11:1770-1783.
    """

    enabled: tuple[str, ...] = BLOOD_RULES
    min_hu: float = 38.0
    max_hu: float = 100.0
    calcification_min_hu: float = 130.0
    calcification_depth_mm: float = 15.0
    calcification_max_ml: float = 3.0
    calcification_halo_mm: float = 2.5
    dural_max_thickness_mm: float = 3.0
    line_max_thickness_mm: float = 2.0
    falx_zone_mm: float = 5.0
    band_max_thickness_mm: float = 8.0
    band_min_length_mm: float = 15.0
    band_min_depth_mm: float = 6.0
    band_max_csf_fraction: float = 0.25
    band_min_symmetry: float = 0.7
    band_mirror_level_fraction: float = 0.3

    def __post_init__(self) -> None:
        unknown = set(self.enabled) - set(BLOOD_RULES)
        if unknown:
            raise ValueError(f"unknown blood rules {sorted(unknown)}; known: {BLOOD_RULES}")

    @classmethod
    def from_manifest(cls, entry: dict | None) -> BloodRuleSettings | None:
        """Read ``detection.blood_rules`` of a manifest; None when the key is absent.

        Parameters
        ----------
        entry : dict or None
            ``{"enabled": [...], "min_hu": ..., ...}``; missing keys keep
            their defaults.

        Returns
        -------
        BloodRuleSettings or None

        Raises
        ------
        ValueError
            If a rule name or key is unknown.
        """
        if entry is None:
            return None
        values = dict(entry)
        if "enabled" in values:
            values["enabled"] = tuple(values["enabled"])
        known = set(cls.__dataclass_fields__)
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown blood rule settings {sorted(unknown)}")
        return cls(**values)

    def to_manifest(self) -> dict:
        """Return the settings as the manifest's ``detection.blood_rules`` entry."""
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["enabled"] = list(self.enabled)
        return out


@dataclass(frozen=True)
class Calcification:
    """A dense intracranial focus found by the ``calcification`` rule.

    Parameters
    ----------
    site : str
        ``"pineal gland"``, ``"choroid plexus"``, ``"basal ganglia"``,
        ``"falx"``, ``"skull base"`` or ``"other"`` (:func:`calcification_site`).
    slice_index : int
        Source slice (0-based, slice order) of the focus' densest voxel.
    volume_ml : float
        Volume of the focus (mL).
    peak_hu : float
        Highest smoothed HU in it.
    midline_distance_mm : float
        Signed in-plane distance from the mid-sagittal line (mm), positive
        toward increasing column index.
    """

    site: str
    slice_index: int
    volume_ml: float
    peak_hu: float
    midline_distance_mm: float

    def as_dict(self) -> dict:
        """Return the focus as JSON types (rounded)."""
        return {
            "site": self.site,
            "slice_index": self.slice_index,
            "volume_ml": round(self.volume_ml, 3),
            "peak_hu": round(self.peak_hu, 1),
            "midline_distance_mm": round(self.midline_distance_mm, 1),
        }


@dataclass
class BloodRuleReport:
    """What the rules removed.

    Parameters
    ----------
    removed_ml : dict of str to float
        Volume (mL) each rule removed from the candidate blood, in the order
        the rules ran.
    calcifications : list of Calcification
        Dense foci recognised by the ``calcification`` rule.
    """

    removed_ml: dict[str, float] = field(default_factory=dict)
    calcifications: list[Calcification] = field(default_factory=list)

    def as_dict(self) -> dict:
        """Return the report as JSON types: skull-base foci are counted, the others listed."""
        named = [c.as_dict() for c in self.calcifications if c.site != "skull base"]
        return {
            "removed_ml": {k: round(v, 3) for k, v in self.removed_ml.items()},
            "calcifications": named[:20],
            "skull_base_foci": sum(c.site == "skull base" for c in self.calcifications),
        }


def calcification_site(
    midline_distance_mm: float,
    near_csf: bool,
    depth_mm: float,
    elongated: bool,
    peak_hu: float = 300.0,
) -> str:
    """Name the likely site of a dense intracranial focus from where it lies.

    Parameters
    ----------
    midline_distance_mm : float
        Signed distance from the mid-sagittal line (mm).
    near_csf : bool
        Whether CSF (-5 to 15 HU) lies within 4 mm (a ventricle).
    depth_mm : float
        Distance from the outside of the head's bony outline (mm).
    elongated : bool
        Longer than three times its width in plane.
    peak_hu : float
        Its highest smoothed HU; above 1000 HU it is cortical bone.

    Returns
    -------
    str
        ``"falx"`` (midline, elongated), ``"pineal gland"`` (midline),
        ``"choroid plexus"`` (beside a ventricle, off the midline),
        ``"basal ganglia"`` (deeper than 35 mm, 10-35 mm off the midline),
        ``"skull base"`` (within 25 mm of the outline, or denser than
        1000 HU) or ``"other"``. A midline focus counts as pineal or falx only
        deeper than 35 mm (the skull base's midline holds the clivus).

    References
    ----------
    Kiroglu Y, et al. Diagn Interv Radiol 2010;16:263-269.
    """
    off = abs(midline_distance_mm)
    if peak_hu > 1000.0 or depth_mm < 25.0:
        return "skull base"
    if off <= 5.0:
        return "falx" if elongated else "pineal gland"
    if near_csf and off <= 35.0:
        return "choroid plexus"
    if 10.0 <= off <= 35.0 and depth_mm >= 35.0:
        return "basal ganglia"
    return "other"


def _smoothed(hu: np.ndarray, indices: Iterable[int], sigma_px: float) -> dict[int, np.ndarray]:
    return {
        int(k): cv2.GaussianBlur(np.ascontiguousarray(hu[k], dtype=np.float32), (0, 0), sigma_px)
        for k in indices
    }


def apply_blood_rules(
    blood: np.ndarray,
    hu: np.ndarray,
    *,
    slab_of_slice: np.ndarray,
    cavity: CranialCavity,
    pixel_spacing_mm: tuple[float, float],
    voxel_volume_ml: np.ndarray,
    settings: BloodRuleSettings,
    midline: MidsagittalLine | None = None,
    thin_ok: np.ndarray | None = None,
) -> tuple[np.ndarray, BloodRuleReport]:
    """Remove from a candidate blood mask what cannot be acute blood.

    Parameters
    ----------
    blood : numpy.ndarray
        bool (slices, rows, columns) on the source grid: the model's blood.
    hu : numpy.ndarray
        float32 (slices, rows, columns): the source HU.
    slab_of_slice : numpy.ndarray
        int (slices,): slab of each source slice
        (:class:`~dicom_node.imaging.ich_input.SlabGrid`).
    cavity : CranialCavity
        Per slab, from :func:`dicom_node.imaging.head_ct.cranial_cavity`.
    pixel_spacing_mm : tuple of float
        (row, column) spacing in mm.
    voxel_volume_ml : numpy.ndarray
        float (slices,): volume of one voxel of each source slice (mL).
    settings : BloodRuleSettings
        Which rules run, and their parameters.
    midline : MidsagittalLine or None
        For the ``dural`` rule and the calcification sites; fitted to the
        cavity when None.
    thin_ok : numpy.ndarray or None
        bool (slices, rows, columns): voxels allowed to be thin outside the
        falx zone (those the model calls subarachnoid, which fills sulci a
        millimetre wide); None allows none.

    Returns
    -------
    mask : numpy.ndarray
        bool (slices, rows, columns): the plausible blood.
    report : BloodRuleReport
        Volume removed per rule (mL) and the calcifications found.

    References
    ----------
    See the module docstring.
    """
    mask = blood.copy()
    report = BloodRuleReport()
    voxel_ml = np.asarray(voxel_volume_ml, dtype=np.float64)
    row_mm, col_mm = pixel_spacing_mm
    pixel_mm = float(np.sqrt(row_mm * col_mm))

    def volume_ml(m: np.ndarray) -> float:
        return float(m.reshape(m.shape[0], -1).sum(axis=1) @ voxel_ml)

    if midline is None and {"dural", "dural_band", "calcification"} & set(settings.enabled):
        midline = fit_midsagittal_line(cavity.cavity, pixel_spacing_mm)
    for rule in BLOOD_RULES:
        if rule not in settings.enabled:
            continue
        before = volume_ml(mask)
        if rule == "intracranial":
            mask &= cavity.cavity[slab_of_slice]
        elif rule == "density" and mask.any():
            slices = np.flatnonzero(mask.any(axis=(1, 2)))
            smooth = _smoothed(hu, slices, 0.5 / pixel_mm)
            for k in slices:
                s = smooth[int(k)]
                mask[k] &= (s >= settings.min_hu) & (s <= settings.max_hu)
        elif rule == "calcification":
            halo, found = _calcification_halo(
                hu, slab_of_slice, cavity, pixel_spacing_mm, voxel_ml, settings, midline
            )
            report.calcifications = found
            mask &= ~halo
        elif rule == "dural" and midline is not None and mask.any():
            mask = _drop_dural_lines(mask, midline, pixel_spacing_mm, settings, thin_ok)
        elif rule == "dural_band" and midline is not None and mask.any():
            mask = _drop_dural_bands(
                mask, hu, slab_of_slice, cavity, midline, pixel_spacing_mm, settings
            )
        report.removed_ml[rule] = before - volume_ml(mask)
    return mask, report


def _calcification_halo(
    hu,
    slab_of_slice,
    cavity: CranialCavity,
    pixel_spacing_mm,
    voxel_ml,
    settings: BloodRuleSettings,
    midline: MidsagittalLine | None,
):
    pixel_mm = float(np.sqrt(pixel_spacing_mm[0] * pixel_spacing_mm[1]))
    slices = hu.shape[0]
    depth = cavity.outline_depth_mm
    deep = depth[slab_of_slice] > settings.calcification_depth_mm
    dense = np.zeros(hu.shape, dtype=bool)
    candidates = [k for k in range(slices) if deep[k].any()]
    smooth = _smoothed(hu, candidates, 0.75 / pixel_mm)
    for k in candidates:
        dense[k] = deep[k] & (smooth[k] >= settings.calcification_min_hu)
    halo = np.zeros(hu.shape, dtype=bool)
    found: list[Calcification] = []
    if not dense.any():
        return halo, found
    labels, count = ndimage.label(dense)
    objects = ndimage.find_objects(labels)
    kernel = disk_structuring_element(settings.calcification_halo_mm, pixel_spacing_mm)
    pad = kernel.shape[0] // 2 + 1
    # Neighbouring slices within one slab thickness share the focus's partial volume.
    for index, box in enumerate(objects, start=1):
        if box is None:
            continue
        component = labels[box] == index
        per_slice = component.reshape(component.shape[0], -1).sum(axis=1)
        volume = float(per_slice @ voxel_ml[box[0]])
        if volume > settings.calcification_max_ml:
            continue  # bone inside the outline (petrous ridge, clinoid): left to `density`
        k0, k1 = box[0].start, box[0].stop
        r0, r1 = max(0, box[1].start - pad), min(hu.shape[1], box[1].stop + pad)
        c0, c1 = max(0, box[2].start - pad), min(hu.shape[2], box[2].stop + pad)
        flat = (labels[k0:k1, r0:r1, c0:c1] == index).any(axis=0).astype(np.uint8)
        grown = cv2.dilate(flat, kernel) > 0
        # One source slice beyond the focus on each side shares its partial volume.
        halo[max(0, k0 - 1) : min(slices, k1 + 1), r0:r1, c0:c1] |= grown[None]
        # Site of the focus, from its densest voxel.
        values = np.where(
            component,
            np.asarray([smooth.get(k, hu[k])[box[1], box[2]] for k in range(k0, k1)]),
            -np.inf,
        )
        kk, rr, cc = np.unravel_index(int(np.argmax(values)), values.shape)
        peak = float(values[kk, rr, cc])
        k, r, c = k0 + int(kk), box[1].start + int(rr), box[2].start + int(cc)
        offset = float(midline.distance_mm(np.array(r), np.array(c))) if midline else 0.0
        window = hu[k, max(0, r - 9) : r + 10, max(0, c - 9) : c + 10]
        near_csf = bool(((window >= -5.0) & (window <= 15.0)).mean() > 0.1)
        extent = np.ptp(np.argwhere(flat), axis=0) + 1 if flat.any() else np.array([1, 1])
        elongated = bool(extent.max() >= 3 * max(1, extent.min()))
        found.append(
            Calcification(
                site=calcification_site(
                    offset, near_csf, float(depth[slab_of_slice[k], r, c]), elongated, peak
                ),
                slice_index=k,
                volume_ml=volume,
                peak_hu=peak,
                midline_distance_mm=offset,
            )
        )
    return halo, found
