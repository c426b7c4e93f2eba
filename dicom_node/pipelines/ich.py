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

References
----------
Ronneberger O, et al. U-Net. MICCAI 2015; DICOM PS3.3 A.51 Segmentation IOD
(masks on the source frames); Hanley JA, McNeil BJ. Radiology 1982;143:29-36
(AUC used to report the detection score).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from dataclasses import field as dataclasses_field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from scipy import ndimage

from dicom_node.errors import ModelPackageError, NotAnalysableError, PipelineError
from dicom_node.imaging.blood_rules import (
    BloodRuleReport,
    BloodRuleSettings,
    apply_blood_rules,
    fit_midsagittal_line,
)
from dicom_node.imaging.head_ct import HeadCtMeasures, check_head_ct, cranial_cavity
from dicom_node.imaging.ich_input import (
    AIR_HU,
    ICH_CLASSES,
    ICH_SUBTYPES,
    IchInputSpec,
    InPlaneGrid,
    SlabGrid,
    head_grid,
    slab_grid,
    stack_context,
    to_model_grid,
    to_source_grid,
    window_channels,
)
from dicom_node.imaging.region_features import RegionClassifier, region_features
from dicom_node.pipelines.base import AlgorithmIdentity, PipelineResult, SegmentFinding
from dicom_node.pipelines.keras_runtime import import_keras
from dicom_node.series.volume import CTVolume

logger = logging.getLogger(__name__)

#: File names inside a model package.
MANIFEST_NAME = "manifest.json"
WEIGHTS_NAME = "model.keras"
MODEL_CARD_NAME = "MODEL_CARD.md"
#: Label of the any-ICH finding (a key of :mod:`dicom_node.results.codes`).
ANY_ICH_LABEL = "intracranial hemorrhage"
#: Values of the manifest's ``detection.subtype_assignment``.
SUBTYPE_ASSIGNMENTS = ("voxel", "region")
#: Values of the manifest's ``detection.series_rule``: ``"max"`` (the largest
#: 3x3-smoothed blood probability of any slice; packages before 1.1.0) or
#: ``"region"`` (the evidence of the strongest connected blood region).
SERIES_RULES = ("max", "region")
#: More candidate blood than this (mL) before the blood rules is not a result to trust.
MAX_CANDIDATE_BLOOD_ML = 250.0
#: Slices per forward pass; a fixed batch shape avoids retracing the model.
BATCH_SLICES = 8


def shipped_models_dir() -> Path:
    """Return the folder of the model packages shipped with the node.

    The packages live in the package folder ``dicom_node/models`` (a real
    folder, so checkouts without symlinks and sdists keep it); a built wheel
    holds them as package data, so ``pip install`` (editable or not) finds the
    same packages.

    Returns
    -------
    Path
        ``dicom_node/models`` (``dicom_node/models/<name>/<version>/`` below it).
    """
    return Path(__file__).resolve().parents[1] / "models"


def _version_key(name: str) -> tuple:
    # (0, number) sorts before (1, text) so "1.0.0" and "latest" compare without TypeError.
    return tuple(
        (0, int(p), "") if p.isdigit() else (1, 0, p) for p in name.replace("-", ".").split(".")
    )


