"""CTVolume loading: slice order, HU, tilted and irregular geometry, rule violations."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicom_node.errors import SeriesLoadError
from dicom_node.series.volume import (
    CTVolume,
    derived_frame_of_reference_uid,
    load_ct_volume,
    read_datasets,
    source_images_for,
)


@pytest.fixture(scope="module")
def ge_paths(shared_data: Path) -> list[Path]:
    return sorted((shared_data / "head-ct-ge").glob("*.dcm"))


@pytest.fixture(scope="module")
def ge_datasets(ge_paths: list[Path]) -> list[pydicom.Dataset]:
    return read_datasets(ge_paths)


@pytest.fixture(scope="module")
def ge_volume(ge_datasets: list[pydicom.Dataset]) -> CTVolume:
    return load_ct_volume(ge_datasets)


def _copies(datasets: list[pydicom.Dataset]) -> list[pydicom.Dataset]:
    return [copy.deepcopy(ds) for ds in datasets]


def test_read_datasets_reads_pixels_and_keeps_order(ge_paths):
    datasets = read_datasets(ge_paths[::-1][:3])
    assert [ds.InstanceNumber for ds in datasets] == [28, 27, 26]
    assert datasets[0].pixel_array.shape == (512, 512)


def test_read_datasets_names_a_file_that_is_not_dicom(tmp_path, ge_paths):
    junk = tmp_path / "notes.txt"
    junk.write_text("this is not DICOM")
    with pytest.raises(SeriesLoadError, match="notes.txt"):
        read_datasets([ge_paths[0], junk])


def test_order_is_by_position_not_input_order_file_name_or_instance_number(ge_datasets, ge_volume):
    shuffled = _copies(ge_datasets)
    random.Random(7).shuffle(shuffled)
    for ds in shuffled:  # Instance Number must not matter either
        ds.InstanceNumber = 100 - int(ds.InstanceNumber) if ds.InstanceNumber % 2 else 1
    volume = load_ct_volume(shuffled)
    assert volume.sop_instance_uids == ge_volume.sop_instance_uids
    np.testing.assert_array_equal(volume.hu, ge_volume.hu)
    np.testing.assert_array_equal(volume.image_positions_mm, ge_volume.image_positions_mm)
    assert np.all(np.diff(volume.slice_positions_mm) > 0)
    # On this series ascending along the normal is ascending z (feet to head).
    assert np.all(np.diff(volume.image_positions_mm[:, 2]) > 0)


def test_volume_identity_attributes(ge_datasets, ge_volume):
    first = ge_datasets[0]
    assert ge_volume.shape == (28, 512, 512)
    assert ge_volume.hu.dtype == np.float32
    assert ge_volume.study_instance_uid == first.StudyInstanceUID
    assert ge_volume.series_instance_uid == first.SeriesInstanceUID
    assert ge_volume.frame_of_reference_uid == first.FrameOfReferenceUID
    assert ge_volume.pixel_spacing_mm == pytest.approx((0.4882812, 0.4882812))


def test_hu_rescale_with_intercept_minus_1024(shared_data):
    paths = sorted((shared_data / "head-phantom-philips" / "S2010").iterdir())
    datasets = read_datasets(paths)
    assert {float(ds.RescaleIntercept) for ds in datasets} == {-1024.0}
    volume = load_ct_volume(datasets)
    by_uid = {ds.SOPInstanceUID: ds for ds in datasets}
    for k in (0, 13, 27):
        ds = by_uid[volume.sop_instance_uids[k]]
        expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(volume.hu[k], expected.astype(np.float32))
    # Air around the phantom and inside its empty skull (slice 20) is about -1000 HU.
    assert -1030 < np.median(volume.hu[:, :40, :40]) < -970
    assert -1030 < np.median(volume.hu[20, 236:276, 236:276]) < -970
    # The soft-tissue-equivalent cylinder in the centre of slice 0 is near water.
    assert 0 < np.median(volume.hu[0, 246:266, 246:266]) < 150


def test_brain_hu_of_the_ge_head(ge_volume):
    centre = ge_volume.hu[18, 216:296, 216:296]  # deep white/grey matter, intercept 0
    assert 15 < np.median(centre) < 45


def test_gantry_tilt_patient_coordinates_follow_each_slice(ge_volume):
    orientation = ge_volume.image_orientation
    assert orientation[3:] == pytest.approx([0.0, 0.9483237, -0.3173047], abs=1e-6)
    np.testing.assert_allclose(ge_volume.normal, [0.0, 0.3173047, 0.9483237], atol=1e-6)
    assert ge_volume.is_sheared
    row_mm, col_mm = ge_volume.pixel_spacing_mm
    for k in (0, 13, 14, 27):
        coordinates = ge_volume.patient_coordinates(k)
        assert coordinates.shape == (512, 512, 3)
        np.testing.assert_allclose(coordinates[0, 0], ge_volume.image_positions_mm[k])
        # Down a column (next row) moves along IOP's column direction by the row spacing,
        # along a row (next column) along IOP's row direction by the column spacing.
        np.testing.assert_allclose(
            coordinates[1, 0] - coordinates[0, 0], orientation[3:] * row_mm, atol=1e-9
        )
        np.testing.assert_allclose(
            coordinates[0, 1] - coordinates[0, 0], orientation[:3] * col_mm, atol=1e-9
        )
        np.testing.assert_allclose(
            coordinates[511, 511] - coordinates[0, 0],
            511 * (orientation[3:] * row_mm + orientation[:3] * col_mm),
            atol=1e-9,
        )
    # Every pixel of a slice lies in that slice's plane.
    along = ge_volume.patient_coordinates(20) @ ge_volume.normal
    np.testing.assert_allclose(along, ge_volume.slice_positions_mm[20], atol=1e-9)
    with pytest.raises(IndexError):
        ge_volume.patient_coordinates(28)


def test_nearest_voxel_indices_round_trip_on_a_sheared_stack(ge_volume):
    expected = np.array([[0, 10, 20], [13, 250, 260], [14, 100, 400], [27, 511, 0]])
    points = np.stack([ge_volume.patient_coordinates(k)[r, c] for k, r, c in expected])
    np.testing.assert_array_equal(ge_volume.nearest_voxel_indices(points), expected)
    outside = points[:1] - 50.0 * ge_volume.normal
    assert ge_volume.nearest_voxel_indices(outside).tolist() == [[-1, -1, -1]]


def test_slice_spacing_of_the_ge_head(ge_volume):
    steps = ge_volume.slice_steps_mm
    np.testing.assert_allclose(steps[:13], 4.0, atol=0.01)
    assert steps[13] == pytest.approx(1.08, abs=0.01)
    np.testing.assert_allclose(steps[14:], 7.0, atol=0.01)
    spacing = ge_volume.slice_spacing_mm
    assert spacing.shape == (28,)
    np.testing.assert_allclose(spacing[:13], 4.0, atol=0.01)  # 4 mm region, edge mirrors
    assert spacing[13] == pytest.approx((steps[12] + steps[13]) / 2)
    assert spacing[14] == pytest.approx((steps[13] + steps[14]) / 2)
    np.testing.assert_allclose(spacing[15:], 7.0, atol=0.01)  # 7 mm region, edge mirrors
    # Cavalieri: the slabs cover first-to-last distance plus one step at each end.
    extent = ge_volume.slice_positions_mm[-1] - ge_volume.slice_positions_mm[0]
    assert spacing.sum() == pytest.approx(extent + (steps[0] + steps[-1]) / 2)
    row_mm, col_mm = ge_volume.pixel_spacing_mm
    np.testing.assert_allclose(ge_volume.voxel_volume_ml, row_mm * col_mm * spacing / 1000)
    assert ge_volume.slice_thickness_mm is None  # 4 mm then 7 mm
    assert ge_volume.slice_thicknesses_mm[:14] == (4.0,) * 14
    assert ge_volume.slice_thicknesses_mm[14:] == (7.0,) * 14


def test_irregular_sheared_stack_is_not_a_highdicom_volume(ge_volume):
    assert not ge_volume.is_regular
    with pytest.raises(SeriesLoadError, match="irregular"):
        ge_volume.to_highdicom()
    affine = ge_volume.affine
    # The mean-step affine is exact at the first and the last slice.
    np.testing.assert_allclose(affine @ [0, 0, 0, 1], [*ge_volume.image_positions_mm[0], 1])
    np.testing.assert_allclose(affine @ [27, 0, 0, 1], [*ge_volume.image_positions_mm[27], 1])


def test_regular_sheared_stack_is_refused_by_to_highdicom(ge_datasets):
    regular = _copies(ge_datasets[:10])  # the first 10 slices step 4.22 mm in z only
    volume = load_ct_volume(regular)
    assert volume.is_regular and volume.is_sheared
    with pytest.raises(SeriesLoadError, match="sheared"):
        volume.to_highdicom()
    # The affine is exact for every slice of a regular stack.
    row_mm, col_mm = volume.pixel_spacing_mm
    for k in range(10):
        np.testing.assert_allclose(
            volume.affine @ [k, 5, 7, 1], [*volume.patient_coordinates(k)[5, 7], 1], atol=1e-6
        )


def test_regular_stack_converts_to_highdicom(shared_data):
    paths = sorted((shared_data / "head-phantom-philips" / "S2010").iterdir())
    volume = load_ct_volume(read_datasets(paths))
    assert volume.is_regular and not volume.is_sheared
    converted = volume.to_highdicom()
    assert converted.shape == (28, 512, 512)
    assert converted.frame_of_reference_uid == volume.frame_of_reference_uid
    assert converted.spacing == pytest.approx((5.0, 0.451171875, 0.451171875))
    np.testing.assert_allclose(converted.affine, volume.affine)
    np.testing.assert_array_equal(converted.array, volume.hu)


def test_jpeg_lossless_chest_loads(shared_data):
    paths = sorted((shared_data / "chest-ct" / "jpeg-lossless-40").iterdir())
    datasets = read_datasets(paths)
    assert datasets[0].file_meta.TransferSyntaxUID.is_compressed
    volume = load_ct_volume(datasets)
    assert volume.shape == (40, 512, 512)
    assert volume.is_regular
    np.testing.assert_allclose(volume.slice_steps_mm, 1.25, atol=0.01)
    lung_and_air = volume.hu[volume.hu > -1100]
    assert np.percentile(lung_and_air, 5) < -800  # air-filled lung
    assert -200 < np.median(volume.hu[20, 300:340, 236:276]) < 200  # mediastinum


# ---------------------------------------------------------------- rule violations


def test_fewer_than_three_slices(ge_datasets):
    with pytest.raises(SeriesLoadError, match="at least 3 slices"):
        load_ct_volume(_copies(ge_datasets[:2]))


def test_mixed_orientation_names_the_instance(ge_datasets):
    datasets = _copies(ge_datasets[:5])
    datasets[3].ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    with pytest.raises(SeriesLoadError, match="one Image Orientation") as info:
        load_ct_volume(datasets)
    assert datasets[3].SOPInstanceUID in str(info.value)


def test_orientation_within_tolerance_is_accepted(ge_datasets):
    datasets = _copies(ge_datasets[:5])
    orientation = [float(x) for x in datasets[2].ImageOrientationPatient]
    orientation[4] += 5e-5
    datasets[2].ImageOrientationPatient = orientation
    assert load_ct_volume(datasets).shape[0] == 5


def test_mismatched_rows_and_columns(ge_datasets):
    datasets = _copies(ge_datasets[:5])
    datasets[1].Rows = 256
    with pytest.raises(SeriesLoadError, match="one Rows/Columns") as info:
        load_ct_volume(datasets)
    assert datasets[1].SOPInstanceUID in str(info.value)


def test_mismatched_pixel_spacing(ge_datasets):
    datasets = _copies(ge_datasets[:5])
    datasets[4].PixelSpacing = [0.5, 0.5]
    with pytest.raises(SeriesLoadError, match="one Pixel Spacing"):
        load_ct_volume(datasets)


def test_two_frames_of_reference(ge_datasets):
    datasets = _copies(ge_datasets[:5])
    datasets[0].FrameOfReferenceUID = pydicom.uid.generate_uid()
    with pytest.raises(
        SeriesLoadError,
        match=r"rule 'one FrameOfReferenceUID' broken: found 2 distinct FrameOfReferenceUIDs",
    ):
        load_ct_volume(datasets)


@pytest.mark.parametrize("empty", ["absent", "empty value"])
def test_some_instances_without_frame_of_reference_are_refused(ge_datasets, empty):
    datasets = _copies(ge_datasets)
    for ds in datasets[3:15]:
        if empty == "absent":
            del ds.FrameOfReferenceUID
        else:
            ds.FrameOfReferenceUID = ""
    with pytest.raises(
        SeriesLoadError,
        match=r"rule 'one FrameOfReferenceUID' broken: 12 of 28 instances lack FrameOfReferenceUID",
    ):
        load_ct_volume(datasets)


def test_no_instance_with_a_frame_of_reference_gets_a_derived_one(ge_datasets, ge_volume):
    datasets = _copies(ge_datasets[:6])
    for ds in datasets:
        del ds.FrameOfReferenceUID
    volume = load_ct_volume(datasets)
    assert volume.frame_of_reference_derived
    assert volume.frame_of_reference_uid != ge_volume.frame_of_reference_uid
    assert volume.frame_of_reference_uid == derived_frame_of_reference_uid(
        str(ge_datasets[0].SeriesInstanceUID)
    )
    assert not ge_volume.frame_of_reference_derived
    # Without a derived UID, the builders get the caller's own datasets, in slice order.
    ordered = source_images_for(ge_volume, list(reversed(ge_datasets)))
    assert [ds.SOPInstanceUID for ds in ordered] == list(ge_volume.sop_instance_uids)
    given = {id(ds) for ds in ge_datasets}
    assert all(id(ds) in given for ds in ordered)


def test_series_uids_must_be_present_on_every_instance(ge_datasets):
    datasets = _copies(ge_datasets[:5])
    del datasets[1].SeriesInstanceUID
    with pytest.raises(
        SeriesLoadError, match="rule 'one SeriesInstanceUID' broken: 1 of 5 instances lack"
    ):
        load_ct_volume(datasets)


def test_duplicate_position(ge_datasets):
    datasets = _copies(ge_datasets[:5])
    datasets[2].ImagePositionPatient = list(datasets[1].ImagePositionPatient)
    with pytest.raises(SeriesLoadError, match="same position") as info:
        load_ct_volume(datasets)
    assert datasets[2].SOPInstanceUID in str(info.value)


def test_duplicate_instance(ge_datasets):
    datasets = _copies(ge_datasets[:5]) + _copies(ge_datasets[2:3])
    with pytest.raises(SeriesLoadError, match="no duplicate instances"):
        load_ct_volume(datasets)


def test_missing_rescale_is_refused(ge_datasets):
    datasets = _copies(ge_datasets[:4])
    del datasets[2].RescaleIntercept
    with pytest.raises(SeriesLoadError, match="Rescale"):
        load_ct_volume(datasets)


def test_mask_volume_ml_integrates_per_slice(ge_volume):
    mask = np.zeros(ge_volume.shape, dtype=bool)
    mask[0, :10, :10] = True
    mask[20, :10, :10] = True
    expected = 100 * (ge_volume.voxel_volume_ml[0] + ge_volume.voxel_volume_ml[20])
    assert ge_volume.mask_volume_ml(mask) == pytest.approx(expected)
    with pytest.raises(ValueError):
        ge_volume.mask_volume_ml(mask[:3])


def test_ctvolume_checks_its_shapes(ge_volume):
    with pytest.raises(ValueError, match="SOP Instance UIDs"):
        CTVolume(
            hu=ge_volume.hu,
            sop_instance_uids=ge_volume.sop_instance_uids[:-1],
            image_positions_mm=ge_volume.image_positions_mm,
            image_orientation=ge_volume.image_orientation,
            pixel_spacing_mm=ge_volume.pixel_spacing_mm,
            slice_thickness_mm=None,
            frame_of_reference_uid=ge_volume.frame_of_reference_uid,
            study_instance_uid=ge_volume.study_instance_uid,
            series_instance_uid=ge_volume.series_instance_uid,
        )
