"""Synthetic CT angiograms drawn on a real head CT, with exact ground truth.

The generator lives in :mod:`dicom_node.training.synthetic_cta.generate`;
this package re-exports its public names.
"""

from __future__ import annotations

from dicom_node.training.synthetic_cta.generate import (
    BLOOD_HU,
    CENTRELINE_STEP_MM,
    COLLATERAL_FRACTION_RANGE,
    CONTRAST_HU_RANGE,
    OCCLUSION_SEGMENTS,
    POINT_SPREAD_SIGMA_MM,
    SIDES,
    SYNTHETIC_CONTRAST_AGENT,
    SYNTHETIC_CTA_SERIES_DESCRIPTION,
    THICKNESS_STEP_MM,
    THROMBUS_HU_RANGE,
    WILLIS_AP_FRACTION,
    WILLIS_LEVEL_AREA_FRACTION,
    Artery,
    HeadLandmarks,
    OcclusionTruth,
    SyntheticCTA,
    generate_synthetic_cta,
    locate_head_landmarks,
)

__all__ = [
    "BLOOD_HU",
    "CENTRELINE_STEP_MM",
    "COLLATERAL_FRACTION_RANGE",
    "CONTRAST_HU_RANGE",
    "OCCLUSION_SEGMENTS",
    "POINT_SPREAD_SIGMA_MM",
    "SIDES",
    "SYNTHETIC_CONTRAST_AGENT",
    "SYNTHETIC_CTA_SERIES_DESCRIPTION",
    "THICKNESS_STEP_MM",
    "THROMBUS_HU_RANGE",
    "WILLIS_AP_FRACTION",
    "WILLIS_LEVEL_AREA_FRACTION",
    "Artery",
    "HeadLandmarks",
    "OcclusionTruth",
    "SyntheticCTA",
    "generate_synthetic_cta",
    "locate_head_landmarks",
]
