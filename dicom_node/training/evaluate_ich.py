"""Evaluate an ICH model package on held-out synthetic series and the real head.

``dicom-node evaluate ich`` runs :func:`evaluate_ich`. The held-out set is
generated from seeds that neither training nor threshold selection used, at
the full resolution of the base series, with a balanced plan: about a quarter
negatives, equal shares of each single subtype and of multi-lesion cases.
Every case goes through the same functions as the node's ``ich`` pipeline
(:func:`dicom_node.pipelines.ich.predict_volume` and
:func:`~dicom_node.pipelines.ich.findings_from_prediction`), and the reported
masks (what the SEG would carry) are compared with the generator's labels on
the source grid.

Reported: Dice per subtype (over the cases that contain it; a subtype that
was not reported counts as Dice 0), any-ICH AUC with sensitivity and
specificity at the manifest threshold, slice-level AUC, and volume error in mL.

References
----------
Dice LR. Ecology 1945;26:297-302; Hanley JA, McNeil BJ. Radiology
1982;143:29-36 (AUC as the Mann-Whitney statistic).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dicom_node.imaging.ich_input import ICH_SUBTYPES, subtype_label
from dicom_node.imaging.masks import dice_coefficient

logger = logging.getLogger(__name__)

#: First seed of the held-out evaluation range (training uses 0.., validation 200000..).
EVALUATION_SEED_START = 900_000


def roc_auc(
    scores: Sequence[float] | np.ndarray, truth: Sequence[bool] | np.ndarray
) -> float | None:
    """Area under the ROC curve as the Mann-Whitney U statistic (ties count 1/2).

    Parameters
    ----------
    scores : sequence of float or numpy.ndarray
        Higher means more likely positive.
    truth : sequence of bool or numpy.ndarray
        True for positives.

    Returns
    -------
    float or None
        AUC in [0, 1]; None without both positives and negatives.

    References
    ----------
    Hanley JA, McNeil BJ. Radiology 1982;143:29-36.
    """
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(truth, dtype=bool)
    pos, neg = s[t], s[~t]
    if not len(pos) or not len(neg):
        return None
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def evaluation_plan(
    cases: int,
    seed_start: int = EVALUATION_SEED_START,
    negative_fraction: float = 0.25,
    *,
    mimics: bool = False,
) -> list[tuple]:
    """A balanced list of (seed, subtypes) for the held-out set.

    Parameters
    ----------
    cases : int
        Number of series.
    seed_start : int
        First seed.
    negative_fraction : float
        Share of negatives; the rest is split equally between the five
        single subtypes and multi-lesion cases (two different subtypes).
    mimics : bool
        Give every case, negative or positive, 1-4 hard mimics of hemorrhage
        (:mod:`dicom_node.training.mimics`). Seeds and subtypes are the same
        either way.

    Returns
    -------
    list of tuple
        ``(seed, subtypes)``, subtypes empty for a negative; with
        ``mimics``, ``(seed, subtypes, True)`` as
        :func:`dicom_node.training.ich_data.iter_synthetic_cases` reads it.
    """
    negatives = int(round(cases * negative_fraction))
    rng = np.random.default_rng(seed_start)
    plan: list[tuple[str, ...]] = [()] * negatives
    kinds: list[tuple[str, ...] | None] = [(s,) for s in ICH_SUBTYPES] + [None]
    i = 0
    while len(plan) < cases:
        kind = kinds[i % len(kinds)]
        if kind is None:
            pair = rng.choice(len(ICH_SUBTYPES), size=2, replace=False)
            kind = tuple(ICH_SUBTYPES[int(j)] for j in sorted(pair))
        plan.append(kind)
        i += 1
    if mimics:
        return [(seed_start + n, subtypes, True) for n, subtypes in enumerate(plan)]
    return [(seed_start + n, subtypes) for n, subtypes in enumerate(plan)]


def score_case(case, package, model) -> dict:
    """Run the pipeline functions on one synthetic case and compare with its labels.

    Parameters
    ----------
    case : SyntheticCase
        Generated case with ground-truth labels (slices, rows, columns).
    package : IchModelPackage
        The package under test.
    model : keras.Model
        Its network.

    Returns
    -------
    dict
        Per-case figures (JSON types): truth, score (the unrounded any-ICH
        probability the pipeline compares with the threshold), per-subtype
        Dice and volumes (mL), slice scores.

    Raises
    ------
    PipelineError
        If the case shows no head.
    """
    from dicom_node.errors import NotAnalysableError
    from dicom_node.pipelines.ich import analyse_volume

    volume = case.volume
    try:
        findings, details, prediction = analyse_volume(model, volume, package)
    except NotAnalysableError as err:
        # Counted as a negative call: the node reports no finding.
        findings, details, prediction = [], {"series_score": 0.0, "not_analysable": err.gate}, None
    # The unrounded score the pipeline compares with the threshold.
    score = float(details["series_score"])
    predicted = np.zeros(volume.shape, dtype=np.uint8)
    reported = set()
    for finding in findings:
        if finding.present and finding.label in ICH_SUBTYPES:
            predicted[np.asarray(finding.mask, dtype=bool)] = subtype_label(finding.label)
            reported.add(finding.label)
    truth = case.labels
    row = {
        "seed": case.seed,
        "subtypes": [lesion.subtype for lesion in case.lesions],
        "positive": bool((truth > 0).any()),
        "score": float(score),
        # What the node reports: a present finding (a series over the threshold
        # whose subtype masks are all too small is reported negative).
        "called_positive": bool(reported),
        "true_volume_ml": volume.mask_volume_ml(truth > 0),
        "predicted_volume_ml": volume.mask_volume_ml(predicted > 0),
        "any_dice": dice_coefficient(truth > 0, predicted > 0) if (truth > 0).any() else None,
        "subtype": {},
        "slice_truth": (truth > 0).reshape(truth.shape[0], -1).any(axis=1).tolist(),
        "slice_scores": (
            [float(v) for v in prediction.slice_scores()]
            if prediction is not None and prediction.slabs is None
            else [0.0] * int(truth.shape[0])
        ),
        "not_analysable": details.get("not_analysable"),
        "mimics": [f"{m.kind}: {m.site}" for m in getattr(case, "mimics", ())],
    }
    for subtype in ICH_SUBTYPES:
        value = subtype_label(subtype)
        true_mask = truth == value
        if true_mask.any():
            row["subtype"][subtype] = {
                "dice": dice_coefficient(true_mask, predicted == value),
                "true_volume_ml": volume.mask_volume_ml(true_mask),
                "predicted_volume_ml": volume.mask_volume_ml(predicted == value),
                "reported": subtype in reported,
            }
    return row


def summarise(rows: Sequence[dict], threshold: float) -> dict:
    """Aggregate per-case rows into the report's figures.

    Parameters
    ----------
    rows : sequence of dict
        From :func:`score_case`.
    threshold : float
        Operating threshold on the any-ICH probability.

    Returns
    -------
    dict
        ``summary`` and ``per_subtype`` entries (JSON types).
    """
    truth = np.array([r["positive"] for r in rows])
    scores = np.array([r["score"] for r in rows])
    called = np.array([r["called_positive"] for r in rows])
    tp = int((called & truth).sum())
    tn = int((~called & ~truth).sum())
    per_subtype = {}
    dice_means = []
    for subtype in ICH_SUBTYPES:
        items = [r["subtype"][subtype] for r in rows if subtype in r["subtype"]]
        dice = [i["dice"] for i in items]
        per_subtype[subtype] = {
            "cases": len(items),
            "dice_mean": float(np.mean(dice)) if dice else None,
            "dice_median": float(np.median(dice)) if dice else None,
            "detected_fraction": float(np.mean([i["reported"] for i in items])) if items else None,
            "volume_error_ml_mean": float(
                np.mean([i["predicted_volume_ml"] - i["true_volume_ml"] for i in items])
            )
            if items
            else None,
        }
        if dice:
            dice_means.append(float(np.mean(dice)))
    positives = [r for r in rows if r["positive"]]
    errors = [r["predicted_volume_ml"] - r["true_volume_ml"] for r in positives]
    slice_truth = np.concatenate([r["slice_truth"] for r in rows])
    slice_scores = np.concatenate([r["slice_scores"] for r in rows])
    return {
        "summary": {
            "cases": len(rows),
            "positive_cases": int(truth.sum()),
            "negative_cases": int((~truth).sum()),
            "any_ich_auc": roc_auc(scores, truth),
            "threshold": threshold,
            "sensitivity": tp / int(truth.sum()) if truth.any() else None,
            "specificity": tn / int((~truth).sum()) if (~truth).any() else None,
            "true_positives": tp,
            "true_negatives": tn,
            "mean_subtype_dice": float(np.mean(dice_means)) if dice_means else None,
            "any_ich_dice_median": float(np.median([r["any_dice"] for r in positives]))
            if positives
            else None,
            "volume_error_ml_mean": float(np.mean(errors)) if errors else None,
            "volume_abs_error_ml_median": float(np.median(np.abs(errors))) if errors else None,
            "slice_auc": roc_auc(slice_scores, slice_truth),
        },
        "per_subtype": per_subtype,
    }


def markdown_report(report: dict) -> str:
    """Render an evaluation report as Markdown.

    Parameters
    ----------
    report : dict
        As :func:`evaluate_ich` returns it.

    Returns
    -------
    str
    """
    from dicom_node.training.model_card import _evaluation_section

    lines = [
        f"# ICH model evaluation: {report['model']['name']} {report['model']['version']}",
        "",
        "Synthetic hemorrhages on one real head CT; **not** a measure of clinical accuracy.",
        "",
        *_evaluation_section(report),
        f"Run on {report['machine']} in {report['seconds']:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def evaluate_ich(
    model_dir: Path,
    base_dir: Path,
    *,
    cases: int = 120,
    seed_start: int = EVALUATION_SEED_START,
    processes: int = 2,
    report_path: Path | None = None,
    command: str = "",
    mimics: bool = False,
    scanner: bool = False,
) -> dict:
    """Evaluate a package; write ``evaluation.json`` (with mimics: ``evaluation-mimics.json``).

    Parameters
    ----------
    model_dir : Path
        Model package folder.
    base_dir : Path
        Folder of the real base head CT (also evaluated unmodified).
    cases : int
        Held-out synthetic series.
    seed_start : int
        First held-out seed.
    processes : int
        Processes generating cases while this one runs the model.
    report_path : Path or None
        Also write ``<report_path>.json`` and ``<report_path>.md``.
    command : str
        Command line recorded in the report.
    mimics : bool
        Give every held-out case (negatives and positives) 1-4 hard mimics
        (:func:`evaluation_plan`); the report's ``mimics`` says so and each
        case row lists its mimics.
    scanner : bool
        Vary kernel, noise and field of view of every case; recorded as
        ``scanner_variety``.

    Returns
    -------
    dict
        The report (JSON types).

    Raises
    ------
    ModelPackageError
        If the package fails verification.
    SeriesLoadError
        If the base series cannot be loaded.
    ValueError
        If the base shows no intracranial space.
    PipelineError
        If a case shows no head.
    """
    import platform

    from rich.progress import track

    from dicom_node.pipelines.ich import (
        WEIGHTS_NAME,
        IchModelPackage,
        analyse_volume,
        load_keras_model,
    )
    from dicom_node.training.ich_data import iter_synthetic_cases, load_base_volume
    from dicom_node.training.model_card import (
        EVALUATION_MIMICS_NAME,
        EVALUATION_NAME,
        write_model_card,
    )

    started = time.monotonic()
    package = IchModelPackage.load(Path(model_dir))
    model = load_keras_model(package.path / WEIGHTS_NAME)
    plan = evaluation_plan(cases, seed_start, mimics=mimics)
    base = load_base_volume(Path(base_dir))
    generated = iter_synthetic_cases(base, plan, processes=max(1, processes), scanner=scanner)
    rows = [
        score_case(case, package, model)
        for case in track(generated, total=len(plan), description="evaluating")
    ]
    report = summarise(rows, package.threshold)
    findings, details, _prediction = analyse_volume(model, base, package)
    report.update(
        {
            "model": {"name": package.name, "version": package.version},
            "seeds": [plan[0][0], plan[-1][0]],
            "mimics": bool(mimics),
            "scanner_variety": bool(scanner),
            "real_head": {
                "any_ich_probability": details["any_ich_probability"],
                "positive": any(f.present for f in findings),
                "total_volume_ml": details["total_volume_ml"],
            },
            "cases": rows,
            "command": command
            or (
                f"dicom-node evaluate ich --model {model_dir} --cases {cases}"
                + (" (mimics)" if mimics else "")
                + (" (scanner variety)" if scanner else "")
            ),
            "machine": f"{platform.machine()}, {multiprocessing.cpu_count()} cores",
            "seconds": round(time.monotonic() - started, 1),
        }
    )
    name = EVALUATION_MIMICS_NAME if mimics else EVALUATION_NAME
    (package.path / name).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    write_model_card(package.path)
    if report_path is not None:
        report_path = Path(report_path)
        slim = {k: v for k, v in report.items() if k != "cases"}
        report_path.with_suffix(".json").write_text(
            json.dumps(slim, indent=2) + "\n", encoding="utf-8"
        )
        report_path.with_suffix(".md").write_text(markdown_report(report), encoding="utf-8")
    logger.info("evaluation: %s", report["summary"])
    return report