def default_model_dir() -> Path:
    """Return the newest shipped ICH model package, ``dicom_node/models/ich/<version>``.

    Returns
    -------
    Path
        The version folder that sorts last, comparing the dot- or
        dash-separated parts numerically where they are digits.

    Raises
    ------
    ModelPackageError
        If no package with a manifest is shipped.
    """
    root = shipped_models_dir() / "ich"
    versions = sorted(
        (p for p in root.glob("*") if (p / MANIFEST_NAME).is_file()),
        key=lambda p: _version_key(p.name),
    )
    if not versions:
        raise ModelPackageError(
            f"no ICH model package under {root}; set [models] ich_model_dir to a package folder"
        )
    return versions[-1]


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file.

    Parameters
    ----------
    path : Path
        File to hash.

    Returns
    -------
    str
        64 lower-case hex digits.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class IchModelPackage:
    """A verified ICH model package.

    Parameters
    ----------
    path : Path
        Package folder.
    manifest : dict
        Parsed ``manifest.json``.
    spec : IchInputSpec
        Input specification from the manifest.
    threshold : float
        Operating threshold on the any-ICH probability.
    min_volume_ml : float
        Smallest subtype mask volume (mL) reported present.
    min_component_ml : float
        Connected components smaller than this (mL) are dropped from masks.
    subtype_assignment : str
        ``"voxel"`` or ``"region"`` (see the module docstring); ``"voxel"``
        when the manifest has no ``detection.subtype_assignment``.
    series_rule : str
        ``"max"`` or ``"region"`` (:data:`SERIES_RULES`); ``"max"`` when the
        manifest has no ``detection.series_rule``.
    region_volume_scale_ml : float
        Volume scale (mL) of the region evidence
        ``mean probability * (1 - exp(-volume / scale))``.
    min_region_extent_mm : float
        A region must span at least this along the slice normal (mm).
    min_region_ml : dict of str to float
        Smallest region (mL) reported for a subtype; subtypes not named
        have no minimum beyond ``min_volume_ml``. The extra-axial subtypes
        of the shipped model start at 1 mL: it never saw a smaller epidural
        or subdural collection in training (2-80 mL), and a dense transverse
        sinus or inner-table partial volume reads as one.
    blood_rules : BloodRuleSettings or None
        The blood plausibility rules (:mod:`dicom_node.imaging.blood_rules`);
        None (no ``detection.blood_rules``) runs none.
    region_classifier : RegionClassifier or None
        ``detection.region_classifier``: with it, a region's evidence is the
        classifier's P(blood) from its figures
        (:mod:`dicom_node.imaging.region_features`) instead of
        ``mean probability * (1 - exp(-volume / scale))``; None keeps that.

    References
    ----------
    The manifest keys are documented in ``docs/ich-model.md``.
    """

    path: Path
    manifest: dict
    spec: IchInputSpec
    threshold: float
    min_volume_ml: float
    min_component_ml: float
    subtype_assignment: str = "voxel"
    series_rule: str = "max"
    region_volume_scale_ml: float = 0.2
    min_region_extent_mm: float = 0.0
    blood_rules: BloodRuleSettings | None = None
    min_region_ml: dict = dataclasses_field(default_factory=dict)
    region_classifier: RegionClassifier | None = None

    @property
    def name(self) -> str:
        """str: Model name from the manifest."""
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        """str: Model version from the manifest."""
        return str(self.manifest["version"])

    @classmethod
    def load(cls, path: Path) -> IchModelPackage:
        """Read a package's manifest and verify its weights.

        Parameters
        ----------
        path : Path
            Package folder with ``manifest.json`` and ``model.keras``.

        Returns
        -------
        IchModelPackage

        Raises
        ------
        ModelPackageError
            If a file is missing, the manifest is incomplete, its labels are
            not :data:`ICH_SUBTYPES` in order, or the sha256 of
            ``model.keras`` differs from ``weights_sha256``.
        """
        path = Path(path)
        manifest_path = path / MANIFEST_NAME
        weights = path / WEIGHTS_NAME
        if not manifest_path.is_file() or not weights.is_file():
            raise ModelPackageError(
                f"{path}: a model package needs {MANIFEST_NAME} and {WEIGHTS_NAME}"
            )
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            spec = IchInputSpec.from_manifest(manifest["input"])
            labels = [entry["finding"] for entry in manifest["labels"]]
            detection = manifest["detection"]
            expected = manifest["weights_sha256"]
            package = cls(
                path=path,
                manifest=manifest,
                spec=spec,
                threshold=float(detection["any_ich_threshold"]),
                min_volume_ml=float(detection["min_volume_ml"]),
                min_component_ml=float(detection["min_component_ml"]),
                subtype_assignment=str(detection.get("subtype_assignment", "voxel")),
                series_rule=str(detection.get("series_rule", "max")),
                region_volume_scale_ml=float(detection.get("region_volume_scale_ml", 0.2)),
                min_region_extent_mm=float(detection.get("min_region_extent_mm", 0.0)),
                blood_rules=BloodRuleSettings.from_manifest(detection.get("blood_rules")),
                min_region_ml={
                    str(k): float(v) for k, v in detection.get("min_region_ml", {}).items()
                },
                region_classifier=RegionClassifier.from_manifest(
                    detection.get("region_classifier")
                ),
            )
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ModelPackageError(
                f"{manifest_path}: unreadable or incomplete manifest: {err}"
            ) from err
        if package.subtype_assignment not in SUBTYPE_ASSIGNMENTS:
            raise ModelPackageError(
                f"{manifest_path}: detection.subtype_assignment "
                f"{package.subtype_assignment!r} is not one of {SUBTYPE_ASSIGNMENTS}"
            )
        if package.series_rule not in SERIES_RULES:
            raise ModelPackageError(
                f"{manifest_path}: detection.series_rule {package.series_rule!r} is not one "
                f"of {SERIES_RULES}"
            )
        if set(package.min_region_ml) - set(ICH_SUBTYPES):
            raise ModelPackageError(
                f"{manifest_path}: detection.min_region_ml names unknown subtypes "
                f"{sorted(set(package.min_region_ml) - set(ICH_SUBTYPES))}"
            )
        if labels != list(ICH_SUBTYPES):
            raise ModelPackageError(
                f"{manifest_path}: labels {labels} are not {list(ICH_SUBTYPES)} in order"
            )
        actual = sha256_file(weights)
        if actual != expected:
            raise ModelPackageError(
                f"{weights}: sha256 {actual} does not match the manifest's {expected}; "
                "the weights were changed without a new version"
            )
        return package


