"""The dashboard loads without the DICOM network stack or the deep-learning stack.

DESIGN.md: only ``receive/`` and ``export/`` import pynetdicom, only ``pipelines/``
and ``training/`` import TensorFlow/Keras.
"""

from __future__ import annotations


def test_upload_accepts_the_storage_scps_sop_classes():
    """The upload's pynetdicom-free copy of the accepted SOP classes matches the SCP's."""
    from dicom_node.receive.scp import STORAGE_SOP_CLASSES as SCP_CLASSES
    from dicom_node.web.upload import STORAGE_SOP_CLASSES as UPLOAD_CLASSES

    assert sorted(map(str, UPLOAD_CLASSES)) == sorted(map(str, SCP_CLASSES))
