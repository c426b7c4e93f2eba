"""Result objects: DICOM SEG, TID 1500 Comprehensive 3D SR and SC overlays, built with highdicom.

The worker calls :func:`build_results_for_profiles` (or
:func:`build_not_analysable_results`) and checks every object it writes with
:func:`validate_result_file` (dciodvfy). Coded concepts live in
:mod:`dicom_node.results.codes`; per-destination result profiles in
:mod:`dicom_node.results.profiles`.

The names below are imported on first use (PEP 562): the settings import
:mod:`dicom_node.results.profiles`, and loading the settings must not load
highdicom and the builders.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

#: Public name -> module that defines it.
_EXPORTS: dict[str, str] = {
    "BuiltObject": "builder",
    "build_not_analysable_results": "builder",
    "build_results": "builder",
    "build_results_for_profiles": "builder",
    "EquipmentIdentity": "equipment",
    "build_not_analysable_overlay": "sc",
    "build_overlay_series": "sc",
    "build_segmentation": "seg",
    "build_segmentations": "seg",
    "build_measurement_report": "sr",
    "build_not_analysable_report": "sr",
    "DciodvfyReport": "validate",
    "run_dciodvfy": "validate",
    "validate_result_file": "validate",
}

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


def __getattr__(name: str) -> Any:
    """Import a public name of the package from its module on first access.

    Raises
    ------
    AttributeError
        If ``name`` is not one of :data:`__all__`.
    """
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """List the module's names, the lazily imported ones included."""
    return sorted({*globals(), *__all__})
