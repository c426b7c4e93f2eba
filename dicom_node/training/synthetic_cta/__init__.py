"""Synthetic CT angiograms drawn on a real head CT, with exact ground truth.

There is no public CT angiogram with vessel and occlusion ground truth in the
project's data, so tests and the evaluation of the ``cta`` pipeline draw one:
a procedural circle of Willis with its main branches is placed in a real
non-contrast head CT (``../shared/data/head-ct-ge``) and blended into the
pixels as contrast-filled tubes. Optionally one named segment is occluded.

What is drawn, per case (all seeded, so a seed always gives the same series):

* **Head pose.** The real head is moved in its slice planes (rotation about
  the slice normal, shift, isotropic scale), so that the midline and the
  circle of Willis are not at the same pixels in every case.
* **Arteries.** Internal carotid arteries (supraclinoid part to the
  terminus), middle cerebral arteries (M1; superior and inferior M2
  divisions; two or three cortical M3/M4 branches per division; the anterior
  temporal artery), anterior cerebral arteries (A1, anterior communicating
  artery, A2 to the pericallosal segment), basilar artery, posterior cerebral
  arteries (P1, P2) and posterior communicating arteries. Positions come from
  a template in an anatomical frame (left, posterior, superior; mm) anchored
  at the mid-sagittal plane and the suprasellar level of the head; every
  control point is moved by a random global transform, a smooth random
  displacement field and independent jitter, and calibres vary per side.
  Diameters are about 1-5 mm (ICA 4.4 mm, M1 3 mm, M2 2 mm, cortical 1.5 mm tapering
  to 1 mm, before the per-side and pose scaling of about +-15 %).
* **Contrast.** A lumen fully filled with contrast has one CT number per case
  (250-450 HU). Each slice integrates the tubes over its own thickness along
  the slice normal and over 2 x 2 sub-pixels (partial volume), the result is
  blurred in-plane by a 0.35 mm Gaussian (scanner point-spread), and noise
  with the slice's own measured high-pass SD is added inside the vessels.
* **Occlusion** (optional): one of ``"ICA-T"`` (carotid terminus: the distal
  ICA, the ipsilateral M1 and A1), ``"M1"`` (from a random point of the M1 to
  its end) or ``"M2"`` (one division, from a random point to its end), left
  or right. The occluded lumen holds unenhanced thrombus (40-55 HU); arteries
  downstream of it fill only through collaterals, at a random fraction
  (0-0.5) of the contrast enhancement.

Ground truth is kept on the source grid: the vessel mask (voxels at least
half filled with contrast-equivalent lumen: partial-volume fraction times
opacity at least 0.5, the half-maximum boundary a CTA reader sees), the
thrombus mask, the occlusion point in LPS mm, and every artery's centreline.

What is *not* drawn: veins and dural sinuses (which enhance on a real CTA),
the cavernous and petrous ICA, vertebral, cerebellar and small perforating
arteries, calcified plaque, streak artefacts, and any parenchymal change.
The series keeps the base scan's slices (4 then 7 mm on the GE head), which
is far coarser than a real CTA (0.5-1 mm).

Modules
-------
* :mod:`~dicom_node.training.synthetic_cta.model` -- constants and result types;
* :mod:`~dicom_node.training.synthetic_cta.landmarks` -- where the circle of
  Willis goes in the base head CT;
* :mod:`~dicom_node.training.synthetic_cta.template` -- the procedural
  template and its random deformation field;
* :mod:`~dicom_node.training.synthetic_cta.render` -- centrelines, head pose
  and partial-volume rendering;
* :mod:`~dicom_node.training.synthetic_cta.arteries` -- placing the arteries
  and occluding one;
* :mod:`~dicom_node.training.synthetic_cta.generate` -- the generator.

References
----------
Osborn AG. Diagnostic Cerebral Angiography, 2nd ed. Lippincott Williams &
Wilkins; 1999 (course and calibre of the circle of Willis and its branches).
Rai AT, et al. Cerebrovascular geometry in the anterior circulation: an
analysis of diameter, length and the vessel taper. J Neurointerv Surg.
2013;5(4):371-375 (ICA/M1/M2 diameters). DICOM PS3.3 C.7.6.2 Image Plane
Module; PS3.3 C.8.2.1 CT Image Module; PS3.3 C.7.6.4 Contrast/Bolus Module.
"""

from __future__ import annotations

from dicom_node.training.synthetic_cta.generate import generate_synthetic_cta
from dicom_node.training.synthetic_cta.landmarks import locate_head_landmarks
from dicom_node.training.synthetic_cta.model import (
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
