"""Blood-rule ablation and operating-point choice for the ``ich`` pipeline.

``dicom-node evaluate ich-rules`` runs :func:`evaluate_blood_rules`: every
synthetic case is predicted once, then turned into findings under each rule
set: no rule, each rule of :data:`~dicom_node.imaging.blood_rules.BLOOD_RULES`
alone, and the package's own set. For each rule set it reports the any-ICH
AUC of the region score, sensitivity and specificity at the package
threshold, how many false alarms the rule removes and how many true bleeds it
costs against "no rule", mean subtype Dice, and the subtype confusions that a
radiologist notices first (a subdural or epidural reported where the case has
none).

:func:`operating_point` picks the threshold on a validation set: the lowest
threshold whose specificity reaches the target, which gives the highest
sensitivity at that specificity.

References
----------
Hanley JA, McNeil BJ. Radiology 1982;143:29-36 (AUC); Meyes R, et al.
"Ablation studies in artificial neural networks" (arXiv 1901.08644) for the
one-component-at-a-time design; Dice LR. Ecology 1945;26:297-302.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dicom_node.imaging.blood_rules import BLOOD_RULES, BloodRuleSettings
from dicom_node.imaging.ich_input import ICH_SUBTYPES, subtype_label
from dicom_node.imaging.masks import dice_coefficient
from dicom_node.training.evaluate_ich import evaluation_plan, roc_auc

logger = logging.getLogger(__name__)

#: First seed of the validation range (the same range training uses for its threshold).
VALIDATION_SEED_START = 200_000


def rule_sets(package_rules: BloodRuleSettings | None) -> dict[str, BloodRuleSettings]:
    """The rule sets compared: none, each rule alone, and all (the package's settings).

    Parameters
    ----------
    package_rules : BloodRuleSettings or None
        The package's parameters; defaults when None.

    Returns
    -------
    dict of str to BloodRuleSettings
        ``"none"``, one entry per rule name, ``"all"`` (the package's enabled
        rules, which the node runs, and whose operating point the report gives)
        and, when the package leaves a rule off, ``"every rule"`` (all of
        :data:`BLOOD_RULES`).
    """
    base = package_rules or BloodRuleSettings()
    out = {"none": dataclasses.replace(base, enabled=())}
    for rule in BLOOD_RULES:
        out[rule] = dataclasses.replace(base, enabled=(rule,))
    out["all"] = base
    if set(base.enabled) != set(BLOOD_RULES):
        out["every rule"] = dataclasses.replace(base, enabled=BLOOD_RULES)
    return out


def operating_point(
    scores: Sequence[float],
    truth: Sequence[bool],
    min_specificity: float = 0.95,
    min_sensitivity: float = 0.0,
) -> dict:
    """Lowest threshold whose specificity reaches ``min_specificity``, unless it costs sensitivity.

    When that threshold leaves the sensitivity below ``min_sensitivity``, the
    target cannot be met on these cases, and the point falls back to the
    highest threshold that keeps the sensitivity at ``min_sensitivity`` (the
    best specificity a triage tool may buy without missing more bleeds); the
    result says so in ``target_met``.

    Parameters
    ----------
    scores : sequence of float
        Series scores.
    truth : sequence of bool
        True for a case with blood.
    min_specificity : float
        Target specificity in [0, 1].
    min_sensitivity : float
        Sensitivity floor in [0, 1]; 0 never falls back.

    Returns
    -------
    dict
        ``threshold`` (midway between the two scores it separates),
        ``sensitivity``, ``specificity``, ``target_met`` (both targets reached)
        and ``rule`` (``"specificity"`` or ``"sensitivity floor"``).

    Raises
    ------
    ValueError
        If there is no positive or no negative case.
    """
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(truth, dtype=bool)
    if t.all() or (~t).all():
        raise ValueError("an operating point needs positive and negative cases")

    def between(below: float) -> float:
        above = s[s > below]
        return (
            float(0.5 * (below + above.min())) if above.size else float(np.nextafter(below, np.inf))
        )

    negatives = np.sort(s[~t])
    allowed = int(np.floor((1.0 - min_specificity) * negatives.size + 1e-9))
    # The threshold must lie above all but `allowed` negatives.
    threshold = between(negatives[negatives.size - allowed - 1])
    rule = "specificity"
    if (s[t] >= threshold).mean() < min_sensitivity:
        positives = np.sort(s[t])
        may_miss = int(np.floor((1.0 - min_sensitivity) * positives.size + 1e-9))
        # Highest threshold that still calls all but `may_miss` positives.
        lowest_kept = positives[may_miss]
        below = s[s < lowest_kept]
        threshold = float(0.5 * (below.max() + lowest_kept)) if below.size else float(lowest_kept)
        rule = "sensitivity floor"
    called = s >= threshold
    sensitivity = float(called[t].mean())
    specificity = float((~called[~t]).mean())
    return {
        "threshold": round(threshold, 4),
        "sensitivity": sensitivity,
        "specificity": specificity,
        "rule": rule,
        "target_met": bool(specificity >= min_specificity and sensitivity >= min_sensitivity),
    }


def _case_row(case, findings, details) -> dict:
    truth = case.labels
    predicted = np.zeros(truth.shape, dtype=np.uint8)
    reported = set()
    for finding in findings:
        if finding.present and finding.label in ICH_SUBTYPES:
            predicted[np.asarray(finding.mask, dtype=bool)] = subtype_label(finding.label)
            reported.add(finding.label)
    present = {lesion.subtype for lesion in case.lesions}
    dice: dict[str, float] = {}
    row = {
        "positive": bool((truth > 0).any()),
        "score": float(details.get("series_score", 0.0)),
        "called": bool(reported),
        "reported": sorted(reported),
        "dice": dice,
    }
    for subtype in ICH_SUBTYPES:
        value = subtype_label(subtype)
        if (truth == value).any():
            dice[subtype] = dice_coefficient(truth == value, predicted == value)
    row["spurious"] = sorted(reported - present)
    return row


def summarise_rule_set(rows: Sequence[dict], threshold: float) -> dict:
    """Figures of one rule set over the cases.

    Parameters
    ----------
    rows : sequence of dict
        One per case, as built by :func:`evaluate_blood_rules`.
    threshold : float
        The package threshold (for the record; ``called`` already used it).

    Returns
    -------
    dict
        ``auc``, ``sensitivity``, ``specificity``, ``false_alarms``,
        ``mean_subtype_dice``, ``spurious_subdural``, ``spurious_epidural``
        (cases reporting the subtype without having it).
    """
    truth = np.array([r["positive"] for r in rows])
    called = np.array([r["called"] for r in rows])
    dice: dict[str, list[float]] = {s: [] for s in ICH_SUBTYPES}
    for r in rows:
        for subtype, value in r["dice"].items():
            dice[subtype].append(value)
    means = [float(np.mean(v)) for v in dice.values() if v]
    return {
        "threshold": threshold,
        "auc": roc_auc([r["score"] for r in rows], truth.tolist()),
        "sensitivity": float(called[truth].mean()) if truth.any() else None,
        "specificity": float((~called[~truth]).mean()) if (~truth).any() else None,
        "false_alarms": int((called & ~truth).sum()),
        "missed": int((~called & truth).sum()),
        "mean_subtype_dice": float(np.mean(means)) if means else None,
        "dice": {s: (round(float(np.mean(v)), 4) if v else None) for s, v in dice.items()},
        "spurious_subdural": sum("subdural hemorrhage" in r["spurious"] for r in rows),
        "spurious_epidural": sum("epidural hemorrhage" in r["spurious"] for r in rows),
    }


def evaluate_blood_rules(
    model_dir: Path,
    base_dir: Path,
    *,
    cases: int = 60,
    seed_start: int = VALIDATION_SEED_START,
    mimics: bool = True,
    processes: int = 2,
    min_specificity: float = 0.95,
    min_sensitivity: float = 0.90,
) -> dict:
    """Run the ablation on synthetic cases and choose the operating point of the full set.

    Parameters
    ----------
    model_dir : Path
        Model package folder.
    base_dir : Path
        The real base head CT folder.
    cases : int
        Synthetic series (the balanced plan of
        :func:`~dicom_node.training.evaluate_ich.evaluation_plan`).
    seed_start : int
        First seed: 200000 (validation, used to choose the threshold) or
        900000 (held out).
    mimics : bool
        Insert hard mimics (calcifications, dense falx and tentorium, streaks,
        partial-volume bone, motion) into every case, when the generator
        offers them.
    processes : int
        Case-generating processes.
    min_specificity : float
        Target of :func:`operating_point`.
    min_sensitivity : float
        Sensitivity floor of :func:`operating_point`.

    Returns
    -------
    dict
        ``rule_sets`` (name -> :func:`summarise_rule_set`),
        ``operating_point`` (of ``"all"``), ``seeds``, ``mimics``,
        ``seconds``, ``not_analysable`` (cases refused by the input checks).

    Raises
    ------
    ModelPackageError
        If the package fails verification.
    """
    from dicom_node.errors import NotAnalysableError
    from dicom_node.pipelines.ich import (
        WEIGHTS_NAME,
        IchModelPackage,
        analyse_volume,
        load_keras_model,
    )
    from dicom_node.training.ich_data import iter_synthetic_cases, load_base_volume

    started = time.monotonic()
    package = IchModelPackage.load(Path(model_dir))
    model = load_keras_model(package.path / WEIGHTS_NAME)
    plan = evaluation_plan(cases, seed_start)
    base = load_base_volume(Path(base_dir))
    sets = rule_sets(package.blood_rules)
    rows: dict[str, list[dict]] = {name: [] for name in sets}
    refused = 0
    for n, case in enumerate(
        iter_synthetic_cases(base, plan, processes=max(1, processes), mimics=1.0 if mimics else 0.0)
    ):
        prediction = None
        for name, settings in sets.items():
            try:
                findings, details, prediction = analyse_volume(
                    model, case.volume, package, blood_rules=settings, prediction=prediction
                )
            except NotAnalysableError:
                findings, details = [], {"series_score": 0.0}
                if name == "none":
                    refused += 1
            rows[name].append(_case_row(case, findings, details))
        logger.info("case %d/%d seed %d done", n + 1, len(plan), case.seed)
    truth = [r["positive"] for r in rows["all"]]
    report = {
        "model": {"name": package.name, "version": package.version},
        "seeds": [plan[0][0], plan[-1][0]],
        "cases": len(plan),
        "mimics": bool(mimics),
        "not_analysable": refused,
        "rule_sets": {name: summarise_rule_set(r, package.threshold) for name, r in rows.items()},
        "operating_point": operating_point(
            [r["score"] for r in rows["all"]], truth, min_specificity, min_sensitivity
        ),
        "scores": {name: [round(r["score"], 4) for r in rs] for name, rs in rows.items()},
        "truth": truth,
        "seconds": round(time.monotonic() - started, 1),
    }
    return report


def markdown_table(report: dict) -> str:
    """The ablation as a Markdown table, one row per rule set.

    Parameters
    ----------
    report : dict
        From :func:`evaluate_blood_rules`.

    Returns
    -------
    str
    """
    none = report["rule_sets"]["none"]
    lines = [
        f"Synthetic series: {report['cases']} (seeds {report['seeds'][0]}-{report['seeds'][1]}),"
        f" hard mimics: {'yes' if report['mimics'] else 'no'}; threshold "
        f"{none['threshold']}.",
        "",
        "| rule set | AUC | sensitivity | specificity | false alarms removed | true bleeds "
        "lost | mean subtype Dice | spurious subdural | spurious epidural |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in report["rule_sets"].items():
        auc = "-" if row["auc"] is None else f"{row['auc']:.3f}"
        lines.append(
            f"| {name} | {auc} | {row['sensitivity']:.2f} | {row['specificity']:.2f} | "
            f"{none['false_alarms'] - row['false_alarms']} | {row['missed'] - none['missed']} | "
            f"{row['mean_subtype_dice']:.3f} | {row['spurious_subdural']} | "
            f"{row['spurious_epidural']} |"
        )
    point = report["operating_point"]
    how = (
        "at specificity >= target"
        if point.get("rule", "specificity") == "specificity"
        else "at the sensitivity floor (the specificity target costs too many bleeds)"
    )
    lines += [
        "",
        f"Operating point of `all` {how}: threshold "
        f"{point['threshold']}, sensitivity {point['sensitivity']:.2f}, specificity "
        f"{point['specificity']:.2f}; both targets met: "
        f"{'yes' if point.get('target_met') else 'no'}.",
    ]
    return "\n".join(lines) + "\n"


def write_report(report: dict, path: Path) -> None:
    """Write ``<path>.json`` and ``<path>.md``.

    Parameters
    ----------
    report : dict
        From :func:`evaluate_blood_rules`.
    path : Path
        Path without suffix.
    """
    path = Path(path)
    path.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    path.with_suffix(".md").write_text(markdown_table(report), encoding="utf-8")


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


def evaluate_rules_on_series(model_dir: Path, series_dirs: Sequence[Path]) -> dict:
    """Run each blood-rule set of :func:`rule_sets` on real DICOM series, one prediction each.

    For real series without labels (the GE head, the CQ500 study, the phantom):
    the series score, the findings and the volume each rule removed, so a rule's
    effect on real scans can be read next to its synthetic ablation.

    Parameters
    ----------
    model_dir : Path
        Model package folder.
    series_dirs : sequence of Path
        Folders with one DICOM series each, read as ``dicom-node analyze``
        reads them (:func:`dicom_node.analyze.read_dicom_folder`: sidecar
        documents such as ``reads.csv`` are skipped).

    Returns
    -------
    dict
        Folder name -> ``{"not_analysable": "gate: reason"}`` or rule-set name
        -> ``score``, ``candidate_ml``, ``removed_ml`` (rule -> mL),
        ``findings`` (subtype -> mL).

    Raises
    ------
    ModelPackageError
        If the package fails verification.
    SeriesLoadError
        If a folder does not hold exactly one loadable series (from
        ``read_dicom_folder`` or the volume).
    """
    from dicom_node.analyze import read_dicom_folder
    from dicom_node.errors import NotAnalysableError
    from dicom_node.pipelines.ich import (
        WEIGHTS_NAME,
        IchModelPackage,
        analyse_volume,
        load_keras_model,
    )
    from dicom_node.series.volume import load_ct_volume

    package = IchModelPackage.load(Path(model_dir))
    model = load_keras_model(package.path / WEIGHTS_NAME)
    result: dict = {}
    for folder in map(Path, series_dirs):
        volume = load_ct_volume(read_dicom_folder(folder).datasets)
        rows: dict = {}
        prediction = None
        for name, settings in rule_sets(package.blood_rules).items():
            try:
                findings, details, prediction = analyse_volume(
                    model, volume, package, blood_rules=settings, prediction=prediction
                )
            except NotAnalysableError as err:
                rows = {"not_analysable": f"{err.gate}: {err.reason}"}
                break
            rows[name] = {
                "score": round(details["series_score"], 4),
                "candidate_ml": details["candidate_blood_ml"],
                "removed_ml": details["blood_rules"]["removed_ml"],
                "findings": {f.label: round(f.volume_ml, 2) for f in findings if f.present},
            }
        result[f"{folder.parent.name}/{folder.name}"] = rows
    return result


def real_series_table(result: dict) -> str:
    """Markdown table of :func:`evaluate_rules_on_series`: one row per series and rule set."""
    lines = [
        "| series | rule set | score | findings (mL) | removed (mL) |",
        "|---|---|---|---|---|",
    ]
    for series, rows in result.items():
        if "not_analysable" in rows:
            reason = rows["not_analysable"][:90]
            lines.append(f"| {series} | - | - | not analysable: {reason} | - |")
            continue
        for name, row in rows.items():
            found = (
                ", ".join(
                    f"{k.replace(' hemorrhage', '')} {v:g}" for k, v in row["findings"].items()
                )
                or "none"
            )
            removed = ", ".join(f"{k} {v:g}" for k, v in row["removed_ml"].items()) or "-"
            lines.append(f"| {series} | {name} | {row['score']:.3f} | {found} | {removed} |")
    return "\n".join(lines) + "\n"
