"""ich-baseline on the real GE head, without and with synthetic bleeds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicom_node.errors import ConfigurationError, PipelineError
from dicom_node.imaging.masks import dice_coefficient
from dicom_node.pipelines import PIPELINE_NAMES, Pipeline, get_pipeline
from dicom_node.pipelines.base import PipelineResult
from dicom_node.pipelines.ich_baseline import HEMORRHAGE_LABEL, IchBaselinePipeline
from dicom_node.series.volume import CTVolume, load_ct_volume, read_datasets
from dicom_node.training.synthetic import insert_ellipsoid_hemorrhage


def _sphere_radius_mm(volume_ml: float) -> float:
    return (3 * volume_ml * 1000 / (4 * np.pi)) ** (1 / 3)


@pytest.fixture(scope="module")
def ge_datasets(shared_data: Path) -> list[pydicom.Dataset]:
    return read_datasets(sorted((shared_data / "head-ct-ge").glob("*.dcm")))


@pytest.fixture(scope="module")
def ge_volume(ge_datasets) -> CTVolume:
    return load_ct_volume(ge_datasets)


@pytest.fixture(scope="module")
def pipeline() -> IchBaselinePipeline:
    return IchBaselinePipeline()


@pytest.fixture(scope="module")
def unmodified_result(pipeline, ge_volume) -> PipelineResult:
    return pipeline.run(ge_volume)


def test_result_shape_and_identity(unmodified_result, ge_volume):
    result = unmodified_result
    assert result.pipeline == "ich-baseline"
    assert result.algorithm.name == "ich-baseline"
    assert result.algorithm.version == "0.1.0"
    assert result.algorithm.family == "image processing"
    (finding,) = result.findings
    assert finding.label == HEMORRHAGE_LABEL == "intracranial hemorrhage"
    assert finding.mask.dtype == bool
    assert finding.mask.shape == ge_volume.shape
    assert finding.probability is None
    assert finding.volume_ml == pytest.approx(ge_volume.mask_volume_ml(finding.mask))
    json.dumps(result.details)  # stored with the job: must be JSON
    assert result.details["parameters"]["min_hu"] == 50.0
    assert 1000 < result.details["intracranial_volume_ml"] < 1700


def test_unmodified_head_has_no_hemorrhage(unmodified_result):
    (finding,) = unmodified_result.findings
    assert not finding.present
    assert finding.volume_ml < 0.5
    # The hyperdense candidates exist (inner-table partial volume) and were rejected.
    assert unmodified_result.details["components_dropped"] > 10


@pytest.mark.parametrize(
    ("volume_ml", "slices", "region"),
    [
        (10.0, None, "anywhere"),
        (3.0, None, "anywhere"),
        (10.0, range(16, 25), "7 mm steps"),
        (3.0, range(4, 13), "4 mm steps"),
    ],
    ids=["10ml", "3ml", "10ml-7mm-region", "3ml-4mm-region"],
)
def test_synthetic_bleed_is_found_and_measured(
    pipeline, ge_datasets, ge_volume, volume_ml, slices, region
):
    radius_mm = _sphere_radius_mm(volume_ml)
    bleed = insert_ellipsoid_hemorrhage(
        ge_datasets,
        center_mm=None,
        semi_axes_mm=(radius_mm,) * 3,
        hu=65.0,
        seed=0,
        candidate_slices=slices,
    )
    if slices is not None:
        (index,) = ge_volume.nearest_voxel_indices(np.array([bleed.center_mm]))
        step_mm = ge_volume.slice_spacing_mm[index[0]]
        assert step_mm == pytest.approx(7.0 if region == "7 mm steps" else 4.0, abs=0.05)
    result = pipeline.run(load_ct_volume(bleed.datasets))
    (finding,) = result.findings
    assert finding.present
    assert finding.volume_ml == pytest.approx(bleed.inserted_volume_ml, rel=0.25)
    assert dice_coefficient(finding.mask, bleed.mask) > 0.7
    assert result.details["components_kept"] == 1


def test_elongated_rotated_bleed(pipeline, ge_datasets):
    angle = np.deg2rad(30.0)
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0, 0, 1.0]]
    )
    bleed = insert_ellipsoid_hemorrhage(
        ge_datasets, center_mm=None, semi_axes_mm=(22.0, 12.0, 9.0), rotation=rotation, seed=5
    )
    (finding,) = pipeline.run(load_ct_volume(bleed.datasets)).findings
    assert finding.present
    assert finding.volume_ml == pytest.approx(bleed.inserted_volume_ml, rel=0.25)
    assert dice_coefficient(finding.mask, bleed.mask) > 0.7


def test_calcification_is_not_hemorrhage(pipeline, ge_datasets):
    """A small dense calcification has a 50-90 HU partial-volume halo; it is not blood."""
    calcification = insert_ellipsoid_hemorrhage(
        ge_datasets, center_mm=None, semi_axes_mm=(4.0, 4.0, 4.0), hu=400.0, seed=2
    )
    (finding,) = pipeline.run(load_ct_volume(calcification.datasets)).findings
    assert not finding.present
    assert finding.volume_ml < 0.5


def test_isodense_lesion_is_not_reported(pipeline, ge_datasets):
    """Blood at brain density (subacute) is invisible to a threshold method: stated limit."""
    bleed = insert_ellipsoid_hemorrhage(
        ge_datasets, center_mm=None, semi_axes_mm=(12.0, 12.0, 12.0), hu=33.0, seed=0
    )
    (finding,) = pipeline.run(load_ct_volume(bleed.datasets)).findings
    assert not finding.present


def test_volume_without_a_skull_is_refused(pipeline, ge_volume):
    water = CTVolume(
        hu=np.zeros((3, 64, 64), dtype=np.float32),
        sop_instance_uids=("1.2.3.1", "1.2.3.2", "1.2.3.3"),
        image_positions_mm=np.array([[0.0, 0.0, z] for z in (0.0, 5.0, 10.0)]),
        image_orientation=np.array([1.0, 0, 0, 0, 1.0, 0]),
        pixel_spacing_mm=(1.0, 1.0),
        slice_thickness_mm=5.0,
        frame_of_reference_uid="1.2.3.9",
        study_instance_uid="1.2.3.7",
        series_instance_uid="1.2.3.8",
    )
    with pytest.raises(PipelineError, match="skull"):
        pipeline.run(water)


def test_parameters_are_validated():
    with pytest.raises(ValueError):
        IchBaselinePipeline(min_hu=90.0, max_hu=50.0)
    with pytest.raises(ValueError):
        IchBaselinePipeline(min_component_ml=-1.0)
    with pytest.raises(ValueError):
        IchBaselinePipeline(calcification_ring_fraction=2.0)


def test_registry():
    assert PIPELINE_NAMES == ("ich", "ich-baseline", "cta")
    pipeline = get_pipeline("ich-baseline")
    assert isinstance(pipeline, IchBaselinePipeline)
    assert isinstance(pipeline, Pipeline)
    assert pipeline.name == "ich-baseline"  # the name selection rules use for it
    assert get_pipeline("ich-baseline") is not pipeline  # no shared module-level instance
    with pytest.raises(ConfigurationError, match="unknown pipeline 'lvo'"):
        get_pipeline("lvo")
