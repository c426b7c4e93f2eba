"""cta-lvo-baseline: vessel map and large-vessel occlusion on CT angiography.

Classical image processing, not a trained model, and named so
(``AlgorithmIdentity(name="cta-lvo-baseline", family="image processing")``).
For a contrast-enhanced CT of the head it answers the acute-stroke question:
is there a large-vessel occlusion of the anterior circulation (internal
carotid terminus, M1 or proximal M2 segment of the middle cerebral artery),
and on which side?

Method, in order (details in the modules named):

1. Intracranial mask that keeps the enhanced vessels
   (:func:`dicom_node.imaging.vessels.cta_intracranial_mask`).
2. Vessel map: Gaussian blur, CLAHE and adaptive thresholding inside the
   mask with a half-maximum floor on the enhancement, 3D connectivity
   cleanup (:func:`dicom_node.imaging.vessels.segment_intracranial_vessels`).
3. Mid-sagittal plane (:func:`dicom_node.imaging.midline.estimate_midsagittal_plane`).
4. Left-right comparison of the vessel volume and centreline length in the
   MCA territory, trunk profiles and abrupt terminations
   (:func:`dicom_node.imaging.occlusion.analyse_large_vessel_occlusion`).

Findings, in this order (one SEG segment and one TID 1411 group each):

* ``"cerebral arteries"``: the vessel map (present when any vessel is
  found), its volume in mL;
* ``"vessel occlusion"``: present when an LVO is suspected, with the side
  (laterality) and the approximate segment as finding site; its mask is a
  5 mm ball at the estimated proximal end of the occlusion (the "suspected
  occlusion" region), empty when absent.

The SR's occlusion group also carries the M2-trunk asymmetry ratio (DCM
113288 "Volume Ratio", UCUM ``{ratio}``), and a suspected occlusion's
location in patient mm becomes a TID 1410 group with a SCOORD3D POINT
(both through ``details["sr"]``). Everything else (other ratios,
per-hemisphere volumes and centreline lengths, trunk profiles) is in
:attr:`PipelineResult.details`.

**Not for diagnostic use.** Tuned and evaluated only on synthetic
angiograms drawn into one real non-contrast head CT
(:mod:`dicom_node.training.synthetic_cta`); see ``docs/cta.md`` for the
figures and limits.

References
----------
Zuiderveld K. Contrast limited adaptive histogram equalization. Graphics
Gems IV. 1994:474-485. Menon BK, et al. Multiphase CT angiography. Radiology.
2015;275(2):510-520. Liu Y, et al. Robust midsagittal plane extraction. IEEE
Trans Med Imaging. 2001;20(3):175-192. Anchors of the issue: Viz LVO
(sensitivity 0.81-0.91, specificity about 0.93), Brainomix e-CTA (proximal
LVO 0.92/0.98), RapidAI LVO.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from dicom_node.errors import NotAnalysableError
from dicom_node.imaging.midline import estimate_midsagittal_plane
from dicom_node.imaging.occlusion import (
    SEGMENT_ICA_T,
    SEGMENT_M1,
    SEGMENT_M2,
    analyse_large_vessel_occlusion,
    occlusion_region_mask,
)
from dicom_node.imaging.vessels import cta_intracranial_mask, segment_intracranial_vessels
from dicom_node.pipelines.base import AlgorithmIdentity, PipelineResult, SegmentFinding
from dicom_node.series.volume import CTVolume

logger = logging.getLogger(__name__)

#: Finding label of the vessel map; a key of :mod:`dicom_node.results.codes`.
CEREBRAL_ARTERIES_LABEL = "cerebral arteries"
#: Finding label of the suspected occlusion; a key of :mod:`dicom_node.results.codes`.
VESSEL_OCCLUSION_LABEL = "vessel occlusion"
#: Anatomic site key (:data:`dicom_node.results.codes.ANATOMIC_SITES`) of each segment.
SEGMENT_SITES: dict[str, str] = {
    SEGMENT_ICA_T: "terminal internal carotid artery",
    SEGMENT_M1: "middle cerebral artery m1 segment",
    SEGMENT_M2: "middle cerebral artery m2 segment",
}
#: Below this arterial peak enhancement (HU) the series holds no arterial contrast.
MIN_ARTERIAL_PEAK_HU = 120.0


class CtaLvoPipeline:
    """Vessel segmentation and large-vessel occlusion detection on a CT angiogram.

    Parameters
    ----------
    trunk_ratio_threshold : float
        LVO suspected when one side's M2-trunk vessel volume is below this
        fraction of the other's.
    occlusion_radius_mm : float
        Radius (mm) of the "suspected occlusion" region around the estimated
        location.
    min_arterial_peak_hu : float
        A series whose arterial peak enhancement is lower is not an angiogram
        (:class:`~dicom_node.errors.NotAnalysableError`).

    Raises
    ------
    ValueError
        If a parameter is out of range.

    References
    ----------
    Menon BK, et al. Radiology. 2015;275(2):510-520.
    """

    name = "cta"
    algorithm = AlgorithmIdentity(
        name="cta-lvo-baseline", version="0.2.0", family="image processing"
    )
    #: Labels of the findings, for the "not analysable" report.
    finding_labels = (CEREBRAL_ARTERIES_LABEL, VESSEL_OCCLUSION_LABEL)

    def __init__(
        self,
        *,
        trunk_ratio_threshold: float = 0.30,
        occlusion_radius_mm: float = 5.0,
        min_arterial_peak_hu: float = MIN_ARTERIAL_PEAK_HU,
    ) -> None:
        if not 0.0 < trunk_ratio_threshold < 1.0:
            raise ValueError(
                f"trunk_ratio_threshold must be in (0, 1), got {trunk_ratio_threshold}"
            )
        if occlusion_radius_mm <= 0:
            raise ValueError(f"occlusion_radius_mm must be positive, got {occlusion_radius_mm}")
        self.trunk_ratio_threshold = float(trunk_ratio_threshold)
        self.occlusion_radius_mm = float(occlusion_radius_mm)
        self.min_arterial_peak_hu = float(min_arterial_peak_hu)

    def parameters(self) -> dict[str, float]:
        """Return the pipeline's own parameters, units in the names.

        Returns
        -------
        dict of str to float
            Constructor argument names and values.
        """
        return {
            "trunk_ratio_threshold": self.trunk_ratio_threshold,
            "occlusion_radius_mm": self.occlusion_radius_mm,
            "min_arterial_peak_hu": self.min_arterial_peak_hu,
        }

    def run(self, volume: CTVolume) -> PipelineResult:
        """Segment the intracranial arteries and assess a large-vessel occlusion.

        Parameters
        ----------
        volume : CTVolume
            CT angiogram of the head in HU, slices ascending along the normal.

        Returns
        -------
        PipelineResult
            Two findings, ``"cerebral arteries"`` then ``"vessel occlusion"``,
            with boolean masks (slices, rows, columns) on the volume's grid
            and volumes in mL; the occlusion carries ``laterality`` and
            ``finding_site`` when present. ``details`` holds the decision
            figures (``lvo``), the vessel-map figures, the runtime, and
            ``sr``, the SR extras of the occlusion: the ratio and, when an
            occlusion is suspected, ``location_mm`` (LPS mm, 0.001 mm).

        Raises
        ------
        NotAnalysableError
            If no intracranial region is found (gate ``head_ct``), the series
            holds no arterial contrast (``arterial_contrast``: not an
            angiogram), or the vessel tree has no middle cerebral artery trunk
            to compare (``vessel_tree``). The job then reports "not
            analysable: <reason>" instead of failing.

        References
        ----------
        Menon BK, et al. Radiology. 2015;275(2):510-520.
        """
        started = time.perf_counter()
        brain = cta_intracranial_mask(volume)
        if not brain.any():
            raise NotAnalysableError(
                "head_ct",
                "no intracranial region found: no slice has a closed skull ring "
                "(is this a head CT?)",
            )
        vessels = segment_intracranial_vessels(volume, brain)
        if vessels.arterial_peak_hu < self.min_arterial_peak_hu or not vessels.mask.any():
            raise NotAnalysableError(
                "arterial_contrast",
                f"no contrast-filled arteries found (peak enhancement "
                f"{vessels.arterial_peak_hu:.0f} HU above brain): is this a CT angiogram?",
            )
        try:
            plane = estimate_midsagittal_plane(volume, brain)
            analysis = analyse_large_vessel_occlusion(
                volume, vessels, plane, trunk_ratio_threshold=self.trunk_ratio_threshold
            )
        except ValueError as err:
            raise NotAnalysableError(
                "vessel_tree", f"the vessel tree cannot be analysed: {err}"
            ) from err

        vessel_ml = volume.mask_volume_ml(vessels.mask)
        if analysis.suspected and analysis.location_mm is not None:
            region = occlusion_region_mask(volume, analysis.location_mm, self.occlusion_radius_mm)
        else:
            region = np.zeros(volume.shape, dtype=bool)
        region_ml = volume.mask_volume_ml(region)
        elapsed_s = time.perf_counter() - started
        lvo = {
            "suspected": analysis.suspected,
            "side": analysis.side,
            "segment": analysis.segment,
            "asymmetry_ratio": round(analysis.asymmetry_ratio, 3),
            "location_mm": (
                [round(x, 1) for x in analysis.location_mm] if analysis.location_mm else None
            ),
            **analysis.details,
        }
        occlusion_sr: dict = {
            "measurements": [{"name": "volume ratio", "value": round(analysis.asymmetry_ratio, 3)}]
        }
        if analysis.suspected and analysis.location_mm is not None:
            # The SR's TID 1410 SCOORD3D POINT: LPS mm in the source Frame of Reference.
            occlusion_sr["location_mm"] = [round(float(x), 3) for x in analysis.location_mm]
        details = {
            "parameters": self.parameters(),
            "lvo": lvo,
            # Read by the SR builder (dicom_node.results.sr): TID 1419 extras of a finding.
            "sr": {VESSEL_OCCLUSION_LABEL: occlusion_sr},
            "vessels": {
                "volume_ml": round(vessel_ml, 3),
                "arterial_peak_hu": round(vessels.arterial_peak_hu, 1),
                "threshold_hu": round(vessels.threshold_hu, 1),
                "noise_hu": round(vessels.noise_hu, 1),
                "intracranial_volume_ml": round(volume.mask_volume_ml(brain), 1),
                "parameters": vessels.parameters,
            },
            "runtime_s": round(elapsed_s, 3),
        }
        logger.info(
            "cta-lvo-baseline on series %s: %s, asymmetry %.2f, vessels %.2f mL, %.2f s",
            volume.series_instance_uid,
            f"LVO suspected ({analysis.side} {analysis.segment})"
            if analysis.suspected
            else "no LVO suspected",
            analysis.asymmetry_ratio,
            vessel_ml,
            elapsed_s,
        )
        findings = [
            SegmentFinding(
                label=CEREBRAL_ARTERIES_LABEL,
                present=bool(vessels.mask.any()),
                volume_ml=float(vessel_ml),
                mask=vessels.mask,
            ),
            SegmentFinding(
                label=VESSEL_OCCLUSION_LABEL,
                present=bool(analysis.suspected),
                volume_ml=float(region_ml),
                mask=region,
                laterality=analysis.side if analysis.suspected else None,
                finding_site=SEGMENT_SITES.get(analysis.segment or "")
                if analysis.suspected
                else None,
            ),
        ]
        return PipelineResult(
            pipeline=self.name, algorithm=self.algorithm, findings=findings, details=details
        )
