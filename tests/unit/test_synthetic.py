"""The synthetic-hemorrhage engine: placement, partial-volume blending, ground truth, UIDs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import UID
from scipy import ndimage

from dicom_node.imaging.masks import dice_coefficient, intracranial_mask
from dicom_node.series.volume import CTVolume, load_ct_volume, read_datasets
from dicom_node.training.synthetic import (
    SYNTHETIC_HEMORRHAGE_NOTE,
    SyntheticBleed,
    insert_ellipsoid_hemorrhage,
    with_new_uids,
)

RADIUS_10_ML = (3 * 10_000 / (4 * np.pi)) ** (1 / 3)  # mm, sphere of 10 mL


@pytest.fixture(scope="module")
def ge_datasets(shared_data: Path) -> list[pydicom.Dataset]:
    return read_datasets(sorted((shared_data / "head-ct-ge").glob("*.dcm")))


@pytest.fixture(scope="module")
def ge_volume(ge_datasets) -> CTVolume:
    return load_ct_volume(ge_datasets)


@pytest.fixture(scope="module")
def brain(ge_volume) -> np.ndarray:
    return intracranial_mask(ge_volume)


@pytest.fixture(scope="module")
def bleed(ge_datasets) -> SyntheticBleed:
    return insert_ellipsoid_hemorrhage(
        ge_datasets, center_mm=None, semi_axes_mm=(RADIUS_10_ML,) * 3, hu=65.0, seed=0
    )


@pytest.fixture(scope="module")
def bleed_volume(bleed) -> CTVolume:
    return load_ct_volume(bleed.datasets)


def test_automatic_centre_puts_the_whole_bleed_inside_the_brain(bleed, brain, ge_volume):
    assert bleed.mask.shape == ge_volume.shape
    assert bleed.mask.any()
    assert not np.any(bleed.mask & ~brain)
    (centre_index,) = ge_volume.nearest_voxel_indices(np.array([bleed.center_mm]))
    assert brain[tuple(centre_index)]
    assert bleed.sop_instance_uids == ge_volume.sop_instance_uids


def test_volumes_analytic_and_integrated(bleed):
    assert bleed.inserted_volume_ml == pytest.approx(10.0, rel=1e-9)
    assert bleed.mask_volume_ml == pytest.approx(bleed.inserted_volume_ml, rel=0.10)


def test_hu_inside_is_that_of_the_blood(bleed, bleed_volume):
    core = ndimage.binary_erosion(bleed.mask, structure=np.ones((1, 5, 5), dtype=bool))
    values = bleed_volume.hu[core]
    assert values.size > 1000
    assert np.mean(values) == pytest.approx(65.0, abs=4.0)
    # Noise was added, matched to the scan: neither flat nor wild.
    assert 1.0 < np.std(values) < 15.0
    assert all(0.0 <= sd < 15.0 for sd in bleed.noise_hu)


def test_pixels_away_from_the_bleed_are_untouched(bleed, bleed_volume, ge_volume):
    near = ndimage.binary_dilation(bleed.mask, iterations=12)
    np.testing.assert_array_equal(bleed_volume.hu[~near], ge_volume.hu[~near])
    assert not np.array_equal(bleed_volume.hu[bleed.mask], ge_volume.hu[bleed.mask])


def test_inputs_are_not_modified(ge_datasets, ge_volume, bleed):
    assert load_ct_volume(ge_datasets).hu.tobytes() == ge_volume.hu.tobytes()
    assert all(a is not b for a, b in zip(ge_datasets, bleed.datasets, strict=True))
    assert [ds.SOPInstanceUID for ds in bleed.datasets] == [ds.SOPInstanceUID for ds in ge_datasets]


def test_series_is_marked_synthetic(bleed):
    for ds in bleed.datasets:
        assert SYNTHETIC_HEMORRHAGE_NOTE in ds.SeriesDescription
        assert len(ds.SeriesDescription) <= 64
        assert "Synthetic" in ds.DerivationDescription


def test_reproducible_with_the_same_seed(ge_datasets, bleed):
    again = insert_ellipsoid_hemorrhage(
        ge_datasets, center_mm=None, semi_axes_mm=(RADIUS_10_ML,) * 3, hu=65.0, seed=0
    )
    assert again.center_mm == bleed.center_mm
    np.testing.assert_array_equal(again.mask, bleed.mask)
    for a, b in zip(again.datasets, bleed.datasets, strict=True):
        assert a.PixelData == b.PixelData


def test_another_seed_gives_another_bleed(ge_datasets, bleed):
    other = insert_ellipsoid_hemorrhage(
        ge_datasets, center_mm=None, semi_axes_mm=(RADIUS_10_ML,) * 3, hu=65.0, seed=1
    )
    assert other.center_mm != bleed.center_mm


def test_partial_volume_without_noise(ge_datasets, bleed, ge_volume):
    result = insert_ellipsoid_hemorrhage(
        ge_datasets, center_mm=bleed.center_mm, semi_axes_mm=(8.0, 8.0, 8.0), noise_hu=0.0
    )
    volume = load_ct_volume(result.datasets)
    changed = volume.hu != ge_volume.hu
    # Fully inside: exactly the blood value (stored values are integers).
    full = volume.hu[changed & result.mask]
    assert np.median(full) == 65.0
    # Partial-volume voxels lie between the old value and the blood value.
    old, new = ge_volume.hu[changed], volume.hu[changed]
    low, high = np.minimum(old, 65.0) - 0.5, np.maximum(old, 65.0) + 0.5
    assert np.all((new >= low) & (new <= high))
    assert np.any(changed & ~result.mask)  # a partial-volume rim below f = 0.5


def test_rotation_turns_the_ellipsoid(ge_datasets, bleed):
    quarter_turn_about_z = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    turned = insert_ellipsoid_hemorrhage(
        ge_datasets,
        center_mm=bleed.center_mm,
        semi_axes_mm=(14.0, 7.0, 6.0),
        rotation=quarter_turn_about_z,
        noise_hu=0.0,
    )
    plain = insert_ellipsoid_hemorrhage(
        ge_datasets, center_mm=bleed.center_mm, semi_axes_mm=(7.0, 14.0, 6.0), noise_hu=0.0
    )
    assert dice_coefficient(turned.mask, plain.mask) > 0.99
    assert turned.inserted_volume_ml == pytest.approx(4 / 3 * np.pi * 14 * 7 * 6 / 1000)


def test_restricting_the_centre_to_slices(ge_datasets, ge_volume):
    result = insert_ellipsoid_hemorrhage(
        ge_datasets, center_mm=None, semi_axes_mm=(6.0, 6.0, 6.0), candidate_slices=range(17, 22)
    )
    (index,) = ge_volume.nearest_voxel_indices(np.array([result.center_mm]))
    assert 17 <= index[0] < 22


def test_invalid_arguments(ge_datasets):
    with pytest.raises(ValueError, match="semi_axes_mm"):
        insert_ellipsoid_hemorrhage(ge_datasets, center_mm=None, semi_axes_mm=(5.0, 0.0, 5.0))
    with pytest.raises(ValueError, match="rotation"):
        insert_ellipsoid_hemorrhage(
            ge_datasets, center_mm=None, semi_axes_mm=(5.0, 5.0, 5.0), rotation=np.ones((3, 3))
        )
    with pytest.raises(ValueError, match="no"):
        insert_ellipsoid_hemorrhage(ge_datasets, center_mm=None, semi_axes_mm=(90.0, 90.0, 90.0))


def test_stored_values_go_through_the_rescale(shared_data):
    """Intercept -1024, unsigned 12-bit: the written stored value reads back as the HU."""
    datasets = read_datasets(sorted((shared_data / "head-phantom-philips" / "S2010").iterdir()))
    volume = load_ct_volume(datasets)
    centre = volume.patient_coordinates(20)[256, 256]  # air inside the phantom's skull
    result = insert_ellipsoid_hemorrhage(
        datasets, center_mm=tuple(centre), semi_axes_mm=(10.0, 10.0, 10.0), noise_hu=0.0
    )
    k = result.sop_instance_uids.index(volume.sop_instance_uids[20])
    ds = next(d for d in result.datasets if d.SOPInstanceUID == volume.sop_instance_uids[20])
    assert ds.pixel_array[256, 256] == 65 + 1024
    assert load_ct_volume(result.datasets).hu[k, 256, 256] == 65.0


def test_compressed_source_is_written_back_uncompressed(shared_data):
    datasets = read_datasets(sorted((shared_data / "chest-ct" / "jpeg-lossless-40").iterdir()))
    volume = load_ct_volume(datasets)
    centre = volume.patient_coordinates(20)[256, 256]
    result = insert_ellipsoid_hemorrhage(
        datasets, center_mm=tuple(centre), semi_axes_mm=(6.0, 6.0, 6.0), noise_hu=0.0
    )
    touched = [ds for ds in result.datasets if not ds.file_meta.TransferSyntaxUID.is_compressed]
    assert touched, "slices with the lesion must be re-encoded uncompressed"
    for ds in touched:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        buffer.seek(0)
        back = pydicom.dcmread(buffer)
        np.testing.assert_array_equal(back.pixel_array, ds.pixel_array)
        assert back.SOPInstanceUID == ds.SOPInstanceUID
    assert load_ct_volume(result.datasets).hu[20, 256, 256] == 65.0


# ------------------------------------------------------------------ new UIDs


def test_new_uids_are_valid_consistent_and_new(ge_datasets):
    renamed = with_new_uids(ge_datasets, seed=3)
    assert len(renamed) == len(ge_datasets)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        values = {ds[keyword].value for ds in renamed}
        assert len(values) == 1
        (value,) = values
        assert UID(value).is_valid
        assert value != ge_datasets[0][keyword].value
    sop_uids = [ds.SOPInstanceUID for ds in renamed]
    assert len(set(sop_uids)) == len(sop_uids)
    assert all(UID(uid).is_valid for uid in sop_uids)
    assert not set(sop_uids) & {ds.SOPInstanceUID for ds in ge_datasets}
    assert all(ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID for ds in renamed)
    # Still one loadable series, pixels unchanged.
    volume = load_ct_volume(renamed)
    assert volume.hu.tobytes() == load_ct_volume(ge_datasets).hu.tobytes()


def test_new_uids_are_reproducible_and_seeded(ge_datasets):
    first = with_new_uids(ge_datasets, seed=3)
    again = with_new_uids(list(reversed(ge_datasets)), seed=3)
    assert {ds.SOPInstanceUID for ds in first} == {ds.SOPInstanceUID for ds in again}
    assert first[0].SeriesInstanceUID == again[0].SeriesInstanceUID
    other = with_new_uids(ge_datasets, seed=4)
    assert other[0].SeriesInstanceUID != first[0].SeriesInstanceUID
    assert not {ds.SOPInstanceUID for ds in other} & {ds.SOPInstanceUID for ds in first}
    assert ge_datasets[0].SOPInstanceUID == ge_datasets[0].file_meta.MediaStorageSOPInstanceUID


def test_new_uids_of_nothing():
    with pytest.raises(ValueError):
        with_new_uids([], seed=0)
