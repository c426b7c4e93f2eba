"""The parts of the ICH model package a training run writes: weights, threshold, manifest.

Split out of :mod:`dicom_node.training.train_ich`, which runs the training and
re-exports every name defined here (its log lines keep the
``dicom_node.training.train_ich`` logger):

- :func:`save_inference_model`, the trained weights in an uncompiled network;
- :func:`series_scores` and :func:`youden_threshold`, the any-ICH operating
  threshold chosen on the validation cases;
- :func:`label_entries` and the training-data summary of ``manifest.json``
  (lesions per subtype, mimics per kind).

References
----------
Youden WJ. Index for rating diagnostic tests. Cancer 1950;3:32-35.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dicom_node.imaging.ich_input import ICH_CLASSES, ICH_SUBTYPES, IchInputSpec
from dicom_node.training.ich_data import ModelGridCase

if TYPE_CHECKING:
    from dicom_node.training.train_ich_data import IchTrainingConfig

#: The logger of :mod:`dicom_node.training.train_ich`, which this module was split from.
logger = logging.getLogger("dicom_node.training.train_ich")


def save_inference_model(model, path: Path, spec: IchInputSpec, filters: tuple[int, ...]) -> None:
    """Save the trained weights in an uncompiled copy of the network (no optimizer state).

    Parameters
    ----------
    model : keras.Model
        The trained ResUNet.
    path : Path
        ``model.keras`` to write; about a third of the size of a file that
        also holds the Adam moments.
    spec : IchInputSpec
        Its input specification.
    filters : tuple of int
        Its filters per level.
    """
    from dicom_node.training.resunet import build_resunet

    inference = build_resunet(
        size=spec.size, channels=spec.channels, classes=ICH_CLASSES, filters=tuple(filters)
    )
    inference.set_weights(model.get_weights())
    inference.save(path)


def series_scores(model, cases: Sequence[ModelGridCase], spec: IchInputSpec) -> np.ndarray:
    """Any-ICH probability of each case as the pipeline computes it.

    Parameters
    ----------
    model : keras.Model
        The ResUNet.
    cases : sequence of ModelGridCase
        Cases on the model grid.
    spec : IchInputSpec
        Model input specification.

    Returns
    -------
    numpy.ndarray
        float64 array (cases,) in [0, 1].
    """
    from dicom_node.pipelines.ich import IchPrediction, predict_model_grid

    scores = []
    for case in cases:
        probabilities = predict_model_grid(model, case.windowed, spec)
        # smoothed_max reads only the probabilities; a model-grid case has no source grid
        prediction = IchPrediction(probabilities=probabilities, grid=None)  # type: ignore[arg-type]
        scores.append(prediction.smoothed_max(None))
    return np.asarray(scores, dtype=np.float64)


def youden_threshold(scores: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """Threshold on a score that maximises Youden's J.

    Parameters
    ----------
    scores : numpy.ndarray
        (cases,) scores, higher meaning hemorrhage.
    truth : numpy.ndarray
        (cases,) booleans, True for hemorrhage.

    Returns
    -------
    threshold, sensitivity, specificity : float
        Among the observed scores, the lowest one with the largest J (ties go
        to the more sensitive side) is found; the threshold returned lies
        midway between it and the next lower observed score (it is that score
        when none is lower), so it gives the same sensitivity and
        specificity, which are returned with it.

    Raises
    ------
    ValueError
        If ``truth`` has no positives or no negatives.

    References
    ----------
    Youden WJ. Cancer 1950;3:32-35.
    """
    truth = np.asarray(truth, dtype=bool)
    if truth.all() or not truth.any():
        raise ValueError("need both positive and negative cases to choose a threshold")
    best = (-1.0, 0.5, 0.0, 0.0)
    for candidate in np.unique(scores):
        predicted = scores >= candidate
        sensitivity = float((predicted & truth).sum() / truth.sum())
        specificity = float((~predicted & ~truth).sum() / (~truth).sum())
        j = sensitivity + specificity - 1.0
        if j > best[0] + 1e-12:
            best = (j, float(candidate), sensitivity, specificity)
    # Put the threshold midway below the chosen score, towards the next lower score.
    lower = scores[scores < best[1]]
    threshold = 0.5 * (best[1] + lower.max()) if lower.size else best[1]
    return float(threshold), best[2], best[3]


def label_entries() -> list[dict]:
    """The manifest ``labels``: value, finding and its codes from :mod:`dicom_node.results.codes`.

    Returns
    -------
    list of dict
        One entry per subtype in label order, with the SNOMED CT (or DICOM)
        codes the results carry; ``codes`` is null where the results layer
        has no checked code for a subtype.
    """
    from dicom_node.errors import ResultBuildError
    from dicom_node.results import codes

    entries = []
    for value, subtype in enumerate(ICH_SUBTYPES, start=1):
        try:
            fc = codes.finding_codes(subtype)
            coded = {
                "finding_type": [
                    fc.finding_type.value,
                    fc.finding_type.scheme_designator,
                    fc.finding_type.meaning,
                ],
                "finding_site": [
                    fc.finding_site.value,
                    fc.finding_site.scheme_designator,
                    fc.finding_site.meaning,
                ],
            }
        except (ResultBuildError, AttributeError) as err:
            logger.warning("no codes for %s: %s", subtype, err)
            coded = None
        entries.append({"value": value, "finding": subtype, "codes": coded})
    return entries


#: Kinds of :func:`dicom_node.training.mimics.vary_scanner`, not mimics of blood.
_SCANNER_KINDS = ("kernel:", "noise:", "field of view:")


def _summary_key(name: str) -> str:
    """``"kind: site"`` of a mimic without the drawn parameters of a scanner change."""
    kind, _, site = name.partition(": ")
    if kind == "kernel":
        return f"kernel: {site.split(':')[0]}"
    return kind if name.startswith(_SCANNER_KINDS) else name


def _training_summary(config: IchTrainingConfig, cases: Sequence[ModelGridCase], base) -> dict:
    counts = {s: 0 for s in ICH_SUBTYPES}
    volumes: dict[str, list[float]] = {s: [] for s in ICH_SUBTYPES}
    negatives = multi = 0
    mimic_counts: dict[str, int] = {}
    for case in cases:
        for name in case.mimics:
            key = _summary_key(name)
            mimic_counts[key] = mimic_counts.get(key, 0) + 1
        if not case.subtypes:
            negatives += 1
        if len(case.subtypes) > 1:
            multi += 1
        for s, v in zip(case.subtypes, case.volumes_ml, strict=True):
            counts[s] += 1
            volumes[s].append(v)
    return {
        "kind": "synthetic hemorrhages inserted into one real non-contrast head CT",
        "base_series": {
            "source": "../shared/data/head-ct-ge (GE HiSpeed Dual, neurolabusc/dcm_qa_ct, BSD-2)",
            "slices": int(base.shape[0]),
            "pixel_spacing_mm": [float(v) for v in base.pixel_spacing_mm],
            "in_plane_downsample": config.downsample,
        },
        "cases": len(cases),
        "negative_cases": negatives,
        "multi_lesion_cases": multi,
        "lesions_per_subtype": counts,
        "lesion_volume_ml_range": {
            s: [round(min(v), 2), round(max(v), 2)] if v else None for s, v in volumes.items()
        },
        "seeds": [config.train_seed_start, config.train_seed_start + config.train_cases - 1],
        "generator": "dicom_node.training.lesions.make_case",
        "mimic_fraction": float(config.mimic_fraction),
        "scanner_variety": bool(config.scanner_variety),
        "validation_mimics": bool(config.validation_mimics),
        "cases_with_mimics": sum(
            1 for c in cases if any(not m.startswith(_SCANNER_KINDS) for m in c.mimics)
        ),
        "mimics_per_kind": mimic_counts,
        "extra_datasets": list(config.datasets),
    }
