"""Write ``MODEL_CARD.md`` of a model package from its manifest and evaluation.

The card is generated, never hand-edited, so that every figure in it is the
one the training and evaluation commands measured.

References
----------
Mitchell M, et al. Model Cards for Model Reporting. FAT* 2019.
"""

from __future__ import annotations

import json
from pathlib import Path

#: Evaluation results inside a package, written by ``dicom-node evaluate ich``.
EVALUATION_NAME = "evaluation.json"
#: The last ``dicom-node evaluate ich --mimics`` report (hard mimics in every case).
EVALUATION_MIMICS_NAME = "evaluation-mimics.json"


#: How the card states ``detection.subtype_assignment`` (pipelines/ich.py).
_ASSIGNMENT_TEXT = {
    "voxel": "Each blood voxel takes its most probable subtype.",
    "region": "Each connected blood region takes the subtype with the largest probability "
    "summed over the region.",
}


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "not measured"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _evaluation_section(evaluation: dict | None) -> list[str]:
    if not evaluation:
        return ["Not evaluated yet: run `dicom-node evaluate ich` (see below).", ""]
    s = evaluation["summary"]
    lines = [
        f"Held-out synthetic set: {s['cases']} series ({s['positive_cases']} with hemorrhage, "
        f"{s['negative_cases']} without), seeds {evaluation['seeds'][0]}-{evaluation['seeds'][1]}, "
        "never used in training or threshold selection, generated at the full 512 x 512 "
        "resolution and run through the same code as the node's `ich` pipeline.",
        "",
        *(
            [
                f"Hard mimics of hemorrhage (physiologic calcifications, dense falx or tentorium, "
                f"beam hardening, partial-volume bone, motion) in every case: "
                f"{'yes' if evaluation.get('mimics') else 'no'}; scanner variety (kernel, noise, "
                f"field of view): {'yes' if evaluation.get('scanner_variety') else 'no'}.",
                "",
            ]
            if "mimics" in evaluation
            else []
        ),
        "| measure | result | target (issue 3) |",
        "|---|---|---|",
        f"| any-ICH AUC (series) | {_fmt(s['any_ich_auc'], 3)} | >= 0.95 |",
        f"| sensitivity (series reported positive) | {_fmt(s['sensitivity'])} "
        f"({s['true_positives']}/{s['positive_cases']}) | - |",
        f"| specificity (series reported negative) | {_fmt(s['specificity'])} "
        f"({s['true_negatives']}/{s['negative_cases']}) | - |",
        f"| mean Dice over the five subtypes | {_fmt(s['mean_subtype_dice'], 3)} | >= 0.7 |",
        f"| any-ICH Dice (union of subtypes) | {_fmt(s['any_ich_dice_median'], 3)} (median) | - |",
        f"| total volume error | {_fmt(s['volume_error_ml_mean'])} mL mean signed, "
        f"{_fmt(s['volume_abs_error_ml_median'])} mL median absolute | - |",
        f"| slice-level AUC | {_fmt(s.get('slice_auc'), 3)} | - |",
        "",
        "| subtype | cases with it | Dice mean | Dice median | detected (subtype present) |",
        "|---|---|---|---|---|",
    ]
    for name, row in evaluation["per_subtype"].items():
        lines.append(
            f"| {name} | {row['cases']} | {_fmt(row['dice_mean'], 3)} | "
            f"{_fmt(row['dice_median'], 3)} | {_fmt(row['detected_fraction'])} |"
        )
    real = evaluation.get("real_head")
    if real:
        lines += [
            "",
            f"Real unmodified GE head CT (no hemorrhage): any-ICH probability "
            f"{_fmt(real['any_ich_probability'], 3)}, called "
            f"{'positive' if real['positive'] else 'negative'}; "
            f"reported volume {_fmt(real['total_volume_ml'])} mL.",
        ]
    lines += ["", f"Measured with: `{evaluation['command']}`", ""]
    return lines


def _validation_text(validation: dict | None) -> str:
    """``", N validation cases: sensitivity x, specificity y"``, or nothing without one."""
    if not validation:
        return ""
    mimics = validation.get("mimics")
    kind = "" if mimics is None else (" with hard mimics" if mimics else " without mimics")
    return (
        f", {validation['cases']} validation cases{kind}: sensitivity "
        f"{_fmt(validation['sensitivity'])}, specificity "
        f"{_fmt(validation['specificity'])}"
    )


def _subtype_text(detection: dict) -> str:
    """How a subtype comes to be reported, for the series rule in ``detection``."""
    if detection.get("series_rule") == "region":
        least = ", ".join(
            f"{name} {ml:g} mL" for name, ml in detection.get("min_region_ml", {}).items()
        )
        return (
            "A subtype is reported when the series is positive and a region of it holds "
            f">= {detection['min_volume_ml']} mL after the blood rules"
            + (f" (at least {least})" if least else "")
            + ". "
        )
    return (
        f"A subtype is reported when the series is positive, its own smoothed probability "
        f"reaches the threshold and its mask holds >= {detection['min_volume_ml']} mL. "
    )


