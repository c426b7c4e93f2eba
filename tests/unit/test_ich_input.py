"""Model input of the learned ICH pipeline: geometry kept, windows, 2.5D stacks."""

from __future__ import annotations

import numpy as np
import pytest

from dicom_node.imaging.ich_input import (
    ICH_SUBTYPES,
    IchInputSpec,
    head_grid,
    labels_to_model_grid,
    stack_context,
    subtype_label,
    to_model_grid,
    to_source_grid,
    window_channels,
)
from dicom_node.imaging.windowing import Window
from dicom_node.series.volume import load_ct_volume, read_datasets
from dicom_node.training.ich_data import downsample_volume


@pytest.fixture(scope="module")
def head(head_ct_dir):
    files = sorted(p for p in head_ct_dir.rglob("*") if p.is_file())
    return load_ct_volume(read_datasets(files))


def _phantom(rows=200, cols=240):
    hu = np.full((3, rows, cols), -1000.0, dtype=np.float32)
    hu[:, 40:160, 50:210] = 30.0  # the "head": rows 40-159, columns 50-209
    return hu


def test_head_grid_centres_the_head_and_scales_to_the_model_spacing():
    spec = IchInputSpec(pixel_spacing_mm=2.0, size=64)
    grid = head_grid(_phantom(), (0.5, 1.0), spec)
    # head centre (row 99.5, column 129.5) lands on the grid centre 31.5
    u, v = grid.matrix @ np.array([129.5, 99.5, 1.0])
    assert u == pytest.approx(31.5) and v == pytest.approx(31.5)
    assert grid.matrix[0, 0] == pytest.approx(0.5)  # 1.0 mm columns -> 2 mm
    assert grid.matrix[1, 1] == pytest.approx(0.25)  # 0.5 mm rows -> 2 mm


def test_head_grid_refuses_a_series_without_a_head():
    with pytest.raises(ValueError, match="no head"):
        head_grid(np.full((2, 8, 8), -1000.0, dtype=np.float32), (1.0, 1.0), IchInputSpec())


def test_a_blob_goes_to_the_model_grid_and_back_to_the_same_source_pixels():
    spec = IchInputSpec(pixel_spacing_mm=2.0, size=64)
    hu = _phantom()
    hu[1, 90:110, 100:140] = 70.0  # 10 mm x 40 mm block at 0.5 x 1.0 mm pixels
    grid = head_grid(hu, (0.5, 1.0), spec)
    model = to_model_grid(hu, grid)
    blob = model[1] > 50
    # about 5 x 20 model pixels of 2 mm
    assert 60 <= blob.sum() <= 140
    back = to_source_grid(model, grid)
    source_blob = back[1] > 50
    overlap = (source_blob & (hu[1] > 50)).sum() / (hu[1] > 50).sum()
    assert overlap > 0.8
    assert not source_blob[:, :90].any()  # nothing far from the blob


def test_probabilities_keep_their_channels_on_the_way_back():
    spec = IchInputSpec(pixel_spacing_mm=2.0, size=32)
    grid = head_grid(_phantom(), (1.0, 1.0), spec)
    probabilities = np.zeros((3, 32, 32, 6), dtype=np.float32)
    probabilities[..., 0] = 1.0
    probabilities[2, 10:20, 10:20, 0] = 0.0
    probabilities[2, 10:20, 10:20, 4] = 1.0
    back = to_source_grid(probabilities, grid)
    assert back.shape == (3, 200, 240, 6)
    assert back[2, ..., 4].max() == pytest.approx(1.0)
    assert back[0, ..., 4].max() == 0.0


def test_labels_keep_thin_blood_on_the_coarser_grid():
    spec = IchInputSpec(pixel_spacing_mm=2.0, size=64)
    labels = np.zeros((1, 200, 240), dtype=np.uint8)
    labels[0, 60:140, 100:102] = subtype_label("subarachnoid hemorrhage")  # 1 mm thin line
    grid = head_grid(_phantom()[:1], (0.5, 0.5), spec)
    model = labels_to_model_grid(labels, grid)
    assert set(np.unique(model)) == {0, 3}
    assert (model == 3).sum() >= 15


def test_window_channels_follow_the_windows():
    spec = IchInputSpec(windows=(Window(40.0, 80.0), Window(600.0, 2800.0)))
    out = window_channels(np.array([[[0.0, 40.0, 80.0, 2000.0]]], dtype=np.float32), spec)
    assert out.dtype == np.uint8
    assert out[0, 0, :, 0].tolist() == [0, 128, 255, 255]
    assert out[0, 0, 3, 1] == 255 and out[0, 0, 0, 1] == 73


def test_stack_context_orders_neighbours_and_repeats_edges():
    spec = IchInputSpec(windows=(Window(40.0, 80.0),), context_slices=1, size=4)
    windowed = np.stack([np.full((4, 4, 1), 10 * k, dtype=np.uint8) for k in range(3)])
    stacked = stack_context(windowed, spec)
    assert stacked.shape == (3, 4, 4, 3)
    assert (stacked[0, 0, 0] * 255).round().tolist() == [0, 0, 10]
    assert (stacked[2, 0, 0] * 255).round().tolist() == [10, 20, 20]


def test_spec_manifest_round_trip_and_errors():
    spec = IchInputSpec()
    assert IchInputSpec.from_manifest(spec.to_manifest()) == spec
    assert spec.channels == 9
    with pytest.raises(ValueError, match="incomplete"):
        IchInputSpec.from_manifest({"size": 128})
    bad = spec.to_manifest() | {"pixel_spacing_mm": 0}
    with pytest.raises(ValueError, match="out of range"):
        IchInputSpec.from_manifest(bad)


def test_subtype_labels_follow_the_documented_order():
    assert [subtype_label(s) for s in ICH_SUBTYPES] == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="unknown hemorrhage subtype"):
        subtype_label("type3")


def test_downsampled_volume_keeps_the_exact_pixel_centres(head):
    small = downsample_volume(head, 2)
    assert small.shape == (head.shape[0], head.shape[1] // 2, head.shape[2] // 2)
    assert small.pixel_spacing_mm == pytest.approx(tuple(2 * v for v in head.pixel_spacing_mm))
    k = 5

    # new pixel (row 3, column 7) is the mean of source rows 6-7 and columns 14-15
    def centre(volume, row, col):
        return (
            volume.image_positions_mm[k]
            + volume.row_direction * col * volume.pixel_spacing_mm[1]
            + volume.column_direction * row * volume.pixel_spacing_mm[0]
        )

    expected = np.mean([centre(head, r, c) for r in (6, 7) for c in (14, 15)], axis=0)
    assert centre(small, 3, 7) == pytest.approx(expected, abs=1e-6)
    assert small.hu[k, 3, 7] == pytest.approx(
        np.maximum(head.hu[k, 6:8, 14:16], -1024).mean(), abs=1e-3
    )
