"""The ICH model package: the shipped packages, the manifest and the weights' sha256.

A model package is a folder ``dicom_node/models/ich/<version>/`` with
``model.keras``, ``manifest.json`` and ``MODEL_CARD.md``.
:meth:`IchModelPackage.load` reads the manifest (input specification,
operating threshold, region and blood-rule settings, the region classifier)
and checks the weights against the manifest's ``weights_sha256`` before
anything loads them. Split out of :mod:`dicom_node.pipelines.ich`, which
re-exports every name defined here.

References
----------
The manifest keys are documented in ``docs/ich-model.md``; FIPS 180-4
(SHA-256).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from dataclasses import field as dataclasses_field
from pathlib import Path

from dicom_node.errors import ModelPackageError
from dicom_node.imaging.blood_rules import BloodRuleSettings
from dicom_node.imaging.ich_input import ICH_SUBTYPES, IchInputSpec
from dicom_node.imaging.region_features import RegionClassifier

#: File names inside a model package.
MANIFEST_NAME = "manifest.json"
WEIGHTS_NAME = "model.keras"
MODEL_CARD_NAME = "MODEL_CARD.md"
#: Values of the manifest's ``detection.subtype_assignment``.
SUBTYPE_ASSIGNMENTS = ("voxel", "region")
#: Values of the manifest's ``detection.series_rule``: ``"max"`` (the largest
#: 3x3-smoothed blood probability of any slice; packages before 1.1.0) or
#: ``"region"`` (the evidence of the strongest connected blood region).
SERIES_RULES = ("max", "region")


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
        ``"voxel"`` or ``"region"`` (see :mod:`dicom_node.pipelines.ich`); ``"voxel"``
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
