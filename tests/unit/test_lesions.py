"""The 5-subtype synthetic-lesion engine on the real GE head CT: anatomy, shapes, volumes, I/O."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from scipy import ndimage

from dicom_node.imaging.ich_input import ICH_SUBTYPES, subtype_label
from dicom_node.series.volume import CTVolume, load_ct_volume, read_datasets
from dicom_node.training import lesions
from dicom_node.training.anatomy import HeadAnatomy, derive_anatomy
from dicom_node.training.augment import deform_case
from dicom_node.training.lesions import (
    BLOOD_HU_RANGE,
    SYNTHETIC_CASE_NOTE,
    case_to_datasets,
    insert_lesion,
    make_case,
    random_subtypes,
)

EPIDURAL, SUBDURAL, SUBARACHNOID, INTRAPARENCHYMAL, INTRAVENTRICULAR = ICH_SUBTYPES
#: Requested volume per subtype in these tests (mL), and the tolerance on the inserted volume.
REQUESTED_ML = {
    EPIDURAL: 20.0,
    SUBDURAL: 20.0,
    SUBARACHNOID: 1.5,
    INTRAPARENCHYMAL: 15.0,
    INTRAVENTRICULAR: 4.0,
}
VOLUME_TOLERANCE = 0.08


@pytest.fixture(scope="module")
def datasets(head_ct_dir: Path) -> list[pydicom.Dataset]:
    return read_datasets(sorted(head_ct_dir.glob("*.dcm")))


@pytest.fixture(scope="module")
def head(datasets) -> CTVolume:
    return load_ct_volume(datasets)


@pytest.fixture(scope="module")
def anatomy(head) -> HeadAnatomy:
    return derive_anatomy(head)


def downsample(volume: CTVolume, factor: int) -> CTVolume:
    """The volume averaged over factor x factor pixel blocks, geometry kept exact."""
    slices, rows, columns = volume.shape
    size = (columns // factor, rows // factor)
    hu = np.stack(
        [cv2.resize(volume.hu[k], size, interpolation=cv2.INTER_AREA) for k in range(slices)]
    )
    row_mm, col_mm = volume.pixel_spacing_mm
    shift = (factor - 1) / 2.0
    positions = (
        volume.image_positions_mm
        + shift * row_mm * volume.column_direction
        + shift * col_mm * volume.row_direction
    )
    return dataclasses.replace(
        volume,
        hu=hu.astype(np.float32),
        image_positions_mm=positions,
        pixel_spacing_mm=(row_mm * factor, col_mm * factor),
    )


@pytest.fixture(scope="module")
def inserted(head, anatomy, monkeypatch_module):
    """One lesion of each subtype (subdural on the convexity), requested volume, fixed seed."""
    monkeypatch_module.setattr(lesions, "SUBDURAL_FALX_PROBABILITY", 0.0)
    result = {}
    for i, subtype in enumerate(ICH_SUBTYPES):
        rng = np.random.default_rng(100 + i)
        result[subtype] = insert_lesion(
            head, anatomy, subtype, rng, volume_ml=REQUESTED_ML[subtype]
        )
    return result


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_anatomy_of_the_ge_head_is_plausible(head, anatomy):
    intracranial_ml = head.mask_volume_ml(anatomy.intracranial)
    assert 1000.0 <= intracranial_ml <= 1700.0
    brain_ml = head.mask_volume_ml(anatomy.brain)
    csf_ml = head.mask_volume_ml(anatomy.csf)
    assert brain_ml > 5.0 * csf_ml > 0.0
    for name in ("brain", "csf", "ventricles", "sulci_cisterns"):
        mask = getattr(anatomy, name)
        assert mask.shape == head.shape and mask.dtype == bool
        assert not np.any(mask & ~anatomy.intracranial), name
    assert not np.any(anatomy.ventricles & anatomy.sulci_cisterns)
    assert np.array_equal(anatomy.ventricles | anatomy.sulci_cisterns, anatomy.csf)
    # Ventricles: a few to some tens of mL, deep and near the midline.
    ventricles_ml = head.mask_volume_ml(anatomy.ventricles)
    assert 3.0 <= ventricles_ml <= 100.0
    k, _, c = np.nonzero(anatomy.ventricles)
    assert float(np.mean(anatomy.depth_mm[anatomy.ventricles])) > 25.0
    lateral_mm = np.abs(c - anatomy.midline_column[k]) * head.pixel_spacing_mm[1]
    assert float(np.mean(lateral_mm)) < 25.0
    # Depth: 0 outside, positive inside, up to a head's half width.
    assert np.all(anatomy.depth_mm[~anatomy.intracranial] == 0)
    assert 50.0 < float(anatomy.depth_mm.max()) < 90.0
    # Midline near the middle of the image and the head, smooth from slice to slice.
    assert anatomy.midline_column.shape == (head.shape[0],)
    assert np.all(np.abs(anatomy.midline_column - head.shape[2] / 2) < 0.15 * head.shape[2])


@pytest.mark.parametrize("subtype", ICH_SUBTYPES)
def test_each_subtype_is_inside_the_head_with_blood_density_and_the_requested_volume(
    subtype, inserted, head, anatomy
):
    new_hu, fraction, spec = inserted[subtype]
    assert new_hu.shape == fraction.shape == head.shape
    assert new_hu.dtype == fraction.dtype == np.float32
    assert 0.0 <= float(fraction.min()) and float(fraction.max()) <= 1.0
    label = fraction >= 0.5
    assert label.any()
    assert spec.subtype == subtype
    low, high = BLOOD_HU_RANGE[subtype]
    assert low <= spec.hu <= high
    # Inside the intracranial space (a pixel of slack for partial volume at the rim).
    slack = ndimage.binary_dilation(anatomy.intracranial, structure=np.ones((1, 3, 3), bool))
    assert np.count_nonzero(label & ~slack) <= 0.01 * np.count_nonzero(label)
    # The core has the blood's density, with the scan's own noise.
    core = fraction >= 0.99
    assert core.sum() >= 20
    assert abs(float(np.median(new_hu[core])) - spec.hu) < 5.0
    noise = float(np.std(new_hu[core] - spec.hu))
    assert 2.0 < noise < 30.0
    # Voxels outside the lesion are unchanged, except a hypodense edema rim around a hematoma.
    changed = (new_hu != head.hu) & (fraction == 0)
    if subtype == INTRAPARENCHYMAL and changed.any():
        drop = new_hu[changed] - head.hu[changed]
        assert np.all(drop < 0) and -10.0 <= float(drop.min())
        assert not np.any(changed & ~anatomy.brain)
    else:
        assert not changed.any()
    # The requested volume is reached.
    requested = REQUESTED_ML[subtype]
    assert spec.inserted_volume_ml == pytest.approx(requested, rel=VOLUME_TOLERANCE)
    assert spec.mask_volume_ml == pytest.approx(head.mask_volume_ml(label))
    assert spec.mask_volume_ml == pytest.approx(requested, rel=0.25)
    # The centre lies in the head.
    (index,) = head.nearest_voxel_indices(np.array([spec.centre_mm]))
    assert index[0] >= 0 and anatomy.intracranial[tuple(index)]


def _thickness_and_arc_mm(fraction, anatomy, spacing):
    """Largest depth from the inner table and longest in-plane extent of a label, mm."""
    label = fraction >= 0.5
    thickness = float(anatomy.depth_mm[label].max())
    k = int(np.argmax(label.sum(axis=(1, 2))))
    rows, cols = np.nonzero(label[k])
    points = np.stack([rows * spacing[0], cols * spacing[1]], axis=1)
    hull = cv2.convexHull(points.astype(np.float32))[:, 0, :]
    arc = float(np.max(np.linalg.norm(hull[:, None, :] - hull[None, :, :], axis=-1)))
    return thickness, arc


def test_extra_axial_lesions_hug_the_inner_table_and_parenchymal_ones_lie_deep(
    inserted, anatomy, head
):
    for subtype in (EPIDURAL, SUBDURAL):
        label = inserted[subtype][1] >= 0.5
        depth = anatomy.depth_mm[label & anatomy.intracranial]
        assert float(depth.min()) <= 1.5, subtype
        # Collections against the table: most of them within a few cm of it.
        assert float(np.median(depth)) < 15.0, subtype
    label = inserted[INTRAPARENCHYMAL][1] >= 0.5
    assert float(anatomy.depth_mm[label].min()) > 3.0
    assert float(np.median(anatomy.depth_mm[label])) > 15.0
    assert np.count_nonzero(label & anatomy.brain) > 0.5 * np.count_nonzero(label)


def test_epidural_is_a_lens_thicker_for_its_arc_than_a_subdural_crescent(inserted, anatomy, head):
    spacing = head.pixel_spacing_mm
    edh_thickness, edh_arc = _thickness_and_arc_mm(inserted[EPIDURAL][1], anatomy, spacing)
    sdh_thickness, sdh_arc = _thickness_and_arc_mm(inserted[SUBDURAL][1], anatomy, spacing)
    assert edh_thickness / edh_arc > 1.5 * sdh_thickness / sdh_arc
    assert sdh_thickness <= lesions.SUBDURAL_MAX_THICKNESS_MM + 3.0
    # An epidural arc spans no more than about 70 degrees: its chord stays short.
    assert edh_arc < 110.0


def test_intraventricular_blood_is_dependent_and_in_the_ventricles(inserted, anatomy, head):
    fraction = inserted[INTRAVENTRICULAR][1]
    label = fraction >= 0.5
    dilated = ndimage.binary_dilation(anatomy.ventricles, structure=np.ones((1, 5, 5), bool))
    assert np.count_nonzero(label & ~dilated) <= 0.02 * np.count_nonzero(label)
    # Dependent: posterior (+Y, patient supine) of the ventricle voxels it occupies.
    k, r, c = np.nonzero(label)
    blood_y = float(np.mean(_y_mm(head, k, r, c)))
    kv, rv, cv = np.nonzero(anatomy.ventricles)
    ventricle_y = float(np.mean(_y_mm(head, kv, rv, cv)))
    assert blood_y > ventricle_y + 5.0


def _y_mm(head, k, r, c):
    """Patient Y (mm) of voxels relative to the first voxel of the first slice."""
    row_mm, col_mm = head.pixel_spacing_mm
    origin = head.image_positions_mm
    return (
        origin[k, 1]
        - origin[0, 1]
        + r * row_mm * head.column_direction[1]
        + c * col_mm * head.row_direction[1]
    )


def test_subarachnoid_blood_fills_sulci_and_cisterns(inserted, anatomy):
    label = inserted[SUBARACHNOID][1] >= 0.5
    near = ndimage.binary_dilation(anatomy.sulci_cisterns, structure=np.ones((1, 3, 3), bool))
    assert np.count_nonzero(label & near) >= 0.9 * np.count_nonzero(label)
    assert not np.any(label & anatomy.ventricles)


def test_a_falx_subdural_runs_along_the_midline(head, anatomy, monkeypatch):
    monkeypatch.setattr(lesions, "SUBDURAL_FALX_PROBABILITY", 1.0)
    _, fraction, spec = insert_lesion(
        head, anatomy, SUBDURAL, np.random.default_rng(5), volume_ml=4.0
    )
    label = fraction >= 0.5
    k, _, c = np.nonzero(label)
    lateral_mm = np.abs(c - anatomy.midline_column[k]) * head.pixel_spacing_mm[1]
    assert float(np.max(lateral_mm)) <= 20.0
    # A long thin band along the antero-posterior axis.
    k = int(np.argmax(label.sum(axis=(1, 2))))
    rows, cols = np.nonzero(label[k])
    row_mm, col_mm = head.pixel_spacing_mm
    assert (rows.max() - rows.min()) * row_mm >= 20.0
    widths = [np.ptp(cols[rows == r]) * col_mm for r in np.unique(rows)]
    assert max(widths) <= 9.0
    assert spec.inserted_volume_ml == pytest.approx(4.0, rel=VOLUME_TOLERANCE)


def test_partial_volume_follows_the_slice_thickness(inserted, head):
    """Fractions are averages over sub-slices: fractional values exist at the lesion ends."""
    fraction = inserted[INTRAPARENCHYMAL][1]
    per_slice = fraction.sum(axis=(1, 2))
    touched = np.flatnonzero(per_slice)
    assert len(touched) >= 2
    partial = (fraction > 0) & (fraction < 1)
    assert np.count_nonzero(partial) > 0.05 * np.count_nonzero(fraction)
    # A shape lesion's fraction counts sub-samples inside: multiples of 1 / THICKNESS_SAMPLES.
    steps = fraction[fraction > 0] * lesions.THICKNESS_SAMPLES
    assert np.allclose(steps, np.round(steps), atol=1e-4)
    assert len(np.unique(np.round(steps))) == lesions.THICKNESS_SAMPLES


@pytest.fixture(scope="module")
def half(head) -> CTVolume:
    return downsample(head, 2)  # 256 x 256, 0.98 mm pixels


@pytest.fixture(scope="module")
def half_anatomy(half) -> HeadAnatomy:
    return derive_anatomy(half)


def test_sub_slice_sampling_follows_the_tilted_sheared_geometry(head, anatomy):
    """A field linear in patient coordinates, sampled between slices, equals its exact value."""
    sampler = lesions._Sampler(head, anatomy, lesions.THICKNESS_SAMPLES)
    e = np.array([0.3, 0.5, 0.8]) / np.linalg.norm([0.3, 0.5, 0.8])
    full = (0, head.shape[1], 0, head.shape[2])
    field = np.stack([sampler.project(e, k, 2, full) for k in range(head.shape[0])])
    assert head.is_sheared and not head.is_regular
    box = (150, 350, 150, 350)
    along = head.slice_positions_mm
    checked = 0
    for k in (0, 12, 13, 14, 27):
        for j in range(lesions.THICKNESS_SAMPLES):
            if not along[0] <= along[k] + sampler.offsets[k, j] <= along[-1]:
                continue  # beyond the stack: the edge slice is used as it is
            checked += 1
            exact = sampler.project(e, k, j, box)
            sampled = sampler.sample(field, k, j, box)
            assert np.allclose(sampled, exact, atol=0.02), (k, j)
    assert checked >= 17


def test_make_case_is_reproducible_and_seeds_differ(half, half_anatomy):
    head, anatomy = half, half_anatomy
    a = make_case(head, anatomy, seed=11, subtypes=(INTRAPARENCHYMAL, SUBDURAL))
    b = make_case(head, anatomy, seed=11, subtypes=(INTRAPARENCHYMAL, SUBDURAL))
    c = make_case(head, anatomy, seed=12, subtypes=(INTRAPARENCHYMAL, SUBDURAL))
    assert np.array_equal(a.volume.hu, b.volume.hu)
    assert np.array_equal(a.labels, b.labels)
    assert a.lesions == b.lesions
    assert not np.array_equal(a.volume.hu, c.volume.hu)
    assert not np.array_equal(a.labels, c.labels)
    assert a.labels.dtype == np.uint8 and a.labels.shape == head.shape
    assert set(np.unique(a.labels)) <= {0, subtype_label(INTRAPARENCHYMAL), subtype_label(SUBDURAL)}
    assert subtype_label(SUBDURAL) in a.labels  # the later lesion is never fully overwritten
    assert [s.subtype for s in a.lesions] == [INTRAPARENCHYMAL, SUBDURAL]
    # Geometry and UIDs are those of the base.
    assert a.volume.sop_instance_uids == head.sop_instance_uids
    assert np.array_equal(a.volume.image_positions_mm, head.image_positions_mm)
    assert a.volume.pixel_spacing_mm == head.pixel_spacing_mm
    assert a.seed == 11


def test_mass_effect_moves_tissue_around_a_large_lesion_but_not_the_labels(head, anatomy):
    kwargs = dict(seed=5, subtypes=(EPIDURAL,), deform=False)
    pushed = make_case(head, anatomy, mass_effect=True, **kwargs)
    plain = make_case(head, anatomy, mass_effect=False, **kwargs)
    assert pushed.lesions[0].inserted_volume_ml >= lesions.MASS_EFFECT_MIN_ML
    assert np.array_equal(pushed.labels, plain.labels)
    outside = (plain.labels == 0) & anatomy.intracranial
    moved = np.abs(pushed.volume.hu - plain.volume.hu) > 5.0
    assert np.count_nonzero(moved & outside) > 1000
    # The skull does not move.
    skull = ~anatomy.intracranial & (head.hu > 300)
    assert np.array_equal(pushed.volume.hu[skull], plain.volume.hu[skull])


def test_negative_case_has_no_label_but_is_still_augmented(head, anatomy):
    case = make_case(head, anatomy, seed=3, subtypes=())
    assert case.lesions == ()
    assert not case.labels.any()
    assert not np.array_equal(case.volume.hu, head.hu)
    plain = make_case(head, anatomy, seed=3, subtypes=(), deform=False)
    assert np.array_equal(plain.volume.hu, head.hu)


def test_random_subtypes_draws_negatives_singles_and_mixed_multiples():
    rng = np.random.default_rng(0)
    draws = [random_subtypes(rng) for _ in range(2000)]
    counts = np.bincount([len(d) for d in draws], minlength=4)
    assert counts[0] / 2000 == pytest.approx(0.3, abs=0.04)
    assert (counts[2] + counts[3]) / 2000 == pytest.approx(0.2, abs=0.04)
    assert all(len(set(d)) == len(d) and set(d) <= set(ICH_SUBTYPES) for d in draws)
    singles = [d[0] for d in draws if len(d) == 1]
    assert set(singles) == set(ICH_SUBTYPES)
    with pytest.raises(ValueError):
        random_subtypes(rng, negative_fraction=0.9, multi_fraction=0.2)


def test_unknown_subtype_is_refused(head, anatomy):
    with pytest.raises(ValueError, match="unknown hemorrhage subtype"):
        make_case(head, anatomy, seed=0, subtypes=("chronic subdural",))


def test_deform_case_keeps_geometry_padding_and_anatomy(head, anatomy):
    volume, warped = deform_case(head, anatomy, np.random.default_rng(4))
    assert volume.shape == head.shape
    assert volume.sop_instance_uids == head.sop_instance_uids
    assert np.array_equal(volume.image_positions_mm, head.image_positions_mm)
    assert volume.series_instance_uid == head.series_instance_uid
    # GE padding (-1500 HU) stays padding, nothing between padding and air appears.
    pad = float(head.hu.min())
    assert pad < -1100
    assert float(volume.hu.min()) == pad
    assert not np.any((volume.hu > pad) & (volume.hu < -1100))
    ratio = head.mask_volume_ml(warped.intracranial) / head.mask_volume_ml(anatomy.intracranial)
    assert 0.75 < ratio < 1.3
    assert warped.ventricles.any() and warped.depth_mm.dtype == np.float32
    # The warped masks still sit on the warped CT numbers.
    brain_hu = float(np.median(volume.hu[warped.brain]))
    assert 20.0 < brain_hu < 45.0


def test_works_on_a_downsampled_head(head):
    small = downsample(head, 4)  # 128 x 128, 1.95 mm pixels
    anatomy = derive_anatomy(small)
    assert 900.0 < small.mask_volume_ml(anatomy.intracranial) < 1800.0
    for i, subtype in enumerate(ICH_SUBTYPES):
        case = make_case(small, anatomy, seed=40 + i, subtypes=(subtype,))
        assert np.any(case.labels == subtype_label(subtype)), subtype
        assert case.volume.shape == small.shape


def test_case_to_datasets_round_trips_with_new_uids(datasets, head, anatomy):
    case = make_case(head, anatomy, seed=21, subtypes=(EPIDURAL,), deform=True)
    written = case_to_datasets(datasets, case, seed=21)
    assert len(written) == len(datasets)
    reread = []
    for ds in written:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        buffer.seek(0)
        reread.append(pydicom.dcmread(buffer))
    volume = load_ct_volume(reread)
    assert volume.series_instance_uid != head.series_instance_uid
    assert volume.study_instance_uid != head.study_instance_uid
    assert not set(volume.sop_instance_uids) & set(head.sop_instance_uids)
    assert SYNTHETIC_CASE_NOTE in str(reread[0].SeriesDescription)
    assert "Synthetic" in str(reread[0].DerivationDescription)
    # Same slice order, HU rounded to stored integers; the lesion is there.
    label = case.labels == subtype_label(EPIDURAL)
    assert label.any()
    assert np.max(np.abs(volume.hu[label] - case.volume.hu[label])) <= 0.51
    low, high = BLOOD_HU_RANGE[EPIDURAL]
    assert low - 5 <= float(np.median(volume.hu[label])) <= high + 5
    assert np.allclose(volume.image_positions_mm, head.image_positions_mm)
    # Source datasets are untouched.
    assert str(datasets[0].SOPInstanceUID) in head.sop_instance_uids
