"""The figures and tables of the ICH blood-rule ablation, and the operating-point rule.

Split out of :mod:`dicom_node.training.ablation_ich`, which runs the ablation
(``evaluate_blood_rules`` on synthetic cases, ``evaluate_rules_on_series`` on
real series) and re-exports every name defined here:

- :func:`rule_sets`, the rule sets compared (none, each rule alone, the
  package's own);
- :func:`operating_point`, the lowest threshold whose specificity reaches
  the target, with a sensitivity floor;
- the per-case row and :func:`summarise_rule_set` (AUC, sensitivity,
  specificity, false alarms, subtype Dice, spurious subdural/epidural calls);
- the reports: :func:`markdown_table` and :func:`write_report` of the
  synthetic ablation, :func:`real_series_table` of the real series.

References
----------
Hanley JA, McNeil BJ. Radiology 1982;143:29-36 (AUC); Dice LR. Ecology
1945;26:297-302.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dicom_node.imaging.blood_rules import BLOOD_RULES, BloodRuleSettings
from dicom_node.imaging.ich_input import ICH_SUBTYPES, subtype_label
from dicom_node.imaging.masks import dice_coefficient
from dicom_node.training.evaluate_ich import roc_auc


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
