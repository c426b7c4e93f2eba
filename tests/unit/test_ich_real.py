"""Public labelled datasets as training cases and evaluation sets (fixtures in the real layouts)."""

from __future__ import annotations

import numpy as np
import pytest

from dicom_node.errors import DatasetError
from dicom_node.imaging.ich_input import IchInputSpec
from dicom_node.training.datasets import read_bhsd, read_physionet_ct_ich
from dicom_node.training.ich_real import (
    UNKNOWN_SUBTYPE,
    evaluate_dataset,
    labelled_volume_to_ct,
    model_grid_cases_from_dataset,
)
from tests.unit.test_datasets import make_bhsd, make_physionet, make_renders, make_rsna

SPEC = IchInputSpec(pixel_spacing_mm=2.0, size=32)


def test_a_labelled_volume_keeps_its_geometry_as_a_ct_volume(tmp_path):
    labelled = next(iter(read_physionet_ct_ich(make_physionet(tmp_path))))
    volume = labelled_volume_to_ct(labelled)
    assert volume.shape == labelled.hu.shape
    assert np.allclose(volume.affine, labelled.affine)
    assert volume.pixel_spacing_mm == pytest.approx(labelled.pixel_spacing_mm)
    again = labelled_volume_to_ct(labelled)
    assert again.series_instance_uid == volume.series_instance_uid  # derived, stable


def test_physionet_cases_keep_unknown_subtype_voxels_as_ignored(tmp_path):
    cases = model_grid_cases_from_dataset(f"physionet:{make_physionet(tmp_path)}", SPEC)
    assert len(cases) == 2
    case = cases[0]
    assert case.windowed.shape[1:] == (32, 32, 3) and case.windowed.dtype == np.uint8
    values = set(np.unique(case.labels))
    # slice 2 is subdural only; slice 3 has two subtypes flagged -> unknown (255)
    assert 2 in values and UNKNOWN_SUBTYPE in values


def test_bhsd_cases_carry_all_five_subtypes(tmp_path):
    root = make_bhsd(tmp_path)
    cases = model_grid_cases_from_dataset(f"bhsd:{root}", SPEC)
    assert len(cases) == len(list(read_bhsd(root)))
    assert set(np.unique(np.concatenate([c.labels.ravel() for c in cases]))) <= set(range(6))


def test_slice_level_datasets_cannot_train_and_renders_cannot_be_evaluated(tmp_path):
    with pytest.raises(DatasetError, match="voxel labels"):
        model_grid_cases_from_dataset(f"renders:{make_renders(tmp_path / 'r')}", SPEC)
    with pytest.raises(DatasetError, match="Hounsfield"):
        evaluate_dataset(_shipped(), f"renders:{tmp_path / 'r'}")


def _shipped():
    pytest.importorskip("keras")
    from dicom_node.pipelines.ich import default_model_dir

    return default_model_dir()


@pytest.mark.parametrize("kind", ["physionet", "rsna"])
def test_evaluate_a_dataset_with_the_shipped_model(tmp_path, kind):
    root = make_physionet(tmp_path) if kind == "physionet" else tmp_path
    if kind == "rsna":
        make_rsna(tmp_path)
    report = evaluate_dataset(_shipped(), f"{kind}:{root}")
    summary = report["summary"]
    assert summary["series"] == len(report["cases"]) >= 1
    assert 0.0 <= summary["threshold"] <= 1.0
    assert all(0.0 <= case["score"] <= 1.0 for case in report["cases"])
    if kind == "physionet":
        assert summary["positive_series"] == 2
        assert set(summary["dice_mean"]) >= {"subdural hemorrhage"}
