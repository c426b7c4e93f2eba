"""The synthetic CT angiogram generator (:func:`generate_synthetic_cta`).

Draws the case parameters in a fixed order, places the arteries
(:mod:`.arteries`), renders them into the pose-warped base series
(:mod:`.render`), adds noise and writes the new series with its ground
truth. The package docstring (:mod:`dicom_node.training.synthetic_cta`)
describes what is drawn and what is not.

References
----------
Osborn AG. Diagnostic Cerebral Angiography, 2nd ed. Lippincott Williams &
Wilkins; 1999. Rai AT, et al. J Neurointerv Surg. 2013;5(4):371-375.
DICOM PS3.3 C.7.6.2 Image Plane Module; PS3.3 C.8.2.1 CT Image Module;
PS3.3 C.7.6.4 Contrast/Bolus Module.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import numpy as np
import pydicom
from scipy import ndimage

from dicom_node.series.volume import load_ct_volume
from dicom_node.training.synthetic import _high_pass_sd, _unit_noise, _write_hu, with_new_uids
from dicom_node.training.synthetic_cta.arteries import _build_arteries
from dicom_node.training.synthetic_cta.landmarks import locate_head_landmarks
from dicom_node.training.synthetic_cta.model import (
    BLOOD_HU,
    COLLATERAL_FRACTION_RANGE,
    CONTRAST_HU_RANGE,
    OCCLUSION_SEGMENTS,
    POINT_SPREAD_SIGMA_MM,
    SIDES,
    SYNTHETIC_CONTRAST_AGENT,
    SYNTHETIC_CTA_SERIES_DESCRIPTION,
    THROMBUS_HU_RANGE,
    Artery,
    HeadLandmarks,
    OcclusionTruth,
    SyntheticCTA,
)
from dicom_node.training.synthetic_cta.render import (
    _apply_pose_to_points,
    _HeadPose,
    _render_group,
    _warp_slices,
)

logger = logging.getLogger(__name__)


def generate_synthetic_cta(
    datasets: Sequence[pydicom.Dataset],
    *,
    seed: int,
    occlusion: str | None = None,
    side: str | None = None,
    contrast_hu: float | None = None,
    collateral_fraction: float | None = None,
    noise_hu: float | None = None,
    deformation_mm: float = 2.5,
    head_pose: bool = True,
    landmarks: HeadLandmarks | None = None,
    new_uids: bool = True,
) -> SyntheticCTA:
    """Draw a contrast-enhanced circle of Willis into a head CT, optionally with an occlusion.

    Parameters
    ----------
    datasets : sequence of pydicom.Dataset
        A non-contrast, single-frame axial head CT series (pixel data
        included), in any order. Not modified.
    seed : int
        Seed of every random draw (anatomy, pose, contrast, noise, UIDs).
    occlusion : {None, "ICA-T", "M1", "M2"}
        Segment to occlude; None draws a normal angiogram.
    side : {None, "left", "right"}
        Side of the occlusion (patient side); None draws one at random.
        Ignored without ``occlusion``.
    contrast_hu : float or None
        CT number (HU) of a lumen fully filled with contrast; None draws one
        in 250-450 HU.
    collateral_fraction : float or None
        Fraction (0-1) of the enhancement reached downstream of the
        occlusion; None draws one in 0-0.5.
    noise_hu : float or None
        SD (HU) of the noise added in the vessels; None matches each slice's
        own noise (robust SD of its high-pass residual in tissue 0-80 HU).
    deformation_mm : float
        Amplitude (mm) of the smooth random displacement of the template.
    head_pose : bool
        Move the head in-plane (rotation within 6 deg, shift within 6 mm,
        scale 0.95-1.05) before drawing.
    landmarks : HeadLandmarks or None
        Landmarks of this base series from :func:`locate_head_landmarks`,
        to skip recomputing them for every case; computed when None.
    new_uids : bool
        Give the series new Study, Series, Frame of Reference and SOP
        Instance UIDs (:func:`~dicom_node.training.synthetic.with_new_uids`).
        Never send a series with ``new_uids=False`` anywhere.

    Returns
    -------
    SyntheticCTA
        The new series and its ground truth.

    Raises
    ------
    ValueError
        If ``occlusion`` or ``side`` is not a known value, or no
        intracranial region is found.
    SeriesLoadError
        If the datasets do not form a volume.

    References
    ----------
    Osborn AG. Diagnostic Cerebral Angiography. 1999; Rai AT, et al.
    J Neurointerv Surg. 2013;5(4):371-375; DICOM PS3.3 C.7.6.4
    Contrast/Bolus Module.
    """
    if occlusion is not None and occlusion not in OCCLUSION_SEGMENTS:
        raise ValueError(
            f"occlusion must be one of {OCCLUSION_SEGMENTS} or None, got {occlusion!r}"
        )
    if side is not None and side not in SIDES:
        raise ValueError(f"side must be one of {SIDES} or None, got {side!r}")
    rng = np.random.default_rng(np.random.SeedSequence([0xC7A, int(seed)]))
    copies = [copy.deepcopy(ds) for ds in datasets]
    if landmarks is None:
        landmarks = locate_head_landmarks(load_ct_volume(copies))
    volume = landmarks.volume
    if occlusion is not None and side is None:
        side = str(rng.choice(SIDES))
    if occlusion is None:
        side = None
    if contrast_hu is None:
        contrast_hu = float(rng.uniform(*CONTRAST_HU_RANGE))
    if collateral_fraction is None:
        collateral_fraction = float(rng.uniform(*COLLATERAL_FRACTION_RANGE))
    thrombus_hu = float(rng.uniform(*THROMBUS_HU_RANGE))
    draws: dict = {
        "seed": int(seed),
        "occlusion": occlusion,
        "side": side,
        "contrast_hu": round(contrast_hu, 1),
        "collateral_fraction": round(collateral_fraction, 3) if occlusion else None,
        "thrombus_hu": round(thrombus_hu, 1) if occlusion else None,
    }

    arteries, truth = _build_arteries(
        landmarks, rng, deformation_mm, occlusion, side, collateral_fraction, draws
    )
    hu = volume.hu
    pose = None
    if head_pose:
        row_mm, col_mm = volume.pixel_spacing_mm
        pose = _HeadPose(
            angle_rad=float(np.deg2rad(rng.uniform(-6.0, 6.0))),
            scale=float(rng.uniform(0.95, 1.05)),
            shift_mm=(float(rng.uniform(-6.0, 6.0)), float(rng.uniform(-6.0, 6.0))),
            centre_mm=(volume.shape[2] * col_mm / 2.0, volume.shape[1] * row_mm / 2.0),
        )
        draws["head_pose"] = {
            "rotation_deg": round(float(np.rad2deg(pose.angle_rad)), 2),
            "scale": round(pose.scale, 3),
            "shift_mm": [round(x, 2) for x in pose.shift_mm],
        }
        hu = _warp_slices(volume, pose)
        arteries = [
            Artery(
                a.name,
                a.side,
                _apply_pose_to_points(volume, pose, a.centreline_mm),
                a.radius_mm * pose.scale,
                a.opacity,
                a.parent,
            )
            for a in arteries
        ]
        if truth is not None:
            moved = _apply_pose_to_points(volume, pose, np.asarray([truth.point_mm]))[0]
            truth = OcclusionTruth(
                truth.segment,
                truth.side,
                truth.artery,
                (float(moved[0]), float(moved[1]), float(moved[2])),
                truth.collateral_fraction,
            )
    centre = landmarks.frame.origin_mm
    if pose is not None:
        centre = _apply_pose_to_points(volume, pose, centre[None, :])[0]

    groups: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {
        "full": ([], []),
        "collateral": ([], []),
        "thrombus": ([], []),
    }
    for artery in arteries:
        for key, selected in (
            ("full", artery.opacity >= 0.999),
            ("collateral", (artery.opacity > 0.0) & (artery.opacity < 0.999)),
            ("thrombus", artery.opacity <= 0.0),
        ):
            if selected.any():
                groups[key][0].append(artery.centreline_mm[selected])
                groups[key][1].append(artery.radius_mm[selected])
    fractions = {}
    for key, (points, radii) in groups.items():
        if points:
            fractions[key] = _render_group(volume, np.concatenate(points), np.concatenate(radii))
        else:
            fractions[key] = np.zeros(volume.shape, dtype=np.float32)
    full = fractions["full"]
    collateral = np.minimum(fractions["collateral"], 1.0 - full)
    thrombus = np.minimum(fractions["thrombus"], 1.0 - full - collateral)
    opacified = (full + collateral_fraction * collateral).astype(np.float32)

    index_of_uid = {str(ds.SOPInstanceUID): i for i, ds in enumerate(copies)}
    row_mm, col_mm = volume.pixel_spacing_mm
    blur = (POINT_SPREAD_SIGMA_MM / row_mm, POINT_SPREAD_SIGMA_MM / col_mm)
    noise_used = np.zeros(volume.shape[0])
    collateral_hu = BLOOD_HU + collateral_fraction * (contrast_hu - BLOOD_HU)
    for k in range(volume.shape[0]):
        touched = (full[k] > 0) | (collateral[k] > 0) | (thrombus[k] > 0)
        old = hu[k].astype(np.float64)
        if touched.any():
            f_full = ndimage.gaussian_filter(full[k].astype(np.float64), blur)
            f_coll = ndimage.gaussian_filter(collateral[k].astype(np.float64), blur)
            f_clot = ndimage.gaussian_filter(thrombus[k].astype(np.float64), blur)
            total = np.clip(f_full + f_coll + f_clot, 0.0, 1.0)
            if noise_hu is None:
                sd = _high_pass_sd(old, (old >= 0.0) & (old <= 80.0))
            else:
                sd = float(noise_hu)
            noise = _unit_noise(old.shape, rng) * sd if sd > 0 else np.zeros_like(old)
            noise_used[k] = sd
            new = (
                (1.0 - total) * old
                + f_full * (contrast_hu + noise)
                + f_coll * (collateral_hu + noise)
                + f_clot * (thrombus_hu + noise)
            )
        else:
            new = old
        if touched.any() or pose is not None:
            _write_hu(copies[index_of_uid[volume.sop_instance_uids[k]]], new)

    for ds in copies:
        _note_synthetic_cta(ds)
    sop_instance_uids = volume.sop_instance_uids
    if new_uids:
        uid_seed = int(np.random.SeedSequence([0xC7A, int(seed), 1]).generate_state(1)[0])
        copies = with_new_uids(copies, seed=uid_seed)
        new_uid_of = {
            str(old.SOPInstanceUID): str(new.SOPInstanceUID)
            for old, new in zip(datasets, copies, strict=True)
        }
        sop_instance_uids = tuple(new_uid_of[uid] for uid in volume.sop_instance_uids)

    vessel_mask = opacified >= 0.5
    thrombus_mask = thrombus >= 0.25
    logger.info(
        "synthetic CTA (seed %d): %s, contrast %.0f HU, vessel mask %.2f mL",
        seed,
        f"{occlusion} {side} occlusion" if occlusion else "no occlusion",
        contrast_hu,
        volume.mask_volume_ml(vessel_mask),
    )
    return SyntheticCTA(
        datasets=copies,
        vessel_mask=vessel_mask,
        opacified_fraction=opacified,
        thrombus_mask=thrombus_mask,
        sop_instance_uids=sop_instance_uids,
        arteries=tuple(arteries),
        occlusion=truth,
        contrast_hu=float(contrast_hu),
        noise_hu=tuple(float(x) for x in noise_used),
        willis_center_mm=(float(centre[0]), float(centre[1]), float(centre[2])),
        parameters=draws,
    )


def _note_synthetic_cta(dataset: pydicom.Dataset) -> None:
    """Mark a generated angiogram: contrast attributes, description, derivation."""
    dataset.ContrastBolusAgent = SYNTHETIC_CONTRAST_AGENT
    dataset.ContrastBolusRoute = "IV"
    dataset.SeriesDescription = SYNTHETIC_CTA_SERIES_DESCRIPTION
    dataset.DerivationDescription = (
        "Synthetic arterial contrast drawn by dicom-node into a non-contrast CT; "
        "not a patient finding"
    )
