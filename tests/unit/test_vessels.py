"""Vessel map, centrelines, mid-sagittal plane and the LVO analysis helpers.

Geometry tests use small hand-made volumes (exact answers, milliseconds);
the brain-mask and plane tests use the real GE head (non-contrast, gantry
tilted, 4 then 7 mm slices).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dicom_node.imaging.masks import dice_coefficient, intracranial_mask
from dicom_node.imaging.midline import estimate_midsagittal_plane, head_frame
from dicom_node.imaging.occlusion import Region, occlusion_region_mask, trunk_profile
from dicom_node.imaging.vessels import (
    arterial_peak_enhancement_hu,
    cta_intracranial_mask,
    vessel_centreline,
    voxel_centres_mm,
)
from dicom_node.series.volume import CTVolume, load_ct_volume, read_datasets


def small_volume(
    shape=(12, 40, 40), spacing=(1.0, 1.0), step_mm=2.0, shear_mm=0.0, hu=None
) -> CTVolume:
    """An axial stack: slice k at z = k * step, shifted k * shear along y (gantry tilt)."""
    slices = shape[0]
    positions = np.array([[0.0, k * shear_mm, k * step_mm] for k in range(slices)])
    return CTVolume(
        hu=np.zeros(shape, np.float32) if hu is None else hu,
        sop_instance_uids=tuple(f"1.2.3.{k}" for k in range(slices)),
        image_positions_mm=positions,
        image_orientation=np.array([1.0, 0, 0, 0, 1.0, 0]),
        pixel_spacing_mm=spacing,
        slice_thickness_mm=step_mm,
        frame_of_reference_uid="1.2.3",
        study_instance_uid="1.2.4",
        series_instance_uid="1.2.5",
    )


@pytest.fixture(scope="module")
def ge_volume(shared_data: Path) -> CTVolume:
    return load_ct_volume(read_datasets(sorted((shared_data / "head-ct-ge").glob("*.dcm"))))


def test_cta_mask_matches_the_plain_mask_on_a_non_contrast_head(ge_volume):
    plain = intracranial_mask(ge_volume)
    cta = cta_intracranial_mask(ge_volume)
    assert dice_coefficient(plain, cta) > 0.99


def test_cta_mask_keeps_an_enhanced_vessel_inside_the_brain(ge_volume):
    # A 3 mm wide, 400 HU "artery" drawn across a slice deep in the brain.
    hu = ge_volume.hu.copy()
    k = 16
    plain = intracranial_mask(ge_volume)
    rows = np.flatnonzero(plain[k].any(axis=1))
    r = int(rows.mean())
    columns = np.flatnonzero(plain[k, r])
    c0, c1 = columns.min() + 40, columns.max() - 40
    hu[k, r - 3 : r + 4, c0:c1] = 400.0
    vessel = np.zeros(hu.shape, dtype=bool)
    vessel[k, r - 3 : r + 4, c0:c1] = True
    from dataclasses import replace

    enhanced = replace(ge_volume, hu=hu)
    assert not intracranial_mask(enhanced)[vessel].any()  # the plain mask carves it out
    assert cta_intracranial_mask(enhanced)[vessel].mean() > 0.95


def test_midsagittal_plane_of_the_ge_head(ge_volume):
    brain = intracranial_mask(ge_volume)
    plane = estimate_midsagittal_plane(ge_volume, brain)
    angle = np.degrees(np.arccos(plane.normal @ np.array([1.0, 0.0, 0.0])))
    assert angle < 5.0  # the head lies nearly straight
    assert plane.residual_mm < 3.0
    points = np.array([[10.0, 0.0, 40.0], [-30.0, 5.0, 60.0]])
    assert np.allclose(plane.mirror(plane.mirror(points)), points)
    distance = plane.signed_distance_mm(points)
    assert np.allclose(plane.signed_distance_mm(plane.mirror(points)), -distance)
    frame = head_frame(ge_volume, plane, plane.point_mm)
    assert np.allclose(frame.rotation.T @ frame.rotation, np.eye(3), atol=1e-9)
    assert np.isclose(np.linalg.det(frame.rotation), 1.0)
    assert frame.left[0] > 0.99 and frame.superior[2] > 0.9  # LPS: +x left, +z superior
    assert np.allclose(frame.to_local(frame.to_patient(points)), points)


def test_voxel_centres_follow_each_slice_position_in_a_sheared_stack():
    volume = small_volume(step_mm=3.0, shear_mm=1.0)
    indices = np.array([[0, 0, 0], [4, 2, 5]])
    expected = np.array([[0.0, 0.0, 0.0], [5.0, 4 * 1.0 + 2.0, 12.0]])
    assert np.allclose(voxel_centres_mm(volume, indices), expected)


def test_centreline_of_a_straight_tube_is_its_length_in_mm():
    volume = small_volume(shape=(5, 30, 40), spacing=(0.5, 0.5))
    mask = np.zeros(volume.shape, dtype=bool)
    mask[2, 13:18, 5:35] = True  # 15 mm long, 2.5 mm wide, along the rows
    line = vessel_centreline(volume, mask)
    assert 11.0 <= line.length_mm <= 16.0
    assert len(line.endpoints) == 2
    assert line.skeleton.sum() < mask.sum() / 3


def test_centreline_across_uneven_slices_uses_the_slice_steps():
    volume = small_volume(shape=(6, 9, 9), spacing=(1.0, 1.0), step_mm=4.0)
    mask = np.zeros(volume.shape, dtype=bool)
    mask[:, 3:6, 3:6] = True  # a vertical 3 x 3 mm tube through all six slices
    line = vessel_centreline(volume, mask)
    assert line.length_mm == pytest.approx(20.0, abs=4.5)  # 5 steps of 4 mm


def test_arterial_peak_ignores_one_bright_bone_fragment():
    enhancement = np.zeros((4, 60, 60), np.float32)
    mask = np.ones(enhancement.shape, dtype=bool)
    enhancement[1, 5:15, 5:15] = 900.0  # bone fragment, the largest bright blob
    enhancement[1:3, 30:36, 5:55] = 300.0  # arteries at the true peak
    enhancement[2, 40:45, 10:20] = 300.0
    enhancement[0, 50:55, 30:40] = 290.0
    assert arterial_peak_enhancement_hu(enhancement, mask) == pytest.approx(300.0)


def test_occlusion_region_is_a_ball_of_the_asked_radius():
    volume = small_volume(shape=(20, 40, 40), spacing=(0.5, 0.5), step_mm=0.5)
    region = occlusion_region_mask(volume, (10.0, 10.0, 5.0), radius_mm=3.0)
    assert volume.mask_volume_ml(region) == pytest.approx(4 / 3 * np.pi * 27 / 1000, rel=0.1)


def test_region_mirrors_between_sides_and_profile_bins_lateral_distance():
    region = Region("m1", (16.0, 38.0), (-25.0, 5.0), (-8.0, 8.0))
    points = np.array([[20.0, 0.0, 0.0], [-20.0, 0.0, 0.0], [10.0, 0.0, 0.0]])
    assert region.contains(points, "left").tolist() == [True, False, False]
    assert region.contains(points, "right").tolist() == [False, True, False]
    trunk = np.array([[x, -5.0, 1.0] for x in np.arange(10.5, 30.5, 1.0)])  # 20 mm of M1
    profile = trunk_profile(trunk, np.full(len(trunk), 1e-3), "left")
    assert profile.trunk_gap_mm(1e-3) == 30
    assert trunk_profile(trunk, np.full(len(trunk), 1e-3), "right").trunk_gap_mm(1e-3) == 12
