"""Result objects: DICOM SEG, TID 1500 Comprehensive 3D SR and SC overlays, built with highdicom.

The worker calls :func:`build_results_for_profiles` (or
:func:`build_not_analysable_results`) and checks every object it writes with
:func:`validate_result_file` (dciodvfy). Coded concepts live in
:mod:`dicom_node.results.codes`.
"""

from dicom_node.results.builder import (
    BuiltObject,
    build_not_analysable_results,
    build_results,
    build_results_for_profiles,
)
from dicom_node.results.equipment import EquipmentIdentity
from dicom_node.results.sc import build_not_analysable_overlay, build_overlay_series
from dicom_node.results.seg import build_segmentation, build_segmentations
from dicom_node.results.sr import build_measurement_report, build_not_analysable_report
from dicom_node.results.validate import DciodvfyReport, run_dciodvfy, validate_result_file

__all__ = [
    "BuiltObject",
    "DciodvfyReport",
    "EquipmentIdentity",
    "build_measurement_report",
    "build_not_analysable_overlay",
    "build_not_analysable_report",
    "build_not_analysable_results",
    "build_overlay_series",
    "build_results",
    "build_results_for_profiles",
    "build_segmentation",
    "build_segmentations",
    "run_dciodvfy",
    "validate_result_file",
]
