"""ich-baseline: a classical, threshold-based intracranial hemorrhage detector.

This is image processing, not a trained model, and it is named so
(``AlgorithmIdentity(name="ich-baseline", family="image processing")``). It
finds acute, hyperdense blood (about 50-90 HU) inside the brain parenchyma
and is the reference against which learned pipelines are measured.

Method, in order:

1. Intracranial mask (:func:`dicom_node.imaging.masks.intracranial_mask`).
2. In-plane Gaussian denoising (``smoothing_sigma_mm``).
3. Slice baseline correction: thick slices that cut the skull tangentially
   (vertex) or sit between the petrous bones (posterior fossa) have raised
   CT numbers from partial volume and beam hardening. Where a slice's median
   intracranial HU exceeds ``brain_reference_max_hu``, the excess is
   subtracted from that slice. Normal slices are not changed.
4. Hyperdensity ``min_hu`` .. ``max_hu`` inside the mask; in-plane opening
   (``opening_radius_mm``); 3D connected components (26-connectivity).
5. Components are dropped when they are smaller than ``min_component_ml``;
   when they hug the mask edge (median in-plane distance to the edge below
   ``edge_margin_mm``: the partial-volume band along the inner table, and the
   halo of calcifications, which the mask leaves out); or when more than
   ``calcification_ring_fraction`` of the ring around them is denser than
   ``calcification_min_hu`` (calcified choroid plexus, pineal, falx).
6. Hyperdense holes inside kept components (a clot core above ``max_hu``)
   are filled, and the partial-volume rim is recovered: each kept component
   grows in-plane by at most ``rim_mm`` into voxels of at least
   ``rim_min_hu`` (hysteresis; the bounded growth cannot leak into cortex).
7. ``present`` when the total kept volume is at least ``min_total_ml``.

Known limits, stated honestly: extra-axial blood (subdural, epidural) that
lies along the skull, thin subarachnoid blood and small bleeds next to the
cortex are removed by the edge rule; isodense (subacute) and hypodense
(hyperacute, anaemic) blood is not hyperdense and is missed; there is no
probability.

References
----------
Muschelli J, et al. PItcHPERFeCT: Primary intracranial hemorrhage
probability estimation using random forests on CT. NeuroImage Clin.
2017;14:379-390 (thresholds, intensity features, brain mask).
Parizel PM, et al. Intracranial hemorrhage: principles of CT and MRI
interpretation. Eur Radiol. 2001;11:1770-1783 (CT numbers of acute blood).
"""

from __future__ import annotations

import logging
import time

import cv2
import numpy as np
from scipy import ndimage

from dicom_node.errors import PipelineError
from dicom_node.imaging.masks import in_plane_depth_mm, intracranial_mask
from dicom_node.pipelines.base import AlgorithmIdentity, PipelineResult, SegmentFinding
from dicom_node.series.kernels import disk_structuring_element
from dicom_node.series.volume import CTVolume

logger = logging.getLogger(__name__)

#: The finding label; a key of the coded concepts in :mod:`dicom_node.results.codes`.
HEMORRHAGE_LABEL = "intracranial hemorrhage"


