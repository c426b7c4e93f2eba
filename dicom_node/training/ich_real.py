"""Public labelled ICH datasets as model-grid training cases and as evaluation sets.

Bridges :mod:`dicom_node.training.datasets` (the readers of PhysioNet CT-ICH,
BHSD, RSNA and the renders layout) to training and evaluation:

* voxel-labelled volumes (PhysioNet, BHSD) become
  :class:`~dicom_node.training.ich_data.ModelGridCase` objects for
  ``dicom-node train ich --dataset ...``; voxels of unknown subtype keep the
  label :data:`~dicom_node.pipelines.ich_layers.IGNORE_LABEL` (255), which the
  loss ignores;
* ``dicom-node evaluate ich --dataset ...`` runs the pipeline's own functions
  on each series and reports series-level AUC, sensitivity and specificity at
  the manifest threshold, slice-level AUC, and (for voxel labels) Dice per
  subtype. The renders layout holds 8-bit windowed images, not HU, so it
  cannot be evaluated by a model that takes HU; it is refused with that reason.

References
----------
Hssayeni MD, et al. Data 2020;5(1):14 (PhysioNet CT-ICH); Wu B, et al. BHSD,
MLMI 2023; Flanders AE, et al. Radiol Artif Intell 2020;2(3):e190211 (RSNA).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.uid import generate_uid

from dicom_node.errors import DatasetError
from dicom_node.imaging.ich_input import (
    AIR_HU,
    ICH_SUBTYPES,
    IchInputSpec,
    head_grid,
    labels_to_model_grid,
    subtype_label,
    to_model_grid,
    window_channels,
)
from dicom_node.imaging.masks import dice_coefficient
from dicom_node.series.volume import CTVolume
from dicom_node.training.ich_data import ModelGridCase

logger = logging.getLogger(__name__)

#: Label of hemorrhage whose subtype the dataset does not give.
UNKNOWN_SUBTYPE = 255


def labelled_volume_to_ct(volume) -> CTVolume:
    """Give a :class:`~dicom_node.training.datasets.LabelledVolume` the node's volume type.

    Parameters
    ----------
    volume : LabelledVolume
        HU (slices, rows, columns) with a (slice, row, column) -> LPS affine.

    Returns
    -------
    CTVolume
        Same array and geometry; UIDs derived from the case id (not DICOM
        originals: NIfTI carries none).

    Raises
    ------
    DatasetError
        If the affine's row and column axes are not orthogonal.
    """
    affine = np.asarray(volume.affine, dtype=np.float64)
    row_direction = affine[:3, 2] / np.linalg.norm(affine[:3, 2])  # along a row: columns
    column_direction = affine[:3, 1] / np.linalg.norm(affine[:3, 1])
    if abs(float(row_direction @ column_direction)) > 1e-3:
        raise DatasetError(f"{volume.source} case {volume.case_id}: oblique in-plane axes")
    slices = volume.hu.shape[0]
    positions = np.stack([affine[:3, 0] * k + affine[:3, 3] for k in range(slices)])
    seed = f"{volume.source}/{volume.case_id}"
    return CTVolume(
        hu=volume.hu,
        sop_instance_uids=tuple(generate_uid(entropy_srcs=[seed, str(k)]) for k in range(slices)),
        image_positions_mm=positions,
        image_orientation=np.concatenate([row_direction, column_direction]),
        pixel_spacing_mm=volume.pixel_spacing_mm,
        slice_thickness_mm=volume.slice_spacing_mm,
        frame_of_reference_uid=generate_uid(entropy_srcs=[seed, "for"]),
        study_instance_uid=generate_uid(entropy_srcs=[seed, "study"]),
        series_instance_uid=generate_uid(entropy_srcs=[seed, "series"]),
    )


def model_grid_case_from_volume(volume, spec: IchInputSpec) -> ModelGridCase:
    """Resample a labelled volume onto the model grid for training.

    Parameters
    ----------
    volume : LabelledVolume
        Voxel-labelled volume (labels 0-5 and 255 unknown subtype).
    spec : IchInputSpec
        Model input specification.

    Returns
    -------
    ModelGridCase
        Labels 0-5 by area fraction
        (:func:`~dicom_node.imaging.ich_input.labels_to_model_grid`); a model
        pixel that got no subtype and is at least 40 % covered by voxels of
        unknown subtype gets 255. ``subtypes`` are those present in the voxel
        labels, ``volumes_ml`` their label volumes (mL) on the source grid,
        ``seed`` is -1.

    Raises
    ------
    ValueError
        If the volume shows no head (no voxel above -300 HU).
    """
    grid = head_grid(volume.hu, volume.pixel_spacing_mm, spec)
    known = np.where(volume.labels == UNKNOWN_SUBTYPE, 0, volume.labels).astype(np.uint8)
    labels = labels_to_model_grid(known, grid)
    unknown = volume.labels == UNKNOWN_SUBTYPE
    if unknown.any():
        fraction = to_model_grid(unknown.astype(np.float32), grid, fill=0.0)
        labels[(fraction >= 0.4) & (labels == 0)] = UNKNOWN_SUBTYPE
    counts = {s: int(np.count_nonzero(volume.labels == subtype_label(s))) for s in ICH_SUBTYPES}
    present = [s for s in ICH_SUBTYPES if counts[s]]
    voxel_ml = abs(float(np.linalg.det(np.asarray(volume.affine)[:3, :3]))) / 1000.0
    return ModelGridCase(
        windowed=window_channels(to_model_grid(np.maximum(volume.hu, AIR_HU), grid), spec),
        labels=labels,
        subtypes=tuple(present),
        volumes_ml=tuple(counts[s] * voxel_ml for s in present),
        seed=-1,
    )


def model_grid_cases_from_dataset(dataset: str, spec: IchInputSpec) -> list[ModelGridCase]:
    """Read a voxel-labelled dataset (``physionet:PATH`` or ``bhsd:PATH``) for training.

    Parameters
    ----------
    dataset : str
        ``"<kind>:<path>"`` as :func:`dicom_node.training.datasets.open_dataset` takes.
    spec : IchInputSpec
        Model input specification.

    Returns
    -------
    list of ModelGridCase

    Raises
    ------
    DatasetError
        If the dataset breaks its layout or has slice labels only (RSNA,
        renders), which the segmentation loss cannot use.
    ValueError
        If a volume shows no head.
    """
    from dicom_node.training.datasets import LabelledVolume, open_dataset

    cases = []
    for item in open_dataset(dataset):
        if not isinstance(item, LabelledVolume):
            raise DatasetError(
                f"{dataset}: training needs voxel labels (physionet or bhsd); "
                "slice-level datasets can be used with 'dicom-node evaluate ich --dataset'"
            )
        cases.append(model_grid_case_from_volume(item, spec))
    logger.info("%s: %d labelled volumes", dataset, len(cases))
    return cases


def evaluate_dataset(model_dir: Path, dataset: str) -> dict:
    """Evaluate a model package on a public dataset read by the project's readers.

    Parameters
    ----------
    model_dir : Path
        Model package folder.
    dataset : str
        ``"physionet:PATH"``, ``"bhsd:PATH"`` or ``"rsna:PATH"``.

    Returns
    -------
    dict
        ``model``, ``summary`` (series and slice AUC, sensitivity,
        specificity at the manifest threshold, mean Dice per subtype where
        voxel labels exist) and ``cases`` (per series: id, truth, score, slice
        count). The score is the unrounded any-ICH probability that the
        pipeline compares with the threshold.

    Raises
    ------
    DatasetError
        If the dataset breaks its layout, holds no HU (renders), or is empty.
    ModelPackageError
        If the package fails verification.
    PipelineError
        If a series shows no head.
    """
    from dicom_node.pipelines.ich import (
        WEIGHTS_NAME,
        IchModelPackage,
        findings_from_prediction,
        load_keras_model,
        predict_volume,
    )
    from dicom_node.training.datasets import LabelledVolume, open_dataset
    from dicom_node.training.evaluate_ich import roc_auc

    package = IchModelPackage.load(Path(model_dir))
    model = load_keras_model(package.path / WEIGHTS_NAME)
    rows: list[dict[str, Any]] = []
    slice_truth: list[bool] = []
    slice_scores: list[float] = []
    dice: dict[str, list[float]] = {s: [] for s in ICH_SUBTYPES}
    for item in open_dataset(dataset):
        if isinstance(item, LabelledVolume):
            volume = labelled_volume_to_ct(item)
            truth_slices = item.any_hemorrhage
        elif (rendered_volume := getattr(item, "volume", None)) is not None:
            volume = rendered_volume
            truth_slices = item.any_hemorrhage
        else:
            raise DatasetError(
                f"{dataset}: rendered 8-bit images hold no Hounsfield units; the model "
                "takes HU, so this layout cannot be evaluated"
            )
        prediction = predict_volume(model, volume, package.spec)
        findings, _details = findings_from_prediction(volume, prediction, package)
        scores = prediction.slice_scores()
        slice_truth.extend(bool(v) for v in truth_slices)
        slice_scores.extend(float(v) for v in scores)
        # Unrounded: details["any_ich_probability"] is rounded to 4 decimals.
        row = {
            "case_id": item.case_id,
            "positive": bool(np.any(truth_slices)),
            "score": prediction.smoothed_max(None),
            "slices": int(volume.shape[0]),
        }
        if isinstance(item, LabelledVolume):
            for subtype in ICH_SUBTYPES:
                truth = item.labels == subtype_label(subtype)
                if truth.any():
                    found = [f.mask for f in findings if f.present and f.label == subtype]
                    predicted = found[0] if found else np.zeros(truth.shape, dtype=bool)
                    dice[subtype].append(dice_coefficient(truth, predicted))
        rows.append(row)
    if not rows:
        raise DatasetError(f"{dataset}: no series found")
    truth = np.array([r["positive"] for r in rows])
    called = np.array([r["score"] >= package.threshold for r in rows])
    summary = {
        "dataset": dataset,
        "series": len(rows),
        "positive_series": int(truth.sum()),
        "series_auc": roc_auc([r["score"] for r in rows], truth),
        "sensitivity": float((called & truth).sum() / truth.sum()) if truth.any() else None,
        "specificity": float((~called & ~truth).sum() / (~truth).sum()) if (~truth).any() else None,
        "slice_auc": roc_auc(slice_scores, slice_truth),
        "dice_mean": {s: float(np.mean(v)) if v else None for s, v in dice.items()},
        "threshold": package.threshold,
    }
    return {
        "model": {"name": package.name, "version": package.version},
        "summary": summary,
        "cases": rows,
    }
