"""ICH findings from a prediction: blood, blood rules, regions and subtype decision.

:func:`findings_from_prediction` maps the model-grid probabilities back to
the source grid and decides what is reported: with the manifest's
``detection.series_rule = "region"`` the candidate blood passes the blood
plausibility rules (:mod:`dicom_node.imaging.blood_rules`), is split into
connected regions that each take one subtype and an evidence score (or the
region classifier's P(blood), :mod:`dicom_node.imaging.region_features`);
with ``"max"`` the largest smoothed probability decides. Split out of
:mod:`dicom_node.pipelines.ich` (whose module docstring states the rules),
which re-exports every name defined here.

References
----------
DICOM PS3.3 A.51 Segmentation IOD (non-overlapping masks on the source
frames, one LABELMAP segment per subtype).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage

from dicom_node.errors import NotAnalysableError
from dicom_node.imaging.blood_rules import (
    BloodRuleReport,
    BloodRuleSettings,
    apply_blood_rules,
    fit_midsagittal_line,
)
from dicom_node.imaging.head_ct import HeadCtMeasures, cranial_cavity
from dicom_node.imaging.ich_input import ICH_CLASSES, ICH_SUBTYPES, InPlaneGrid, to_source_grid
from dicom_node.imaging.region_features import RegionClassifier, region_features
from dicom_node.pipelines.base import SegmentFinding
from dicom_node.pipelines.ich_package import SUBTYPE_ASSIGNMENTS, IchModelPackage
from dicom_node.pipelines.ich_predict import IchPrediction
from dicom_node.series.volume import CTVolume

#: Label of the any-ICH finding (a key of :mod:`dicom_node.results.codes`).
ANY_ICH_LABEL = "intracranial hemorrhage"
#: More candidate blood than this (mL) before the blood rules is not a result to trust.
MAX_CANDIDATE_BLOOD_ML = 250.0


def _drop_small_components(mask: np.ndarray, volume: CTVolume, min_ml: float) -> np.ndarray:
    if min_ml <= 0 or not mask.any():
        return mask
    labelled, count = ndimage.label(mask)
    voxel_ml = volume.voxel_volume_ml  # (slices,)
    per_voxel = np.broadcast_to(voxel_ml[:, None, None], mask.shape)[mask]
    sizes = np.bincount(labelled[mask], weights=per_voxel, minlength=count + 1)
    keep = sizes >= min_ml
    keep[0] = False
    return keep[labelled]


def subtype_labels(
    probabilities: np.ndarray, hemorrhage: np.ndarray, assignment: str = "voxel"
) -> np.ndarray:
    """Assign each blood voxel one subtype.

    Parameters
    ----------
    probabilities : numpy.ndarray
        float, (slices, rows, columns, 1 + 5): background then the subtypes
        in :data:`ICH_SUBTYPES` order, on the source grid.
    hemorrhage : numpy.ndarray
        bool, (slices, rows, columns): voxels called blood.
    assignment : str
        ``"voxel"``: the subtype of largest probability in each voxel;
        ``"region"``: every 6-connected blood region (3-D) takes the subtype
        whose probability summed over the region is largest.

    Returns
    -------
    numpy.ndarray
        int, (slices, rows, columns): 1-5 (index into :data:`ICH_SUBTYPES`
        plus one) inside ``hemorrhage``; outside it, the voxel's own
        argmax for ``"voxel"`` and 0 for ``"region"``.

    Raises
    ------
    ValueError
        If ``assignment`` is not one of :data:`SUBTYPE_ASSIGNMENTS`.
    """
    if assignment == "voxel":
        return np.argmax(probabilities[..., 1:], axis=-1) + 1
    if assignment != "region":
        raise ValueError(f"subtype assignment {assignment!r} is not one of {SUBTYPE_ASSIGNMENTS}")
    regions, count = ndimage.label(hemorrhage)
    if count == 0:
        return np.zeros(hemorrhage.shape, dtype=np.int64)
    inside = regions[hemorrhage]  # (n,) region of each blood voxel
    blood_probabilities = probabilities[hemorrhage]  # (n, 1 + 5)
    sums = np.stack(
        [
            np.bincount(inside, weights=blood_probabilities[:, c], minlength=count + 1)
            for c in range(1, probabilities.shape[-1])
        ],
        axis=1,
    )  # (count + 1, 5); row 0 (outside the blood) stays 0
    winner = np.argmax(sums, axis=1) + 1
    winner[0] = 0
    return winner[regions]


def _laterality(volume: CTVolume, grid: InPlaneGrid, mask: np.ndarray, subtype: str) -> str | None:
    """Side of a mask relative to the centre of the head (patient left is +x in LPS)."""
    if not mask.any():
        return None
    size = grid.size
    centre_col = ((size - 1) / 2.0 - grid.matrix[0, 2]) / grid.matrix[0, 0]
    columns = np.nonzero(mask)[2].astype(np.float64)
    toward_left = (columns - centre_col) * np.sign(volume.row_direction[0] or 1.0) > 0
    left = float(toward_left.mean())
    if left >= 0.85:
        return "left"
    if left <= 0.15:
        return "right"
    if subtype in ("subdural hemorrhage", "epidural hemorrhage", "subarachnoid hemorrhage"):
        return "bilateral"
    return None


def _subarachnoid_leading(source: np.ndarray) -> np.ndarray:
    """bool (slabs, rows, columns): subarachnoid is the most probable subtype."""
    return np.argmax(source[..., 1:], axis=-1) == ICH_SUBTYPES.index("subarachnoid hemorrhage")


def findings_from_prediction(
    volume: CTVolume,
    prediction: IchPrediction,
    package: IchModelPackage,
    *,
    head: HeadCtMeasures | None = None,
    blood_rules: BloodRuleSettings | None = None,
    region_classifier: RegionClassifier | Literal[True] | None = True,
    regions_out: dict | None = None,
) -> tuple[list[SegmentFinding], dict]:
    """Turn model probabilities into findings on the source grid.

    With ``detection.series_rule = "region"`` (packages from 1.1.0): blood
    is where the subtypes together hold at least half the probability; the
    blood plausibility rules (:mod:`dicom_node.imaging.blood_rules`) remove
    what cannot be acute blood; every 6-connected 3-D blood region gets one
    subtype (largest summed probability) and an evidence score
    ``mean blood probability * (1 - exp(-volume / region_volume_scale_ml))``;
    a region is reported when it spans at least ``min_region_extent_mm``
    along the normal and its score reaches ``any_ich_threshold``. The series
    score is the largest region score, so one bright pixel cannot flip the
    call. With ``"max"`` (earlier packages) the rule of the module docstring
    applies unchanged.

    Parameters
    ----------
    volume : CTVolume
        The series the prediction was made on.
    prediction : IchPrediction
        From :func:`predict_volume`.
    package : IchModelPackage
        Thresholds and rules come from its manifest.
    head : HeadCtMeasures or None
        The cranial cavity from :func:`~dicom_node.imaging.head_ct.check_head_ct`;
        traced here when None.
    blood_rules : BloodRuleSettings or None
        Override of the package's rules (the ablation study runs each rule
        alone); None uses the package's.
    region_classifier : RegionClassifier, None or True
        True (default) uses the package's ``detection.region_classifier``;
        None uses none (the evidence formula), a classifier overrides it.
    regions_out : dict or None
        When given, receives ``features`` (:func:`region_features`, one row
        per region, row 0 background) and ``regions`` (the 3-D region labels
        on the source grid), ``eligible`` (bool per region: extent and size
        floors met) and ``evidence`` (the formula's score per region): what
        fitting a classifier needs.

    Returns
    -------
    findings : list of SegmentFinding
        One finding per subtype reported present, in :data:`ICH_SUBTYPES`
        order (masks do not overlap, so a LABELMAP SEG can carry them); when
        none is present, a single absent "intracranial hemorrhage" finding
        with an empty mask and the series score. Masks are boolean
        (slices, rows, columns) on the source grid.
    details : dict
        ``model`` (name, version), ``series_rule``, ``series_score`` (the
        unrounded value compared with ``threshold``), ``any_ich_probability``
        (rounded), ``threshold``, ``subtypes`` (per subtype: ``probability``,
        ``volume_ml``, ``present``), ``total_volume_ml``; for the region rule
        also ``regions`` (the strongest ten: subtype, volume_ml,
        mean_probability, extent_mm, score, reported, first/last slice index),
        ``blood_rules`` (mL removed per rule, calcifications recognised) and
        ``slabs`` (model slices used for the source slices).

    Raises
    ------
    NotAnalysableError
        With gate ``model_output`` when the model calls more than
        :data:`MAX_CANDIDATE_BLOOD_ML` of the head blood: not a result to
        report.
    """
    if package.series_rule == "max":
        return _findings_max_rule(volume, prediction, package)
    slab_of_slice = prediction.slab_of_slice(volume.shape[0])
    source = to_source_grid(prediction.probabilities, prediction.grid)  # (slabs, r, c, 6)
    blood_slab = source[..., 1:].sum(axis=-1) >= 0.5
    blood = blood_slab[slab_of_slice]
    candidate_ml = volume.mask_volume_ml(blood)
    if candidate_ml > MAX_CANDIDATE_BLOOD_ML:
        raise NotAnalysableError(
            "model_output",
            f"the model calls {candidate_ml:.0f} mL of the head blood (more than "
            f"{MAX_CANDIDATE_BLOOD_ML:.0f} mL): an input it cannot read, not a result",
        )
    rules = blood_rules if blood_rules is not None else package.blood_rules
    classifier = package.region_classifier if region_classifier is True else region_classifier
    report = BloodRuleReport()
    cavity = midline = None
    if (rules is not None and rules.enabled) or classifier is not None or regions_out is not None:
        if head is None:
            slab_hu = prediction.slabs.hu if prediction.slabs is not None else volume.hu
            cavity = cranial_cavity(slab_hu, volume.pixel_spacing_mm)
        else:
            cavity = head.cavity
        midline = fit_midsagittal_line(cavity.cavity, volume.pixel_spacing_mm)
    if rules is not None and rules.enabled:
        assert cavity is not None  # traced above whenever rules are enabled
        blood, report = apply_blood_rules(
            blood,
            volume.hu,
            slab_of_slice=slab_of_slice,
            cavity=cavity,
            pixel_spacing_mm=volume.pixel_spacing_mm,
            voxel_volume_ml=volume.voxel_volume_ml,
            settings=rules,
            midline=midline,
            thin_ok=_subarachnoid_leading(source)[slab_of_slice],
        )
    regions, count = ndimage.label(blood)
    kk, rr, cc = np.nonzero(blood)
    inside = regions[kk, rr, cc]
    probabilities = source[slab_of_slice[kk], rr, cc]  # (n, 6)
    voxel_ml = volume.voxel_volume_ml[kk]
    n = count + 1
    region_ml = np.bincount(inside, weights=voxel_ml, minlength=n)
    voxels = np.bincount(inside, minlength=n).astype(np.float64)
    blood_p = probabilities[:, 1:].sum(axis=1)
    mean_p = np.bincount(inside, weights=blood_p, minlength=n) / np.maximum(voxels, 1)
    sums = np.stack(
        [
            np.bincount(inside, weights=probabilities[:, c], minlength=n)
            for c in range(1, ICH_CLASSES)
        ],
        axis=1,
    )  # (n, 5)
    winner = np.argmax(sums, axis=1) + 1
    positions = volume.slice_positions_mm
    spacing = volume.slice_spacing_mm
    first = np.full(n, volume.shape[0], dtype=np.int64)
    last = np.full(n, -1, dtype=np.int64)
    np.minimum.at(first, inside, kk)
    np.maximum.at(last, inside, kk)
    valid = last >= 0
    extent = np.zeros(n)
    extent[valid] = (
        positions[last[valid]]
        - positions[first[valid]]
        + 0.5 * (spacing[first[valid]] + spacing[last[valid]])
    )
    evidence = mean_p * (1.0 - np.exp(-region_ml / package.region_volume_scale_ml))
    score = evidence
    if cavity is not None and (classifier is not None or regions_out is not None):
        figures = region_features(
            volume.hu,
            blood,
            regions,
            count,
            blood_p,
            winner,
            extent_mm=extent,
            region_ml=region_ml,
            depth_mm=cavity.depth_mm[slab_of_slice],
            midline=midline,
            pixel_spacing_mm=volume.pixel_spacing_mm,
        )
        if regions_out is not None:
            regions_out["features"] = figures
            regions_out["regions"] = regions
        if classifier is not None:
            score = classifier.probability(figures)
            score[0] = 0.0
    floor = np.array([0.0] + [package.min_region_ml.get(t, 0.0) for t in ICH_SUBTYPES])
    eligible = valid & (extent >= package.min_region_extent_mm) & (region_ml >= floor[winner])
    eligible[0] = False
    if regions_out is not None:
        regions_out["eligible"] = eligible
        regions_out["evidence"] = evidence
    reported_region = eligible & (score >= package.threshold)
    series_score = float(score[eligible].max()) if eligible.any() else 0.0
    label = np.zeros(volume.shape, dtype=np.int8)
    keep = reported_region[inside]
    label[kk[keep], rr[keep], cc[keep]] = winner[inside[keep]]

    findings: list[SegmentFinding] = []
    union = np.zeros(volume.shape, dtype=bool)
    per_subtype: dict[str, dict] = {}
    for index, subtype in enumerate(ICH_SUBTYPES, start=1):
        mask = label == index
        volume_ml = volume.mask_volume_ml(mask)
        own = reported_region & (winner == index)
        candidates = eligible & (winner == index)
        probability = float(score[candidates].max()) if candidates.any() else 0.0
        present = bool(own.any() and volume_ml >= package.min_volume_ml)
        per_subtype[subtype] = {
            "probability": round(probability, 4),
            "volume_ml": round(volume_ml, 3),
            "present": present,
        }
        if present:
            union |= mask
            findings.append(
                SegmentFinding(
                    label=subtype,
                    present=True,
                    volume_ml=float(volume_ml),
                    mask=mask,
                    probability=probability,
                    laterality=_laterality(volume, prediction.grid, mask, subtype),
                )
            )
    if not findings:
        findings.append(
            SegmentFinding(
                label=ANY_ICH_LABEL,
                present=False,
                volume_ml=0.0,
                mask=np.zeros(volume.shape, dtype=bool),
                probability=series_score,
            )
        )
    order = np.argsort(-np.where(valid, score, -1.0))[:10]
    region_rows = [
        {
            "subtype": ICH_SUBTYPES[int(winner[r]) - 1],
            "volume_ml": round(float(region_ml[r]), 3),
            "mean_probability": round(float(mean_p[r]), 4),
            "extent_mm": round(float(extent[r]), 1),
            "score": round(float(score[r]), 4),
            "reported": bool(reported_region[r]),
            "first_slice_index": int(first[r]),
            "last_slice_index": int(last[r]),
        }
        for r in order
        if r > 0 and valid[r]
    ]
    details = {
        "model": {"name": package.name, "version": package.version},
        "series_rule": "region",
        "series_score": series_score,
        "any_ich_probability": round(series_score, 4),
        "threshold": package.threshold,
        "subtypes": per_subtype,
        "total_volume_ml": round(volume.mask_volume_ml(union), 3),
        "candidate_blood_ml": round(candidate_ml, 3),
        "regions": region_rows,
        "blood_rules": report.as_dict(),
        "slabs": {
            "model_slices": int(prediction.probabilities.shape[0]),
            "source_slices": int(volume.shape[0]),
        },
    }
    return findings, details


def _findings_max_rule(
    volume: CTVolume, prediction: IchPrediction, package: IchModelPackage
) -> tuple[list[SegmentFinding], dict]:
    """Turn model probabilities into findings on the source grid.

    Parameters
    ----------
    volume : CTVolume
        The series the prediction was made on.
    prediction : IchPrediction
        From :func:`predict_volume`.
    package : IchModelPackage
        Thresholds come from its manifest.

    Returns
    -------
    findings : list of SegmentFinding
        One finding per subtype reported present, in :data:`ICH_SUBTYPES`
        order (masks do not overlap, so a LABELMAP SEG can carry them); when
        none is present, a single absent "intracranial hemorrhage" finding
        with an empty mask and the any-ICH probability. Masks are boolean
        (slices, rows, columns) on the source grid.
        A series whose any-ICH probability reaches the threshold but where no
        subtype passes its own tests also gets only that absent finding.
    details : dict
        ``model`` (name, version), ``any_ich_probability``, ``threshold``,
        ``subtypes`` (per subtype: ``probability``, ``volume_ml`` in mL after
        dropping components below ``min_component_ml``, ``present``) and
        ``total_volume_ml`` (mL, union of the reported masks). Probabilities
        are rounded to 4 decimals, volumes to 3.
    """
    source = to_source_grid(prediction.probabilities, prediction.grid)
    # Blood where the subtypes together hold at least half the probability. Outside
    # the model's field of view every channel maps back as 0, so nothing there is blood
    # (testing P(background) <= 0.5 would call that whole rim hemorrhage).
    hemorrhage = source[..., 1:].sum(axis=-1) >= 0.5
    label = subtype_labels(source, hemorrhage, package.subtype_assignment)
    any_score = prediction.smoothed_max(None)
    positive = any_score >= package.threshold
    findings: list[SegmentFinding] = []
    union = np.zeros(volume.shape, dtype=bool)
    per_subtype: dict[str, dict] = {}
    for index, subtype in enumerate(ICH_SUBTYPES, start=1):
        mask = _drop_small_components(
            hemorrhage & (label == index), volume, package.min_component_ml
        )
        volume_ml = volume.mask_volume_ml(mask)
        score = prediction.smoothed_max(index)
        present = bool(
            positive and score >= package.threshold and volume_ml >= package.min_volume_ml
        )
        per_subtype[subtype] = {
            "probability": round(score, 4),
            "volume_ml": round(volume_ml, 3),
            "present": present,
        }
        if present:
            union |= mask
            findings.append(
                SegmentFinding(
                    label=subtype,
                    present=True,
                    volume_ml=float(volume_ml),
                    mask=mask,
                    probability=float(score),
                    laterality=_laterality(volume, prediction.grid, mask, subtype),
                )
            )
    total_ml = volume.mask_volume_ml(union)
    if not findings:
        # Negative: one any-ICH finding, absent, so the SR states "No intracranial
        # hemorrhage detected" and the SEG carries one (empty) segment.
        findings.append(
            SegmentFinding(
                label=ANY_ICH_LABEL,
                present=False,
                volume_ml=0.0,
                mask=np.zeros(volume.shape, dtype=bool),
                probability=float(any_score),
            )
        )
    details = {
        "model": {"name": package.name, "version": package.version},
        "series_rule": "max",
        "series_score": float(any_score),
        "any_ich_probability": round(any_score, 4),
        "threshold": package.threshold,
        "subtypes": per_subtype,
        "total_volume_ml": round(total_ml, 3),
    }
    return findings, details
