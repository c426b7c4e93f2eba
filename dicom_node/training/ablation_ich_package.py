"""Turn an ablation into a model package: the region-rule package and its operating point.

Split out of :mod:`dicom_node.training.ablation_ich`, which re-exports every
name defined here: :func:`derive_region_package` writes a package with a
package's weights unchanged and the region series rule, slabs and blood
rules under a provisional threshold; :func:`set_operating_point` stores the
operating point that an ablation on the validation seeds chose
(:func:`dicom_node.training.ablation_ich_report.operating_point`) in its
manifest. Both rewrite ``MODEL_CARD.md``.

References
----------
The manifest keys are documented in ``docs/ich-model.md``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from dicom_node.imaging.blood_rules import BloodRuleSettings


def derive_region_package(
    source_dir: Path,
    output_dir: Path,
    version: str,
    *,
    slab_thickness_mm: float = 5.0,
    blood_rules: BloodRuleSettings | None = None,
    add_blood_rules: Sequence[str] = (),
    note: str = "",
) -> Path:
    """Write a package with a package's weights and the region rule, slabs and blood rules.

    The weights file is copied unchanged (same sha256); the manifest gets
    ``input.slab_thickness_mm``, ``detection.series_rule = "region"``, the
    region parameters, ``detection.blood_rules`` and a provisional threshold
    of 0.5, to be replaced by :func:`set_operating_point` on a validation set.
    A source that already uses the region rule keeps its region parameters
    and blood rule settings (``blood_rules`` None); ``add_blood_rules`` then
    enables more rules with their default parameters.

    Parameters
    ----------
    source_dir : Path
        The package whose weights are used.
    output_dir : Path
        The new package folder (created).
    version : str
        Its version.
    slab_thickness_mm : float
        Slab thickness for thin-slice series (mm).
    blood_rules : BloodRuleSettings or None
        Blood rules; when None, the source's (if it uses the region rule) or
        the defaults.
    add_blood_rules : sequence of str
        Rules of :data:`~dicom_node.imaging.blood_rules.BLOOD_RULES` enabled
        on top.
    note : str
        Appended to the manifest's ``notes``.

    Returns
    -------
    Path
        ``output_dir``.

    Raises
    ------
    ModelPackageError
        If the source package fails verification.
    ValueError
        If a rule of ``add_blood_rules`` is unknown.
    """
    import shutil

    from dicom_node.pipelines.ich import MANIFEST_NAME, WEIGHTS_NAME, IchModelPackage
    from dicom_node.training.model_card import write_model_card

    source = IchModelPackage.load(Path(source_dir))
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source.path / WEIGHTS_NAME, output_dir / WEIGHTS_NAME)
    manifest = json.loads(json.dumps(source.manifest))
    manifest["version"] = version
    manifest["input"]["slab_thickness_mm"] = float(slab_thickness_mm)
    detection = manifest["detection"]
    kept = {}
    if detection.get("series_rule") == "region":
        kept = {
            k: detection[k]
            for k in ("region_volume_scale_ml", "min_region_extent_mm", "min_region_ml")
            if k in detection
        }
        if blood_rules is None:
            blood_rules = BloodRuleSettings.from_manifest(detection.get("blood_rules"))
    if add_blood_rules:
        base = blood_rules or BloodRuleSettings(dural_max_thickness_mm=4.0)
        enabled = tuple(base.enabled) + tuple(r for r in add_blood_rules if r not in base.enabled)
        blood_rules = dataclasses.replace(base, enabled=enabled)
    detection.update(
        {
            "any_ich_score": "largest region evidence: mean blood probability x "
            "(1 - exp(-volume / region_volume_scale_ml)) over connected blood "
            "regions that pass the blood rules",
            "series_rule": "region",
            "any_ich_threshold": 0.5,
            "threshold_rule": "provisional; set by dicom-node evaluate ich-rules --set-threshold",
            "region_volume_scale_ml": 0.2,
            "min_region_extent_mm": 2.0,
            "min_region_ml": {"epidural hemorrhage": 1.0, "subdural hemorrhage": 1.0},
            "blood_rules": (
                blood_rules or BloodRuleSettings(dural_max_thickness_mm=4.0)
            ).to_manifest(),
            "subtype_assignment": "region",
            **kept,
        }
    )
    detection.pop("validation", None)
    manifest.setdefault("notes", [])
    manifest["notes"].append(
        f"{version} uses the weights of {source.version} unchanged (same sha256) with the "
        "region series rule, 5 mm slabs for thin-slice series and the blood plausibility "
        "rules." + (f" {note}" if note else "")
    )
    (output_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    write_model_card(output_dir)
    return output_dir


def set_operating_point(model_dir: Path, report: dict) -> dict:
    """Store the operating point of an ablation run on validation seeds in the manifest.

    Parameters
    ----------
    model_dir : Path
        Model package folder (its manifest is rewritten; weights untouched).
    report : dict
        From :func:`evaluate_blood_rules` on validation seeds.

    Returns
    -------
    dict
        The new ``detection`` entry.

    Raises
    ------
    ValueError
        If the report was made on held-out seeds (900000 and above).
    """
    from dicom_node.pipelines.ich import MANIFEST_NAME
    from dicom_node.training.model_card import write_model_card

    if report["seeds"][0] >= 900_000:
        raise ValueError("the operating point must be chosen on validation seeds, not held-out")
    path = Path(model_dir) / MANIFEST_NAME
    manifest = json.loads(path.read_text(encoding="utf-8"))
    point = report["operating_point"]
    detection = manifest["detection"]
    detection["any_ich_threshold"] = point["threshold"]
    mimics = "with" if report["mimics"] else "without"
    detection["threshold_rule"] = (
        "lowest region-score threshold with specificity >= target on the validation cases "
        f"({mimics} hard mimics, full base resolution)"
        if point.get("rule", "specificity") == "specificity"
        else "specificity target not reachable without dropping sensitivity below its floor: "
        "highest region-score threshold that keeps the sensitivity floor on the validation "
        f"cases ({mimics} hard mimics, full base resolution)"
    )
    detection["validation"] = {
        "cases": report["cases"],
        "seeds": report["seeds"],
        "mimics": report["mimics"],
        "sensitivity": point["sensitivity"],
        "specificity": point["specificity"],
        "target_met": point.get("target_met"),
    }
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    write_model_card(Path(model_dir))
    return detection