class IchBaselinePipeline:
    """Threshold, morphology and connected-component detector of acute ICH.

    Parameters
    ----------
    min_hu, max_hu : float
        HU range of acute blood after denoising.
    smoothing_sigma_mm : float
        In-plane Gaussian sigma (mm) of the denoising.
    brain_reference_max_hu : float
        Highest plausible median HU of normal intracranial content in a
        slice; any excess is removed from that slice before thresholding.
    opening_radius_mm : float
        Radius (mm) of the in-plane disk of the morphological opening.
    min_component_ml : float
        Smallest 3D component kept (mL).
    edge_margin_mm : float
        Components whose median in-plane distance to the edge of the
        intracranial mask is below this (mm) are dropped as bone-edge
        artefacts.
    calcification_min_hu : float
        HU above which tissue next to a component counts as calcification or
        bone.
    calcification_ring_fraction : float
        A component is dropped when more than this fraction of the voxels in
        a one-pixel in-plane ring around it exceed ``calcification_min_hu``.
    min_total_ml : float
        Total kept volume (mL) at or above which hemorrhage is reported present.
    rim_min_hu : float
        Lowest HU of the partial-volume rim added around kept components.
    rim_mm : float
        Largest in-plane growth (mm) of kept components into the rim; 0
        disables it.

    Raises
    ------
    ValueError
        If a parameter is out of range (HU thresholds out of order, negative
        sizes, a fraction outside [0, 1]).

    References
    ----------
    Parizel PM, et al. Eur Radiol. 2001;11:1770-1783; Cavalieri principle for
    the volumes (see :attr:`dicom_node.series.volume.CTVolume.voxel_volume_ml`).
    """

    name = "ich-baseline"
    algorithm = AlgorithmIdentity(name="ich-baseline", version="0.1.0", family="image processing")

    def __init__(
        self,
        *,
        min_hu: float = 50.0,
        max_hu: float = 90.0,
        smoothing_sigma_mm: float = 1.0,
        brain_reference_max_hu: float = 35.0,
        opening_radius_mm: float = 1.0,
        min_component_ml: float = 0.1,
        edge_margin_mm: float = 5.0,
        calcification_min_hu: float = 130.0,
        calcification_ring_fraction: float = 0.1,
        min_total_ml: float = 0.5,
        rim_min_hu: float = 44.0,
        rim_mm: float = 1.0,
    ) -> None:
        if not rim_min_hu <= min_hu < max_hu < calcification_min_hu:
            raise ValueError(
                "need rim_min_hu <= min_hu < max_hu < calcification_min_hu, got "
                f"{rim_min_hu}, {min_hu}, {max_hu}, {calcification_min_hu}"
            )
        for label, value in (
            ("smoothing_sigma_mm", smoothing_sigma_mm),
            ("opening_radius_mm", opening_radius_mm),
            ("min_component_ml", min_component_ml),
            ("edge_margin_mm", edge_margin_mm),
            ("min_total_ml", min_total_ml),
            ("rim_mm", rim_mm),
        ):
            if value < 0:
                raise ValueError(f"{label} must not be negative, got {value}")
        if not 0.0 <= calcification_ring_fraction <= 1.0:
            raise ValueError(
                f"calcification_ring_fraction must be in [0, 1], got {calcification_ring_fraction}"
            )
        self.min_hu = float(min_hu)
        self.max_hu = float(max_hu)
        self.smoothing_sigma_mm = float(smoothing_sigma_mm)
        self.brain_reference_max_hu = float(brain_reference_max_hu)
        self.opening_radius_mm = float(opening_radius_mm)
        self.min_component_ml = float(min_component_ml)
        self.edge_margin_mm = float(edge_margin_mm)
        self.calcification_min_hu = float(calcification_min_hu)
        self.calcification_ring_fraction = float(calcification_ring_fraction)
        self.min_total_ml = float(min_total_ml)
        self.rim_min_hu = float(rim_min_hu)
        self.rim_mm = float(rim_mm)

    def parameters(self) -> dict[str, float]:
        """Return the thresholds in use, with their units in the names.

        Returns
        -------
        dict of str to float
            Constructor argument names and values.
        """
        return {
            "min_hu": self.min_hu,
            "max_hu": self.max_hu,
            "smoothing_sigma_mm": self.smoothing_sigma_mm,
            "brain_reference_max_hu": self.brain_reference_max_hu,
            "opening_radius_mm": self.opening_radius_mm,
            "min_component_ml": self.min_component_ml,
            "edge_margin_mm": self.edge_margin_mm,
            "calcification_min_hu": self.calcification_min_hu,
            "calcification_ring_fraction": self.calcification_ring_fraction,
            "min_total_ml": self.min_total_ml,
            "rim_min_hu": self.rim_min_hu,
            "rim_mm": self.rim_mm,
        }

    def run(self, volume: CTVolume) -> PipelineResult:
        """Detect and segment acute intracranial hemorrhage in a head CT.

        Parameters
        ----------
        volume : CTVolume
            Non-contrast head CT in HU, slices ascending along the normal.

        Returns
        -------
        PipelineResult
            Exactly one :class:`SegmentFinding` labelled ``"intracranial
            hemorrhage"``; its mask has shape (slices, rows, columns) on the
            volume's grid and its volume is in mL. ``details`` holds the
            parameters, the intracranial volume, the slice corrections and
            every component kept or dropped with its volume and reason.

        Raises
        ------
        PipelineError
            If no intracranial region is found (not a head CT, or the skull is
            not visible in any slice).

        References
        ----------
        Parizel PM, et al. Eur Radiol. 2001;11:1770-1783; Cavalieri principle.
        """
        started = time.perf_counter()
        brain = intracranial_mask(volume)
        if not brain.any():
            raise PipelineError(
                "no intracranial region found: no slice has a closed skull ring "
                "(is this a head CT?)"
            )
        row_mm, col_mm = volume.pixel_spacing_mm
        sigma = (0.0, self.smoothing_sigma_mm / row_mm, self.smoothing_sigma_mm / col_mm)
        smoothed = ndimage.gaussian_filter(volume.hu, sigma=sigma)

        offsets_hu = np.zeros(volume.hu.shape[0], dtype=np.float32)
        for k in np.flatnonzero(brain.any(axis=(1, 2))):
            median = float(np.median(smoothed[k][brain[k]]))
            offsets_hu[k] = max(0.0, median - self.brain_reference_max_hu)
        corrected = smoothed - offsets_hu[:, None, None]

        candidate = (corrected >= self.min_hu) & (corrected <= self.max_hu) & brain
        kernel = disk_structuring_element(self.opening_radius_mm, volume.pixel_spacing_mm)
        opened = np.zeros_like(candidate)
        for k in np.flatnonzero(candidate.any(axis=(1, 2))):
            opened[k] = cv2.morphologyEx(candidate[k].astype(np.uint8), cv2.MORPH_OPEN, kernel) > 0

        labels, count = ndimage.label(opened, structure=np.ones((3, 3, 3), dtype=bool))
        depth = in_plane_depth_mm(brain, volume.pixel_spacing_mm)
        ring_kernel = np.zeros((3, 3, 3), dtype=bool)
        ring_kernel[1] = True
        voxel_ml = volume.voxel_volume_ml
        kept = np.zeros(volume.hu.shape, dtype=bool)
        components: list[dict] = []
        for index, slices in enumerate(ndimage.find_objects(labels), start=1):
            if slices is None:
                continue
            box = tuple(
                slice(max(s.start - 1, 0), min(s.stop + 1, n))
                for s, n in zip(slices, labels.shape, strict=True)
            )
            component = labels[box] == index
            volume_ml = float(np.count_nonzero(component, axis=(1, 2)) @ voxel_ml[box[0]])
            record = {
                "volume_ml": round(volume_ml, 4),
                "slice_range": [int(slices[0].start), int(slices[0].stop - 1)],
            }
            if volume_ml < self.min_component_ml:
                record["dropped"] = "smaller than min_component_ml"
            else:
                median_depth = float(np.median(depth[box][component]))
                ring = ndimage.binary_dilation(component, structure=ring_kernel) & ~component
                ring_values = corrected[box][ring]
                ring_dense = (
                    float(np.mean(ring_values > self.calcification_min_hu))
                    if ring_values.size
                    else 0.0
                )
                record["median_edge_distance_mm"] = round(median_depth, 2)
                record["ring_dense_fraction"] = round(ring_dense, 3)
                record["mean_hu"] = round(float(volume.hu[box][component].mean()), 1)
                if median_depth < self.edge_margin_mm:
                    record["dropped"] = (
                        "bone edge: median distance to mask edge below edge_margin_mm"
                    )
                elif ring_dense > self.calcification_ring_fraction:
                    record["dropped"] = "next to calcification or bone"
                else:
                    kept[box] |= component
            components.append(record)

        filled = kept.copy()
        rim_allowed = (
            brain & (corrected >= self.rim_min_hu) & (corrected < self.calcification_min_hu)
        )
        rim_kernel = disk_structuring_element(self.rim_mm, volume.pixel_spacing_mm)
        for k in np.flatnonzero(kept.any(axis=(1, 2))):
            holes = ndimage.binary_fill_holes(kept[k]) & ~kept[k]
            filled[k] |= (
                holes & (corrected[k] > self.max_hu) & (corrected[k] < self.calcification_min_hu)
            )
            if self.rim_mm > 0:
                grown = cv2.dilate(filled[k].astype(np.uint8), rim_kernel) > 0
                filled[k] |= grown & rim_allowed[k]

        total_ml = volume.mask_volume_ml(filled)
        present = total_ml >= self.min_total_ml
        kept_records = [c for c in components if "dropped" not in c]
        dropped_records = [c for c in components if "dropped" in c]
        elapsed_s = time.perf_counter() - started
        details = {
            "parameters": self.parameters(),
            "intracranial_volume_ml": round(volume.mask_volume_ml(brain), 1),
            "slice_offsets_hu": [round(float(x), 1) for x in offsets_hu],
            "components_found": int(count),
            "components_kept": len(kept_records),
            "kept_component_volumes_ml": [c["volume_ml"] for c in kept_records],
            "components": kept_records
            + sorted(dropped_records, key=lambda c: -c["volume_ml"])[:20],
            "components_dropped": len(dropped_records),
            "hemorrhage_volume_ml": round(total_ml, 3),
            "runtime_s": round(elapsed_s, 3),
        }
        logger.info(
            "ich-baseline on series %s: %s, %.2f mL in %d component(s), %.2f s",
            volume.series_instance_uid,
            "present" if present else "absent",
            total_ml,
            len(kept_records),
            elapsed_s,
        )
        finding = SegmentFinding(
            label=HEMORRHAGE_LABEL,
            present=bool(present),
            volume_ml=float(total_ml),
            mask=filled,
            probability=None,
        )
        return PipelineResult(
            pipeline=self.name,
            algorithm=self.algorithm,
            findings=[finding],
            details=details,
        )
