"""Result objects: DICOM SEG and TID 1500 Comprehensive 3D SR, built with highdicom.

The worker calls :func:`build_results` and checks every object it writes with
:func:`run_dciodvfy`. Coded concepts live in :mod:`dicom_node.results.codes`.
"""

from dicom_node.results.builder import build_results
from dicom_node.results.equipment import EquipmentIdentity
from dicom_node.results.seg import build_segmentation
from dicom_node.results.sr import build_measurement_report
from dicom_node.results.validate import DciodvfyReport, run_dciodvfy

__all__ = [
    "DciodvfyReport",
    "EquipmentIdentity",
    "build_measurement_report",
    "build_results",
    "build_segmentation",
    "run_dciodvfy",
]
