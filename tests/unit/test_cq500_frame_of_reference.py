"""A real series without Frame of Reference UID: the CQ500 head CT with hemorrhage.

The CQ500 anonymiser removed FrameOfReferenceUID from every instance (238
axial slices, JPEG Lossless, 8.5 deg gantry tilt). The node derives one from
the Series Instance UID; the SEG, SR and SC built for the series must then be
valid (dciodvfy), read back with highdicom and reference every source slice.
The data are CC BY-NC-SA: they are read from ../shared/data, never copied.
"""

from __future__ import annotations

import logging
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from dicom_node.pipelines.base import AlgorithmIdentity, PipelineResult, SegmentFinding
from dicom_node.results import EquipmentIdentity, build_results_for_profiles
from dicom_node.results.profiles import ResultProfile
from dicom_node.results.validate import validate_result_file
from dicom_node.series.volume import (
    CTVolume,
    derived_frame_of_reference_uid,
    load_ct_volume,
    read_datasets,
    source_images_for,
)
from dicom_node.uids import validate_uid

ALGORITHM = AlgorithmIdentity(name="ich-test", version="0.0.1", family="artificial intelligence")
EQUIPMENT = EquipmentIdentity(device_serial_number="DICOM_NODE_TEST")


@pytest.fixture(scope="module")
def cq500_datasets(shared_data: Path) -> list[pydicom.Dataset]:
    paths = sorted((shared_data / "head-ct-cq500-ich").glob("*.dcm"))
    assert len(paths) == 238
    return read_datasets(paths)


@pytest.fixture(scope="module")
def cq500_volume(cq500_datasets: list[pydicom.Dataset]) -> CTVolume:
    return load_ct_volume(cq500_datasets)


def test_cq500_has_no_frame_of_reference_and_loads_with_a_derived_one(
    cq500_datasets, cq500_volume, caplog
):
    assert not any(ds.get("FrameOfReferenceUID") for ds in cq500_datasets)
    series_uid = str(cq500_datasets[0].SeriesInstanceUID)
    assert cq500_volume.frame_of_reference_derived
    assert validate_uid(cq500_volume.frame_of_reference_uid) == derived_frame_of_reference_uid(
        series_uid
    )
    assert cq500_volume.shape == (238, 512, 512)
    # A second, independent load (of part of the series) derives the same UID, and says so.
    with caplog.at_level(logging.INFO, logger="dicom_node.series.volume"):
        again = load_ct_volume(cq500_datasets[100:110])
    assert again.frame_of_reference_uid == cq500_volume.frame_of_reference_uid
    assert any(
        cq500_volume.frame_of_reference_uid in r.getMessage() and series_uid in r.getMessage()
        for r in caplog.records
        if r.levelno == logging.INFO
    )
    assert derived_frame_of_reference_uid(series_uid + ".1") != cq500_volume.frame_of_reference_uid


def test_some_cq500_instances_with_a_frame_of_reference_are_refused(cq500_datasets):
    from dicom_node.errors import SeriesLoadError

    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in _paths(cq500_datasets)[:12]]
    headers[0].FrameOfReferenceUID = pydicom.uid.generate_uid()
    with pytest.raises(SeriesLoadError, match="'one FrameOfReferenceUID' broken: 11 of 12"):
        load_ct_volume(headers)


def _paths(datasets: list[pydicom.Dataset]) -> list[str]:
    return [str(ds.filename) for ds in datasets]


def test_source_images_carry_the_derived_uid_on_copies(cq500_datasets, cq500_volume):
    sources = source_images_for(cq500_volume, cq500_datasets)
    assert [ds.SOPInstanceUID for ds in sources] == list(cq500_volume.sop_instance_uids)
    assert {ds.FrameOfReferenceUID for ds in sources} == {cq500_volume.frame_of_reference_uid}
    assert not any("FrameOfReferenceUID" in ds for ds in cq500_datasets)  # originals untouched
    by_uid = {ds.SOPInstanceUID: ds for ds in cq500_datasets}
    assert all(ds is not by_uid[ds.SOPInstanceUID] for ds in sources)
    assert sources[0].PixelData is by_uid[sources[0].SOPInstanceUID].PixelData  # not duplicated


def _bleed(volume: CTVolume) -> np.ndarray:
    """A 12 mm ball on slices 100-140 of the right hemisphere (image left), a hand-made finding."""
    mask = np.zeros(volume.shape, dtype=bool)
    rows, columns = np.mgrid[0 : volume.shape[1], 0 : volume.shape[2]]
    row_mm, column_mm = volume.pixel_spacing_mm
    centre = volume.slice_positions_mm[120]
    for k in range(95, 146):
        dz = volume.slice_positions_mm[k] - centre
        if abs(dz) < 12.0:
            r_mm = np.sqrt(12.0**2 - dz**2)
            mask[k] = ((rows - 250) * row_mm) ** 2 + ((columns - 200) * column_mm) ** 2 <= r_mm**2
    return mask


def test_seg_sr_and_overlay_of_cq500_are_valid_and_reference_every_slice(
    cq500_datasets, cq500_volume, tmp_path, dciodvfy
):
    mask = _bleed(cq500_volume)
    finding = SegmentFinding(
        "intracranial hemorrhage", True, cq500_volume.mask_volume_ml(mask), mask, 0.9, "right"
    )
    objects = build_results_for_profiles(
        source_images_for(cq500_volume, cq500_datasets),
        PipelineResult("ich", ALGORITHM, [finding]),
        equipment=EQUIPMENT,
        profiles={"pacs": ResultProfile(send_overlay=True)},
        hu=cq500_volume.hu,
    )
    assert [o.kind for o in objects].count("SEG") == 1
    assert [o.kind for o in objects].count("SR") == 1
    assert [o.kind for o in objects].count("SC") >= 2
    paths = {}
    for number, built in enumerate(objects):
        path = tmp_path / f"{built.kind}-{number}.dcm"
        built.dataset.save_as(path, enforce_file_format=True)
        report = validate_result_file(path, executable=dciodvfy)
        assert report.errors == (), (built.kind, [m.text for m in report.errors])
        paths.setdefault(built.kind, []).append(path)

    source_uids = set(cq500_volume.sop_instance_uids)
    seg = hd.seg.segread(paths["SEG"][0])
    assert seg.FrameOfReferenceUID == cq500_volume.frame_of_reference_uid
    assert seg.StudyInstanceUID == cq500_volume.study_instance_uid
    assert {sop for _, _, sop in seg.get_source_image_uids()} == source_uids
    per_frame = [
        item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        for item in seg.PerFrameFunctionalGroupsSequence
    ]
    assert len(per_frame) == 238 and set(per_frame) == source_uids
    # The mask comes back on the source slices it was drawn on.
    read_back = seg.get_pixels_by_source_instance(
        list(cq500_volume.sop_instance_uids), segment_numbers=[1]
    )[..., 0].astype(bool)
    np.testing.assert_array_equal(read_back, mask)

    sr = hd.sr.srread(paths["SR"][0])
    evidence = {
        instance.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for instance in series.ReferencedSOPSequence
    }
    assert source_uids | {seg.SOPInstanceUID} == evidence
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == 1
    assert groups[0].referenced_segment.referenced_sop_instance_uid == seg.SOPInstanceUID
    (volume,) = [m for m in groups[0].get_measurements() if m.name.value == "118565006"]
    assert volume.value == pytest.approx(finding.volume_ml, rel=1e-6)
    assert finding.volume_ml > 5.0
    for path in paths["SC"]:
        image = pydicom.dcmread(path)
        assert image.StudyInstanceUID == cq500_volume.study_instance_uid