def _configure_threads() -> None:
    """Give the framework every core this process may use (TensorFlow backend)."""
    keras = import_keras()

    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(cores or 1))
        tf.config.threading.set_inter_op_parallelism_threads(2)
    except RuntimeError:  # already initialised in this process
        pass


def load_keras_model(path: Path):
    """Load a ``.keras`` file without compiling it.

    Parameters
    ----------
    path : Path
        The ``model.keras`` file.

    Returns
    -------
    keras.Model

    Raises
    ------
    ModelPackageError
        If Keras cannot read the file.
    """
    # TensorFlow's native start-up lines stay off stderr (keras_runtime).
    _configure_threads()
    keras = import_keras()

    from dicom_node.pipelines import ich_layers  # noqa: F401  (registers the custom objects)

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as err:  # Keras raises ValueError, OSError, zipfile errors...
        raise ModelPackageError(f"{path}: Keras cannot load the model: {err}") from err


@dataclass(frozen=True, eq=False)
class IchPrediction:
    """Model output for one series on the model grid.

    Parameters
    ----------
    probabilities : numpy.ndarray
        float32 array (model slices, size, size, classes), softmax per pixel,
        class 0 background then :data:`ICH_SUBTYPES`. One model slice per
        slab of ``slabs`` (per source slice when ``slabs`` is None).
    grid : InPlaneGrid
        Map between the source slices and the model grid.
    slabs : SlabGrid or None
        How source slices were grouped into model slices; None means one
        model slice per source slice.
    """

    probabilities: np.ndarray
    grid: InPlaneGrid
    slabs: SlabGrid | None = None

    def slab_of_slice(self, slices: int) -> np.ndarray:
        """Model slice of each source slice.

        Parameters
        ----------
        slices : int
            Number of source slices.

        Returns
        -------
        numpy.ndarray
            int array (slices,).
        """
        if self.slabs is None:
            return np.arange(slices)
        return self.slabs.slab_of_slice

    def slice_scores(self, channel: int | None = None) -> np.ndarray:
        """Largest 3x3-mean probability in each slice, of a class or of "not background".

        Parameters
        ----------
        channel : int or None
            Class index (1-5); None means any hemorrhage (1 - background).

        Returns
        -------
        numpy.ndarray
            float32 array (slices,), values in [0, 1].
        """
        if channel is None:
            p = 1.0 - self.probabilities[..., 0]
        else:
            p = self.probabilities[..., channel]
        return np.array(
            [cv2.blur(np.ascontiguousarray(s), (3, 3)).max() for s in p], dtype=np.float32
        )

    def smoothed_max(self, channel: int | None = None) -> float:
        """Largest 3x3-mean probability of a class, or of "not background", in the series.

        Parameters
        ----------
        channel : int or None
            As :meth:`slice_scores`.

        Returns
        -------
        float
            In [0, 1]; 0.0 for a series without slices.
        """
        scores = self.slice_scores(channel)
        return float(scores.max()) if scores.size else 0.0