def _region_lines(manifest: dict) -> list[str]:
    """Card lines for the input checks, slabs and blood rules of a region-rule package."""
    detection = manifest["detection"]
    if detection.get("series_rule") != "region":
        return []
    rules = detection.get("blood_rules", {})
    slab = manifest["input"].get("slab_thickness_mm")
    return [
        "- Before the model, the node checks that the series is a plain human head CT in HU "
        "(a skull that closes round brain and CSF, air outside, no zero-filled background, no "
        'phantom, no contrast bolus) and otherwise answers "not analysable: <reason>" '
        "(`dicom_node.imaging.head_ct`).",
        *(
            [
                f"- Series thinner than {slab:g} mm are averaged into {slab:g} mm slabs for the "
                "model; masks return to every source frame."
            ]
            if slab
            else []
        ),
        "- After the model, blood rules " + ", ".join(rules.get("enabled", [])) + " remove "
        f"predicted blood outside the cranial cavity, outside {rules.get('min_hu', 0):g}-"
        f"{rules.get('max_hu', 0):g} HU, on calcifications (>= "
        f"{rules.get('calcification_min_hu', 0):g} HU foci deeper than "
        f"{rules.get('calcification_depth_mm', 0):g} mm) and on thin dural lines (falx, "
        f"tentorium, <= {rules.get('line_max_thickness_mm', 0):g} mm) "
        "(`dicom_node.imaging.blood_rules`). Each region must span >= "
        f"{detection.get('min_region_extent_mm', 0):g} mm along the slice axis.",
    ]


