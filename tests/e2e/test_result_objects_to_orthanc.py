"""Every result object type the node emits is stored by a real Orthanc.

The objects are built from the real GE head (SEG BINARY uncompressed and JPEG
2000 Lossless, SEG LABELMAP RLE Lossless, SR positive / negative / not
analysable, SC overlay key slice and summary), sent with the node's Storage
SCU over one association, and looked up in Orthanc by SOP Instance UID.

Orthanc 1.10 (Debian 12) predates the Label Map Segmentation Storage SOP
class: by default it refuses it, which the node reports as a permanent
refusal; with ``UnknownSopClassAccepted`` it stores it. This is why LABELMAP
is a per-destination choice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from pydicom.uid import JPEG2000Lossless, RLELossless

from dicom_node.errors import DeliveryRefusedError
from dicom_node.export.scu import Peer, send_files
from dicom_node.pipelines.base import AlgorithmIdentity, PipelineResult, SegmentFinding
from dicom_node.results import (
    EquipmentIdentity,
    build_measurement_report,
    build_not_analysable_report,
    build_overlay_series,
    build_segmentations,
    validate_result_file,
)
from dicom_node.results.seg import with_tracking
from dicom_node.series.volume import load_ct_volume, read_datasets
from tests.conftest import running_orthanc

pytestmark = [pytest.mark.e2e]

ALGORITHM = AlgorithmIdentity(name="ich-test", version="0.0.1", family="artificial intelligence")
EQUIPMENT = EquipmentIdentity(device_serial_number="DICOM_NODE_TEST")


@pytest.fixture(scope="module")
def objects(tmp_path_factory, head_ct_dir) -> dict[str, Path]:
    """One file per object type, each checked by dciodvfy."""
    out = tmp_path_factory.mktemp("objects")
    datasets = read_datasets(sorted(head_ct_dir.glob("*.dcm")))
    volume = load_ct_volume(datasets)
    by_uid = {str(ds.SOPInstanceUID): ds for ds in datasets}
    ordered = [by_uid[uid] for uid in volume.sop_instance_uids]
    mask = np.zeros(volume.shape, dtype=bool)
    mask[14:18, 280:320, 300:350] = True
    positive = with_tracking(
        PipelineResult(
            "ich",
            ALGORITHM,
            [SegmentFinding("intracranial hemorrhage", True, volume.mask_volume_ml(mask), mask,
                            laterality="left")],
        )
    )  # fmt: skip
    negative = PipelineResult(
        "ich",
        ALGORITHM,
        [SegmentFinding("intracranial hemorrhage", False, 0.0, np.zeros_like(mask))],
    )
    (binary,) = build_segmentations(ordered, positive, equipment=EQUIPMENT)
    (binary_j2k,) = build_segmentations(
        ordered, positive, equipment=EQUIPMENT, transfer_syntax_uid=JPEG2000Lossless,
        omit_empty_frames=True,
    )  # fmt: skip
    (labelmap,) = build_segmentations(
        ordered, positive, equipment=EQUIPMENT, segmentation_type="LABELMAP",
        transfer_syntax_uid=RLELossless,
    )  # fmt: skip
    (empty_seg,) = build_segmentations(ordered, negative, equipment=EQUIPMENT)
    built = {
        "seg-binary": binary,
        "seg-binary-j2k": binary_j2k,
        "seg-labelmap": labelmap,
        "sr-positive": build_measurement_report(ordered, binary, positive, equipment=EQUIPMENT),
        "sr-positive-labelmap": build_measurement_report(
            ordered, labelmap, positive, equipment=EQUIPMENT
        ),
        "sr-negative": build_measurement_report(ordered, empty_seg, negative, equipment=EQUIPMENT),
        "sr-not-analysable": build_not_analysable_report(
            ordered, pipeline="ich", algorithm=ALGORITHM,
            finding_labels=["intracranial hemorrhage"],
            reason="missing slices: a gap of 14.0 mm where 7.0 mm is expected",
            equipment=EQUIPMENT,
        ),
    }  # fmt: skip
    key, summary = build_overlay_series(
        ordered, volume.hu, positive, equipment=EQUIPMENT, max_key_slices=1
    )
    built["sc-key-slice"], built["sc-summary"] = key, summary
    paths = {}
    for name, dataset in built.items():
        path = out / f"{name}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        report = validate_result_file(path)
        assert report.errors == (), (name, [m.line for m in report.errors])
        paths[name] = path
    return paths


def _lookup(orthanc, sop_instance_uid: str) -> list[dict]:
    response = requests.post(f"{orthanc.url}/tools/lookup", data=sop_instance_uid, timeout=30)
    response.raise_for_status()
    return [hit for hit in response.json() if hit["Type"] == "Instance"]


def test_orthanc_stores_every_object_type(objects, tmp_path):
    with running_orthanc(tmp_path / "orthanc", {"UnknownSopClassAccepted": True}) as orthanc:
        peer = Peer("127.0.0.1", orthanc.dicom_port, orthanc.ae_title)
        statuses = send_files(peer, list(objects.values()))
        assert statuses == [0x0000] * len(objects)
        for name, path in objects.items():
            sent = pydicom.dcmread(path, stop_before_pixels=True)
            (hit,) = _lookup(orthanc, sent.SOPInstanceUID)
            stored = orthanc.get(f"/instances/{hit['ID']}/tags?simplify")
            assert stored["SOPClassUID"] == sent.SOPClassUID, name
            assert stored["StudyInstanceUID"] == sent.StudyInstanceUID, name


def test_an_orthanc_without_label_map_support_refuses_it_permanently(objects, orthanc):
    peer = Peer("127.0.0.1", orthanc.dicom_port, orthanc.ae_title)
    assert send_files(peer, [objects["seg-binary"]]) == [0x0000]
    with pytest.raises(DeliveryRefusedError, match="does not accept SOP class"):
        send_files(peer, [objects["seg-labelmap"]])
