"""Quality gates on the real series in ../shared/data and on modified copies of them.

Each gate is shown failing on a copy with one defect (a slice removed, a
tilted slice mixed in, too few slices, the skull cut by the field of view or
by the series' extent, a colour slice, no rescale) and passing on the
unmodified series, including the GE head whose slice step changes from 4 mm
to 7 mm.
"""

from __future__ import annotations

import copy

import numpy as np
import pydicom
import pytest

from dicom_node.series.quality import (
    QualitySettings,
    check_head_coverage,
    check_series_headers,
    slice_gaps,
)
from dicom_node.series.volume import load_ct_volume, read_datasets

SETTINGS = QualitySettings()


def _position(ds: pydicom.Dataset) -> float:
    orientation = np.asarray(ds.ImageOrientationPatient, dtype=float)
    return float(np.cross(orientation[:3], orientation[3:]) @ np.asarray(ds.ImagePositionPatient))


@pytest.fixture(scope="module")
def ge_head(shared_data) -> list[pydicom.Dataset]:
    """The GE head (pixels loaded), in position order along the normal."""
    return sorted(read_datasets(sorted((shared_data / "head-ct-ge").glob("*.dcm"))), key=_position)


def _copies(datasets):
    return [copy.deepcopy(ds) for ds in datasets]


# --- the real series pass ------------------------------------------------------


@pytest.mark.parametrize("folder", ["head-ct-ge", "head-phantom-philips/S2010"])
def test_real_head_series_pass_every_gate(shared_data, folder):
    datasets = read_datasets(sorted((shared_data / folder).glob("*.dcm")))
    assert check_series_headers(datasets, SETTINGS) is None
    assert check_head_coverage(load_ct_volume(datasets), SETTINGS) is None


def test_ge_step_change_from_4_to_7_mm_is_not_a_gap(ge_head):
    positions = np.asarray([_position(ds) for ds in ge_head])
    steps = np.round(np.diff(positions), 2)
    assert set(steps[:13]) == {4.0} and set(steps[14:]) == {7.0}  # 1.08 mm at the junction
    thicknesses = [float(ds.SliceThickness) for ds in ge_head]
    assert slice_gaps(positions, thicknesses, 1.5) == []


# --- missing slices --------------------------------------------------------------


@pytest.mark.parametrize(("removed", "step_mm", "expected_mm"), [(5, 8.0, 4.0), (20, 14.0, 7.0)])
def test_a_removed_slice_is_a_gap(ge_head, removed, step_mm, expected_mm):
    damaged = ge_head[:removed] + ge_head[removed + 1 :]
    failure = check_series_headers(damaged, SETTINGS)
    assert failure is not None and failure.gate == "missing_slices"
    assert f"{step_mm:.1f} mm between slices {removed} and {removed + 1}" in failure.reason
    assert f"where {expected_mm:.1f} mm is expected" in failure.reason


def test_gap_rule_without_slice_thickness_uses_the_modal_step():
    positions = np.arange(20, dtype=float) * 5.0
    positions[10:] += 5.0  # one slice missing
    (gap,) = slice_gaps(positions, [None] * 20, 1.5)
    assert (gap.index, gap.step_mm, gap.expected_mm) == (9, 10.0, 5.0)


# --- orientation -------------------------------------------------------------------


def test_a_tilted_slice_mixed_in_is_caught(ge_head):
    damaged = _copies(ge_head)
    angle = np.deg2rad(10.0)
    row = np.asarray(damaged[12].ImageOrientationPatient[:3], dtype=float)
    column = np.asarray(damaged[12].ImageOrientationPatient[3:], dtype=float)
    normal = np.cross(row, column)
    tilted = np.cos(angle) * column + np.sin(angle) * normal  # rotate about the row axis
    damaged[12].ImageOrientationPatient = [*row.round(6), *tilted.round(6)]
    failure = check_series_headers(damaged, SETTINGS)
    assert failure is not None and failure.gate == "orientation"
    assert "1 of 28 slices are tilted by up to 10.0 deg" in failure.reason


# --- slice count -------------------------------------------------------------------


def test_too_few_slices(ge_head):
    failure = check_series_headers(ge_head[:6], SETTINGS)
    assert failure is not None and failure.gate == "slice_count"
    assert "6, at least 10 needed" in failure.reason


# --- pixel format ------------------------------------------------------------------


def test_a_colour_slice_is_an_unsupported_pixel_format(ge_head):
    damaged = _copies(ge_head)
    grey = damaged[3].pixel_array
    rgb = np.repeat(((grey - grey.min()) // 16).clip(0, 255).astype(np.uint8)[..., None], 3, -1)
    damaged[3].PhotometricInterpretation = "RGB"
    damaged[3].SamplesPerPixel = 3
    damaged[3].PlanarConfiguration = 0
    damaged[3].BitsAllocated = damaged[3].BitsStored = 8
    damaged[3].HighBit = 7
    damaged[3].PixelRepresentation = 0
    damaged[3].PixelData = rgb.tobytes()
    failure = check_series_headers(damaged, SETTINGS)
    assert failure is not None and failure.gate == "pixel_format"
    assert "RGB with 3 sample(s) per pixel" in failure.reason


def test_no_rescale_means_no_hounsfield_units(ge_head):
    damaged = _copies(ge_head)
    del damaged[0].RescaleSlope
    failure = check_series_headers(damaged, SETTINGS)
    assert failure is not None and failure.gate == "pixel_format"
    assert "Rescale Slope/Intercept" in failure.reason


# --- field of view -------------------------------------------------------------------


def test_an_in_plane_field_of_view_that_cuts_the_skull(ge_head):
    damaged = _copies(ge_head)
    for ds in damaged:
        pixels = ds.pixel_array[128:384, 128:384].copy()
        row_mm, column_mm = (float(v) for v in ds.PixelSpacing)
        orientation = np.asarray(ds.ImageOrientationPatient, dtype=float)
        origin = np.asarray(ds.ImagePositionPatient, dtype=float)
        origin += 128 * column_mm * orientation[:3] + 128 * row_mm * orientation[3:]
        ds.ImagePositionPatient = [float(v) for v in origin]
        ds.Rows, ds.Columns = pixels.shape
        ds.PixelData = pixels.tobytes()
    assert check_series_headers(damaged, SETTINGS) is None
    failure = check_head_coverage(load_ct_volume(damaged), SETTINGS)
    assert failure is not None and failure.gate == "field_of_view"
    assert "does not cover the head" in failure.reason


def test_a_series_that_stops_inside_the_head(ge_head):
    middle = ge_head[8:20]  # 12 slices through the middle of the head
    assert check_series_headers(middle, SETTINGS) is None
    failure = check_head_coverage(load_ct_volume(middle), SETTINGS)
    assert failure is not None and failure.gate == "field_of_view"
    assert "stops inside the head" in failure.reason


def test_a_chest_ct_does_not_cover_a_head(shared_data):
    volume = load_ct_volume(read_datasets(sorted((shared_data / "chest-ct/lung-30").iterdir())))
    failure = check_head_coverage(volume, SETTINGS)
    assert failure is not None and failure.gate == "field_of_view"


def test_disabled_gates_pass_everything(ge_head):
    off = QualitySettings(enabled=False)
    assert check_series_headers(ge_head[:3], off) is None


def test_settings_are_validated():
    with pytest.raises(ValueError):
        QualitySettings(max_gap_factor=1.0)
    with pytest.raises(ValueError):
        QualitySettings(unknown_key=1)