def write_model_card(package_dir: Path) -> Path:
    """Render ``MODEL_CARD.md`` from ``manifest.json`` and ``evaluation.json``.

    Parameters
    ----------
    package_dir : Path
        Model package folder.

    Returns
    -------
    Path
        The card written.

    Raises
    ------
    FileNotFoundError
        If the manifest is missing.
    ValueError
        If ``manifest.json`` or ``evaluation.json`` is not valid JSON.
    KeyError
        If the manifest lacks an entry that ``dicom-node train ich`` writes.
    """
    package_dir = Path(package_dir)
    manifest = json.loads((package_dir / "manifest.json").read_text(encoding="utf-8"))
    evaluation_path = package_dir / EVALUATION_NAME
    evaluation = (
        json.loads(evaluation_path.read_text(encoding="utf-8"))
        if evaluation_path.is_file()
        else None
    )
    mimics_path = package_dir / EVALUATION_MIMICS_NAME
    evaluation_mimics = (
        json.loads(mimics_path.read_text(encoding="utf-8")) if mimics_path.is_file() else None
    )
    data = manifest["training"]["data"]
    detection = manifest["detection"]
    spec = manifest["input"]
    windows = ", ".join(f"{w['center_hu']:g}/{w['width_hu']:g}" for w in spec["windows"])
    lines = [
        f"# Model card: {manifest['name']} {manifest['version']}",
        "",
        "**Not for clinical use.** This model was trained and evaluated only on synthetic "
        "hemorrhages drawn into one real head CT. Its accuracy on real patients has not been "
        "measured. It exists to exercise the node end to end and as a starting point for "
        "training on real labelled data (`dicom-node train ich --dataset ...`).",
        "",
        "## Model",
        f"- {manifest['architecture']['type']}, filters {manifest['architecture']['filters']}, "
        f"{manifest['architecture']['parameters']:,} parameters; Keras "
        f"{manifest['framework']['keras']} (trained on the {manifest['framework']['backend']} "
        "backend; the `.keras` file uses only Keras layers and ops).",
        f"- Input: each source slice resampled in plane to {spec['pixel_spacing_mm']} mm pixels "
        f"on a {spec['size']} x {spec['size']} grid centred on the head, windows {windows} HU "
        f"(centre/width), with {spec['context_slices']} neighbouring source slice(s) on each "
        "side (2.5D). Slices are never resampled along the slice axis; masks return to the "
        "source frames by the inverse in-plane map.",
        "- Output: softmax per pixel over background and five subtypes: "
        + ", ".join(label["finding"] for label in manifest["labels"])
        + ".",
        f"- Detection: any-ICH score = {detection['any_ich_score']}; positive at >= "
        f"{detection['any_ich_threshold']} ({detection['threshold_rule']}"
        + _validation_text(detection.get("validation"))
        + "). "
        + _subtype_text(detection)
        + _ASSIGNMENT_TEXT[detection.get("subtype_assignment", "voxel")],
        *_region_lines(manifest),
        f"- Weights sha256: `{manifest['weights_sha256']}` (checked by the node before use).",
        "",
        "## Intended use",
        "Research, demonstration and integration testing of a DICOM AI node: triage-style "
        "detection and 5-subtype segmentation of acute intracranial hemorrhage on axial "
        "non-contrast head CT. Not a medical device; not for diagnosis or triage of patients.",
        "",
        "## Training data",
        f"- {data['kind']}: {data['cases']} synthetic series ({data['negative_cases']} without "
        f"hemorrhage, {data['multi_lesion_cases']} with several lesions), seeds "
        f"{data['seeds'][0]}-{data['seeds'][1]}.",
        f"- Base anatomy: {data['base_series']['source']}, {data['base_series']['slices']} "
        f"slices, block-averaged in plane by {data['base_series']['in_plane_downsample']} for "
        "speed; random affine and elastic deformation, intensity and noise changes per case.",
        "- Lesions per subtype: "
        + ", ".join(f"{k} {v}" for k, v in data["lesions_per_subtype"].items())
        + ".",
        "- Lesion volumes (mL, label mask): "
        + ", ".join(f"{k} {v[0]}-{v[1]}" for k, v in data["lesion_volume_ml_range"].items() if v)
        + ".",
        f"- Generator: `{data['generator']}` (epidural lens, subdural crescent, subarachnoid "
        "sulcal/cisternal blood, intraparenchymal irregular lesion with optional edema, "
        "dependent intraventricular blood; partial volume over the slice thickness; noise "
        "matched to the scan).",
        *(
            [
                f"- Hard mimics of hemorrhage (calcifications at their usual sites, dense falx and "
                f"tentorium, beam hardening, partial-volume bone, motion) in "
                f"{data['cases_with_mimics']} of the {data['cases']} training cases; scanner "
                "variety "
                "(kernel, noise, field of view): "
                f"{'yes' if data.get('scanner_variety') else 'no'}; "
                f"validation cases with mimics: "
                f"{'yes' if data.get('validation_mimics') else 'no'}."
            ]
            if data.get("cases_with_mimics")
            else []
        ),
        *(
            [
                f"- Fine-tuned: training started from the weights of "
                f"`{manifest['training']['config']['init_from']}`, not from a random "
                "initialisation (see Notes for the chain)."
            ]
            if manifest["training"].get("config", {}).get("init_from")
            else []
        ),
        f"- Extra real datasets: {', '.join(data['extra_datasets']) or 'none'}.",
        f"- Training time: {manifest['training']['seconds']:.0f} s on "
        f"{manifest['training']['machine']} (config: {manifest['training']['config']}).",
        "",
        "## Evaluation",
        *_evaluation_section(evaluation),
        *(
            [
                "### Held-out set with hard mimics in every case",
                "",
                *_evaluation_section(evaluation_mimics),
            ]
            if evaluation_mimics
            else []
        ),
        *(
            ["## Notes", *(f"- {note}" for note in manifest.get("notes", [])), ""]
            if manifest.get("notes")
            else []
        ),
        "## Limits",
        "- One real anatomy. Every training and evaluation series is the same head, deformed; "
        "the held-out set tests new deformations and lesion placements, not new patients, "
        "scanners or reconstruction kernels. Expect far worse results on real scans.",
        "- Synthetic lesions are idealised (uniform density plus noise, simple shapes); real "
        "hemorrhage has mixed density, clot retraction, beam-hardening and motion artefacts.",
        "- 2 mm in-plane model pixels: thin subarachnoid blood is partly lost to partial "
        "volume; volumes below about 0.5 mL are unreliable.",
        (
            "- Calcification and dense-dura mimics were drawn synthetically; no tumour, contrast, "
            "post-operative or pediatric case was seen in training: such findings may be called "
            "hemorrhage."
            if data.get("cases_with_mimics")
            else "- No calcification, tumour, contrast, post-operative or pediatric cases were "
            "seen in training: such findings may be called hemorrhage."
        ),
        "",
        "## Reproduce",
        *(
            ["The weights were fine-tuned in stages; the commands are in the Notes above.", ""]
            if manifest["training"].get("config", {}).get("init_from")
            else []
        ),
        "```",
        *(
            []
            if manifest["training"].get("config", {}).get("init_from")
            else [
                "dicom-node train ich --base ../shared/data/head-ct-ge --out dicom_node/models/ich/"
                f"{manifest['version']}"
            ]
        ),
        *(
            [
                f"dicom-node train ich-regions --from dicom_node/models/ich/"
                f"{detection['region_classifier'].get('derived_from', '<source>')} "
                f"--version {manifest['version']}"
            ]
            if detection.get("region_classifier")
            else []
        ),
        *(
            [
                "dicom-node evaluate ich-rules --model "
                f"dicom_node/models/ich/{manifest['version']} "
                "--cases 60 --seed-start 200000 --mimics --set-threshold"
            ]
            if detection.get("series_rule") == "region" and not detection.get("region_classifier")
            else []
        ),
        *(
            [
                "dicom-node evaluate ich-rules --model "
                f"dicom_node/models/ich/{manifest['version']} "
                "--cases 120 --seed-start 900000 --mimics --report docs/ich-rules"
            ]
            if detection.get("series_rule") == "region"
            else []
        ),
        f"dicom-node evaluate ich --model dicom_node/models/ich/{manifest['version']} --cases 120",
        *(
            [
                f"dicom-node evaluate ich --model dicom_node/models/ich/{manifest['version']} "
                "--cases 120 --mimics --report docs/ich-evaluation-mimics"
            ]
            if evaluation_mimics
            else []
        ),
        "```",
        "",
    ]
    card = package_dir / "MODEL_CARD.md"
    card.write_text("\n".join(lines), encoding="utf-8")
    return card