def predict_model_grid(model, windowed: np.ndarray, spec: IchInputSpec) -> np.ndarray:
    """Run the network on windowed model-grid slices.

    Parameters
    ----------
    model : keras.Model
        The ResUNet.
    windowed : numpy.ndarray
        uint8 array (slices, size, size, windows) from
        :func:`~dicom_node.imaging.ich_input.window_channels`.
    spec : IchInputSpec
        Model input specification.

    Returns
    -------
    numpy.ndarray
        float32 array (slices, size, size, classes), softmax per pixel.
        The model is called on batches of exactly :data:`BATCH_SLICES`
        slices; the last batch is padded with zeros and the padding dropped.
    """
    slices = windowed.shape[0]
    out = np.empty((slices, spec.size, spec.size, ICH_CLASSES), dtype=np.float32)
    for start in range(0, slices, BATCH_SLICES):
        indices = np.arange(start, min(start + BATCH_SLICES, slices))
        batch = stack_context(windowed, spec, indices)
        if len(indices) < BATCH_SLICES:
            pad = np.zeros((BATCH_SLICES - len(indices), *batch.shape[1:]), dtype=np.float32)
            batch = np.concatenate([batch, pad])
        probabilities = np.asarray(model.predict_on_batch(batch), dtype=np.float32)
        out[indices] = probabilities[: len(indices)]
    return out


def predict_volume(
    model, volume: CTVolume, spec: IchInputSpec, slabs: SlabGrid | None = None
) -> IchPrediction:
    """Resample a volume (or its slabs) to the model grid and predict.

    Parameters
    ----------
    model : keras.Model
        The ResUNet.
    volume : CTVolume
        Series in HU, (slices, rows, columns); values below :data:`AIR_HU`
        (scanner padding) are raised to it first.
    spec : IchInputSpec
        Model input specification.
    slabs : SlabGrid or None
        Slabs to predict on; None builds them from
        ``spec.slab_thickness_mm`` (:func:`~dicom_node.imaging.ich_input.slab_grid`).

    Returns
    -------
    IchPrediction
        Probabilities (slabs, size, size, classes) on the model grid, one
        model slice per slab (per source slice for thick-slice series), with
        the grid and slabs that map them back.

    Raises
    ------
    PipelineError
        If the series shows no head.
    """
    if slabs is None:
        slabs = slab_grid(volume.hu, volume.slice_positions_mm, spec.slab_thickness_mm)
    try:
        grid = head_grid(slabs.hu, volume.pixel_spacing_mm, spec)
    except ValueError as err:
        raise PipelineError(f"cannot place the model grid: {err}") from err
    hu_model = to_model_grid(np.maximum(slabs.hu, AIR_HU), grid)
    windowed = window_channels(hu_model, spec)
    return IchPrediction(
        probabilities=predict_model_grid(model, windowed, spec),
        grid=grid,
        slabs=None if slabs.is_identity else slabs,
    )


def slab_voxel_volume_ml(volume: CTVolume, slab_of_slice: np.ndarray) -> np.ndarray:
    """Volume (mL) of one voxel of each slab: the sum over its source slices.

    Parameters
    ----------
    volume : CTVolume
        The series.
    slab_of_slice : numpy.ndarray
        int (slices,): slab of each source slice.

    Returns
    -------
    numpy.ndarray
        float64 (slabs,).
    """
    return np.bincount(slab_of_slice, weights=volume.voxel_volume_ml)


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
