"""Pipeline ``ich``: learned 5-subtype hemorrhage segmentation and detection.

A Keras 3 residual U-Net (:mod:`dicom_node.training.resunet`) predicts, for
every source slice resampled in plane to the model grid and stacked with its
neighbours (:mod:`dicom_node.imaging.ich_input`), per-pixel probabilities of
background and the five subtypes of :data:`~dicom_node.imaging.ich_input.ICH_SUBTYPES`.
The probabilities go back to the exact source grid by the inverse in-plane
affine map, so every mask frame still belongs to its source SOP instance.

Detection is derived from the segmentation: the any-ICH probability of a
series is the largest 3x3-smoothed probability of "not background" on the
model grid; the series is positive at or above the operating threshold stored
in the model manifest (chosen on a validation set). A subtype is reported
present when the series is positive, its own smoothed probability reaches the
threshold and its mask holds at least ``min_volume_ml``. Which subtype a blood
voxel belongs to follows the manifest's ``detection.subtype_assignment``:
``"voxel"`` (the largest subtype probability of that voxel; packages without
the key) or ``"region"`` (every connected blood region takes the subtype with
the largest probability summed over the region, so one lesion is not split
between two subtypes; touching lesions of two subtypes then get one).

The model package (``dicom_node/models/ich/<version>/``: ``model.keras``,
``manifest.json``, ``MODEL_CARD.md``) is read once per pipeline object; the
worker keeps one pipeline object per process, so the weights are loaded once
per worker process, after their sha256 was checked against the manifest.

This module holds the whole run (:func:`analyse_volume`) and the pipeline
object; the model package is in :mod:`dicom_node.pipelines.ich_package`, the
network and its prediction on the model grid in
:mod:`dicom_node.pipelines.ich_predict`, and the findings in
:mod:`dicom_node.pipelines.ich_findings`. Every name of those modules that
was defined here is still importable from here.

References
----------
Ronneberger O, et al. U-Net. MICCAI 2015; DICOM PS3.3 A.51 Segmentation IOD
(masks on the source frames); Hanley JA, McNeil BJ. Radiology 1982;143:29-36
(AUC used to report the detection score).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from dicom_node.imaging.blood_rules import BloodRuleSettings
from dicom_node.imaging.head_ct import check_head_ct
from dicom_node.imaging.ich_input import slab_grid
from dicom_node.imaging.region_features import RegionClassifier
from dicom_node.pipelines.base import AlgorithmIdentity, PipelineResult, SegmentFinding
from dicom_node.pipelines.ich_findings import (
    ANY_ICH_LABEL,
    MAX_CANDIDATE_BLOOD_ML,
    findings_from_prediction,
    subtype_labels,
)
from dicom_node.pipelines.ich_package import (
    MANIFEST_NAME,
    MODEL_CARD_NAME,
    SERIES_RULES,
    SUBTYPE_ASSIGNMENTS,
    WEIGHTS_NAME,
    IchModelPackage,
    default_model_dir,
    sha256_file,
    shipped_models_dir,
)
from dicom_node.pipelines.ich_predict import (
    BATCH_SLICES,
    IchPrediction,
    load_keras_model,
    predict_model_grid,
    predict_volume,
    slab_voxel_volume_ml,
)
from dicom_node.series.volume import CTVolume

#: The names importable from this module: its own and those of the modules it was
#: split into (:mod:`~dicom_node.pipelines.ich_package`,
#: :mod:`~dicom_node.pipelines.ich_predict`, :mod:`~dicom_node.pipelines.ich_findings`).
__all__ = [
    "ANY_ICH_LABEL",
    "BATCH_SLICES",
    "MANIFEST_NAME",
    "MAX_CANDIDATE_BLOOD_ML",
    "MODEL_CARD_NAME",
    "SERIES_RULES",
    "SUBTYPE_ASSIGNMENTS",
    "WEIGHTS_NAME",
    "IchModelPackage",
    "IchPipeline",
    "IchPrediction",
    "analyse_volume",
    "default_model_dir",
    "findings_from_prediction",
    "load_keras_model",
    "predict_model_grid",
    "predict_volume",
    "sha256_file",
    "shipped_models_dir",
    "slab_voxel_volume_ml",
    "subtype_labels",
]

logger = logging.getLogger(__name__)


def analyse_volume(
    model,
    volume: CTVolume,
    package: IchModelPackage,
    *,
    blood_rules: BloodRuleSettings | None = None,
    prediction: IchPrediction | None = None,
    region_classifier: RegionClassifier | Literal[True] | None = True,
    regions_out: dict | None = None,
) -> tuple[list[SegmentFinding], dict, IchPrediction]:
    """Check the input, predict and turn the prediction into findings: the whole ``ich`` run.

    Parameters
    ----------
    model : keras.Model
        The network.
    volume : CTVolume
        Non-contrast head CT in HU.
    package : IchModelPackage
        Its package.
    blood_rules : BloodRuleSettings or None
        Override of the package's blood rules (ablation).
    prediction : IchPrediction or None
        A prediction already made on this volume (ablation: one forward pass,
        several rule sets).
    region_classifier, regions_out
        As :func:`findings_from_prediction`.

    Returns
    -------
    findings : list of SegmentFinding
    details : dict
        As :func:`findings_from_prediction`, plus ``input_checks``, the
        figures of :func:`~dicom_node.imaging.head_ct.check_head_ct`.
    prediction : IchPrediction

    Raises
    ------
    NotAnalysableError
        If the input is not a plausible non-contrast head CT in HU, or the
        model's output is implausible.
    PipelineError
        If the series cannot be placed on the model grid.
    """
    spec = package.spec
    slabs = (
        prediction.slabs
        if prediction is not None and prediction.slabs is not None
        else slab_grid(volume.hu, volume.slice_positions_mm, spec.slab_thickness_mm)
    )
    head = check_head_ct(
        slabs.hu,
        volume.pixel_spacing_mm,
        slab_voxel_volume_ml(volume, slabs.slab_of_slice),
        contrast_bolus_agent=getattr(volume, "contrast_bolus_agent", None),
    )
    if prediction is None:
        prediction = predict_volume(model, volume, spec, slabs=slabs)
    findings, details = findings_from_prediction(
        volume,
        prediction,
        package,
        head=head,
        blood_rules=blood_rules,
        region_classifier=region_classifier,
        regions_out=regions_out,
    )
    details["input_checks"] = head.figures
    return findings, details, prediction


class IchPipeline:
    """Learned 5-subtype ICH segmentation and detection (see module docstring).

    Parameters
    ----------
    model_dir : Path or None
        Model package folder; None uses :func:`default_model_dir`.

    Raises
    ------
    ModelPackageError
        If the package is missing or its weights fail the sha256 check.

    References
    ----------
    Model card: ``dicom_node/models/ich/<version>/MODEL_CARD.md``.
    """

    name = "ich"

    def __init__(self, model_dir: Path | None = None) -> None:
        self.package = IchModelPackage.load(Path(model_dir) if model_dir else default_model_dir())
        self.algorithm = AlgorithmIdentity(
            name=f"dicom-node {self.package.name}",
            version=self.package.version,
            family="artificial intelligence",
        )
        self._model = None

    @property
    def model(self):
        """keras.Model: the network, loaded on first use and kept."""
        if self._model is None:
            self._model = load_keras_model(self.package.path / WEIGHTS_NAME)
            logger.info("loaded ICH model %s %s", self.package.name, self.package.version)
        return self._model

    def run(self, volume: CTVolume) -> PipelineResult:
        """Segment and detect hemorrhage in one head CT.

        Parameters
        ----------
        volume : CTVolume
            Non-contrast head CT in HU.

        Returns
        -------
        PipelineResult
            Findings as :func:`findings_from_prediction` returns them.

        Raises
        ------
        NotAnalysableError
            If the input is not a plausible non-contrast head CT in HU
            (:func:`~dicom_node.imaging.head_ct.check_head_ct`) or the model's
            output is implausible.
        PipelineError
            If the series cannot be placed on the model grid.
        ModelPackageError
            If the weights cannot be loaded.
        """
        findings, details, _prediction = analyse_volume(self.model, volume, self.package)
        return PipelineResult(
            pipeline=self.name, algorithm=self.algorithm, findings=findings, details=details
        )
