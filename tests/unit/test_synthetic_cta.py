"""The synthetic CT angiogram generator on the real GE head: contrast, geometry, truth, UIDs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicom_node.config import load_settings
from dicom_node.series.selection import SeriesAttributes, select_pipeline
from dicom_node.series.volume import CTVolume, load_ct_volume, read_datasets
from dicom_node.training.synthetic_cta import (
    SYNTHETIC_CTA_SERIES_DESCRIPTION,
    HeadLandmarks,
    SyntheticCTA,
    generate_synthetic_cta,
    locate_head_landmarks,
)


@pytest.fixture(scope="module")
def ge_datasets(shared_data: Path) -> list[pydicom.Dataset]:
    return read_datasets(sorted((shared_data / "head-ct-ge").glob("*.dcm")))


@pytest.fixture(scope="module")
def landmarks(ge_datasets) -> HeadLandmarks:
    return locate_head_landmarks(load_ct_volume(ge_datasets))


@pytest.fixture(scope="module")
def normal(ge_datasets, landmarks) -> SyntheticCTA:
    return generate_synthetic_cta(ge_datasets, seed=11, landmarks=landmarks)


@pytest.fixture(scope="module")
def occluded(ge_datasets, landmarks) -> SyntheticCTA:
    return generate_synthetic_cta(
        ge_datasets, seed=12, occlusion="M1", side="left", landmarks=landmarks
    )


@pytest.fixture(scope="module")
def normal_volume(normal) -> CTVolume:
    return load_ct_volume(normal.datasets)


def header_attributes(datasets: list[pydicom.Dataset]) -> SeriesAttributes:
    first = datasets[0]
    return SeriesAttributes(
        modality=str(first.get("Modality", "")),
        body_part_examined=str(first.get("BodyPartExamined", "")),
        study_description=str(first.get("StudyDescription", "")),
        series_description=str(first.get("SeriesDescription", "")),
        protocol_name=str(first.get("ProtocolName", "")),
        contrast_bolus_agent=first.get("ContrastBolusAgent"),
        image_orientation_patient=tuple(float(v) for v in first.ImageOrientationPatient),
        slice_thickness_mm=float(first.SliceThickness),
        sop_class_uids=frozenset(str(ds.SOPClassUID) for ds in datasets),
        image_types=frozenset(str(v).upper() for ds in datasets for v in ds.ImageType),
        slice_count=len(datasets),
        convolution_kernel=str(first.get("ConvolutionKernel", "")),
    )


def test_landmarks_put_the_circle_of_willis_at_the_suprasellar_level(landmarks):
    volume = landmarks.volume
    (k, r, c) = volume.nearest_voxel_indices(landmarks.frame.origin_mm[None, :])[0]
    assert k == 12  # the slice through the suprasellar cistern of this head
    assert abs(c - 252) < 10 and abs(r - 232) < 15  # read off the image


def test_series_is_marked_as_a_synthetic_angiogram_with_new_uids(normal, ge_datasets):
    ds = normal.datasets[0]
    assert ds.ContrastBolusAgent
    assert ds.SeriesDescription == SYNTHETIC_CTA_SERIES_DESCRIPTION
    assert "Synthetic" in ds.DerivationDescription
    source_uids = {str(d.SOPInstanceUID) for d in ge_datasets}
    new_uids = {str(d.SOPInstanceUID) for d in normal.datasets}
    assert not source_uids & new_uids and len(new_uids) == len(ge_datasets)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert len({str(d.get(keyword)) for d in normal.datasets}) == 1
        assert str(ds.get(keyword)) != str(ge_datasets[0].get(keyword))
    assert set(normal.sop_instance_uids) == new_uids
    assert all(d.file_meta.MediaStorageSOPInstanceUID == d.SOPInstanceUID for d in normal.datasets)


def test_the_cta_rule_selects_it_and_the_non_contrast_rule_does_not(normal, ge_datasets):
    rules = load_settings().selection.rules
    selection = select_pipeline(header_attributes(normal.datasets), rules)
    assert selection.pipeline == "cta", selection.reason
    head_rule = [r for r in rules if r.pipeline == "ich"]
    refused = select_pipeline(header_attributes(normal.datasets), head_rule)
    assert refused.pipeline is None and "ContrastBolusAgent is present" in refused.reason
    assert select_pipeline(header_attributes(ge_datasets), rules).pipeline == "ich"


def test_arteries_have_realistic_calibre_and_contrast(normal, normal_volume):
    assert 250.0 <= normal.contrast_hu <= 450.0
    names = {a.name for a in normal.arteries}
    for expected in (
        "internal_carotid_artery_left",
        "middle_cerebral_artery_m1_right",
        "middle_cerebral_artery_m2_superior_left",
        "anterior_cerebral_artery_a1_left",
        "anterior_communicating_artery",
        "basilar_artery",
        "posterior_cerebral_artery_p2_right",
        "posterior_communicating_artery_left",
    ):
        assert expected in names
    for artery in normal.arteries:
        diameters = 2 * artery.radius_mm
        assert diameters.min() >= 0.8 and diameters.max() <= 5.0, artery.name
        assert np.all(artery.opacity == 1.0)
    # Voxels fully inside a lumen carry the contrast CT number (partial volume elsewhere).
    full = normal.opacified_fraction > 0.95
    assert full.sum() > 50
    assert np.median(normal_volume.hu[full]) == pytest.approx(normal.contrast_hu, rel=0.12)
    assert 0.5 < normal_volume.mask_volume_ml(normal.vessel_mask) < 6.0
    assert not normal.thrombus_mask.any() and normal.occlusion is None


def test_thin_vessels_in_thick_slices_are_partial_volumed(normal, normal_volume):
    # 7 mm slices never fill with a vessel that runs in-plane: fractions between 0 and 1 dominate.
    thick = np.array([t == 7.0 for t in normal_volume.slice_thicknesses_mm])
    fractions = normal.opacified_fraction[thick]
    touched = fractions[fractions > 0.02]
    assert np.mean(touched < 0.5) > 0.5


def test_occlusion_truncates_the_named_segment(occluded):
    truth = occluded.occlusion
    assert truth is not None and truth.segment == "M1" and truth.side == "left"
    m1 = occluded.artery("middle_cerebral_artery_m1_left")
    assert (m1.opacity == 0.0).any() and m1.opacity[0] == 1.0  # proximal stump stays enhanced
    distance = np.linalg.norm(m1.centreline_mm - np.asarray(truth.point_mm), axis=1)
    assert distance.min() < 0.5  # the point lies on the M1
    first_clot = int(np.argmax(m1.opacity == 0.0))
    assert np.all(m1.opacity[first_clot:] == 0.0)
    downstream = occluded.artery("middle_cerebral_artery_m2_superior_left")
    assert np.allclose(downstream.opacity, truth.collateral_fraction)
    assert np.all(occluded.artery("middle_cerebral_artery_m1_right").opacity == 1.0)
    assert occluded.thrombus_mask.any()


def test_thrombus_is_not_enhanced(occluded):
    volume = load_ct_volume(occluded.datasets)
    assert np.median(volume.hu[occluded.thrombus_mask]) < 90.0
    # Only voxels at the junction of the enhanced stump and the clot hold both.
    overlap = (occluded.thrombus_mask & occluded.vessel_mask).sum()
    assert overlap < 0.25 * occluded.thrombus_mask.sum()


def test_same_seed_same_series_other_seed_other_series(ge_datasets, landmarks, normal):
    again = generate_synthetic_cta(ge_datasets, seed=11, landmarks=landmarks)

    def digest(cta: SyntheticCTA) -> str:
        h = hashlib.sha256()
        for ds in cta.datasets:
            h.update(ds.PixelData)
            h.update(str(ds.SOPInstanceUID).encode())
        return h.hexdigest()

    assert digest(again) == digest(normal)
    assert again.parameters == normal.parameters


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"occlusion": "M3"}, "occlusion must be one of"), ({"side": "top"}, "side must be one of")],
)
def test_unknown_occlusion_or_side_is_refused(ge_datasets, landmarks, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_synthetic_cta(
            ge_datasets, seed=1, landmarks=landmarks, **{"occlusion": "M1", **kwargs}
        )
