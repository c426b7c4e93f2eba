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

The rule sets, the operating point, the figures and the tables are in
:mod:`dicom_node.training.ablation_ich_report`; writing a region-rule package
and storing its operating point in
:mod:`dicom_node.training.ablation_ich_package`. Both were split out of this
module, and every name they define is importable from here too.

References
----------
Hanley JA, McNeil BJ. Radiology 1982;143:29-36 (AUC); Meyes R, et al.
"Ablation studies in artificial neural networks" (arXiv 1901.08644) for the
one-component-at-a-time design; Dice LR. Ecology 1945;26:297-302.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from dicom_node.training.ablation_ich_package import derive_region_package, set_operating_point
from dicom_node.training.ablation_ich_report import (
    _case_row,
    markdown_table,
    operating_point,
    real_series_table,
    rule_sets,
    summarise_rule_set,
    write_report,
)
from dicom_node.training.evaluate_ich import evaluation_plan

#: The names importable from this module: its own and those of
#: :mod:`dicom_node.training.ablation_ich_report` and
#: :mod:`dicom_node.training.ablation_ich_package`, split out of it.
__all__ = [
    "VALIDATION_SEED_START",
    "derive_region_package",
    "evaluate_blood_rules",
    "evaluate_rules_on_series",
    "markdown_table",
    "operating_point",
    "real_series_table",
    "rule_sets",
    "set_operating_point",
    "summarise_rule_set",
    "write_report",
]

logger = logging.getLogger(__name__)

#: First seed of the validation range (the same range training uses for its threshold).
VALIDATION_SEED_START = 200_000


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
