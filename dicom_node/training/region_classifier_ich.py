"""Fit the ICH region classifier on synthetic cases with hard mimics (seeds 100000..).

The network and blood rules of a package run on each case; every eligible
candidate region is measured (:func:`~dicom_node.imaging.region_features.region_features`)
and labelled blood when at least :data:`BLOOD_OVERLAP` of its voxels lie in the
generator's lesions. A logistic regression
(:func:`~dicom_node.imaging.region_features.fit_region_classifier`) is fitted
on them. The seeds (100000 upward) are apart from the network's training
seeds (0..N-1), the validation seeds (200000..) that choose the threshold and
the held-out seeds (900000..).

References
----------
Chan HP, et al. Med Phys 2008;35:5360-5377 (false-positive reduction).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

#: First seed of the cases the region classifier is fitted on.
REGION_SEED_START = 100000
#: Share of a region's voxels inside true lesions from which it counts as blood.
BLOOD_OVERLAP = 0.3


def collect_regions(
    model_dir: Path,
    base_dir: Path,
    *,
    cases: int = 240,
    seed_start: int = REGION_SEED_START,
    mimic_share: float = 0.75,
    negative_fraction: float = 0.4,
    processes: int = 1,
) -> dict:
    """Run a package on synthetic cases and measure every eligible region.

    Parameters
    ----------
    model_dir : Path
        ICH model package (its network, rules and floors are used; its region
        classifier is not).
    base_dir : Path
        The real base head CT folder.
    cases : int
        Synthetic series (the balanced plan of
        :func:`~dicom_node.training.evaluate_ich.evaluation_plan`).
    seed_start : int
        First seed.
    mimic_share : float
        Share of the cases with hard mimics (the others have none).
    negative_fraction : float
        Share of negatives in the plan.
    processes : int
        Case-generating processes (1: in this process; worker processes
        after TensorFlow has started can hang).

    Returns
    -------
    dict
        ``features`` float (regions, F), ``overlap`` float (regions,) share of
        each region inside true lesions, ``case`` int (regions,) index of its
        case, ``case_positive`` bool (cases,), ``seconds``.
    """
    from dicom_node.errors import NotAnalysableError
    from dicom_node.pipelines.ich import (
        WEIGHTS_NAME,
        IchModelPackage,
        analyse_volume,
        load_keras_model,
    )
    from dicom_node.training.evaluate_ich import evaluation_plan
    from dicom_node.training.ich_data import iter_synthetic_cases, load_base_volume

    started = time.monotonic()
    package = IchModelPackage.load(Path(model_dir))
    model = load_keras_model(package.path / WEIGHTS_NAME)
    plan = evaluation_plan(cases, seed_start, negative_fraction=negative_fraction)
    rng = np.random.default_rng(seed_start)
    plan = [(seed, subtypes, 1.0 if rng.random() < mimic_share else 0.0) for seed, subtypes in plan]
    base = load_base_volume(Path(base_dir))
    features, overlap, case_index, positive = [], [], [], []
    for n, case in enumerate(iter_synthetic_cases(base, plan, processes=max(1, processes))):
        positive.append(bool((case.labels > 0).any()))
        out: dict = {}
        try:
            analyse_volume(model, case.volume, package, region_classifier=None, regions_out=out)
        except NotAnalysableError as err:
            logger.info("case %d seed %d not analysable: %s", n, case.seed, err)
            continue
        if "features" not in out:
            continue
        regions, eligible = out["regions"], out["eligible"]
        inside = regions > 0
        count = out["features"].shape[0]
        voxels = np.bincount(regions[inside], minlength=count)
        hits = np.bincount(regions[inside & (case.labels > 0)], minlength=count)
        share = hits / np.maximum(voxels, 1)
        for r in np.flatnonzero(eligible):
            features.append(out["features"][r])
            overlap.append(share[r])
            case_index.append(n)
        logger.info(
            "case %d/%d seed %d: %d eligible regions",
            n + 1,
            len(plan),
            case.seed,
            int(eligible.sum()),
        )
    return {
        "features": np.array(features, dtype=np.float64).reshape(len(features), -1),
        "overlap": np.array(overlap, dtype=np.float64),
        "case": np.array(case_index, dtype=np.int64),
        "case_positive": np.array(positive, dtype=bool),
        "seeds": np.array([plan[0][0], plan[-1][0]]),
        "seconds": time.monotonic() - started,
    }


def region_labels(regions: dict) -> np.ndarray:
    """bool (regions,): a collected region counts as blood (:data:`BLOOD_OVERLAP`)."""
    return np.asarray(regions["overlap"]) >= BLOOD_OVERLAP


def series_scores(regions: dict, classifier) -> np.ndarray:
    """Series score of each collected case: the largest P(blood) of its eligible regions.

    Parameters
    ----------
    regions : dict
        From :func:`collect_regions`.
    classifier : RegionClassifier
        The classifier to score with.

    Returns
    -------
    numpy.ndarray
        float64 (cases,); 0 for a case without an eligible region.
    """
    scores = np.zeros(len(regions["case_positive"]), dtype=np.float64)
    if len(regions["features"]):
        p = classifier.probability(np.asarray(regions["features"]))
        np.maximum.at(scores, np.asarray(regions["case"]), p)
    return scores


def load_or_collect(path: Path, **kwargs) -> dict:
    """The regions cached at ``path`` (``.npz``), or :func:`collect_regions` written there."""
    path = Path(path)
    if path.is_file():
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    regions = collect_regions(**kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **regions)
    return regions


def write_classifier_package(
    source_dir: Path,
    output_dir: Path,
    version: str,
    classifier,
    validation: dict,
    *,
    l2: float,
    note: str = "",
) -> dict:
    """Write a package: a package's weights and rules plus a region classifier and its threshold.

    The weights file is copied unchanged (same sha256). The threshold is the
    operating point (:func:`~dicom_node.training.ablation_ich.operating_point`:
    specificity >= 0.95, else the sensitivity floor of 0.90) of the series
    scores on the validation cases (seeds 200000.., never the held-out set).

    Parameters
    ----------
    source_dir : Path
        Package whose weights, input and blood rules are used (region series rule).
    output_dir : Path
        New package folder (created).
    version : str
        Its version.
    classifier : RegionClassifier
        Fitted with :func:`~dicom_node.imaging.region_features.fit_region_classifier`.
    validation : dict
        :func:`collect_regions` on validation seeds with hard mimics.
    l2 : float
        The penalty it was fitted with (for the record).
    note : str
        Appended to the manifest's ``notes``.

    Returns
    -------
    dict
        The new ``detection`` entry.

    Raises
    ------
    ModelPackageError
        If the source package fails verification or does not use the region rule.
    ValueError
        If ``validation`` was collected on held-out seeds.
    """
    import json
    import shutil

    from dicom_node.errors import ModelPackageError
    from dicom_node.pipelines.ich import MANIFEST_NAME, WEIGHTS_NAME, IchModelPackage
    from dicom_node.training.ablation_ich import operating_point
    from dicom_node.training.model_card import write_model_card

    if int(validation["seeds"][0]) >= 900_000:
        raise ValueError("the operating point must be chosen on validation seeds, not held-out")
    source = IchModelPackage.load(Path(source_dir))
    if source.series_rule != "region":
        raise ModelPackageError(f"{source_dir}: a region classifier needs series_rule 'region'")
    scores = series_scores(validation, classifier)
    truth = np.asarray(validation["case_positive"], dtype=bool)
    point = operating_point(scores.tolist(), truth.tolist(), 0.95, 0.90)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source.path / WEIGHTS_NAME, output_dir / WEIGHTS_NAME)
    manifest = json.loads(json.dumps(source.manifest))
    manifest["version"] = version
    detection = manifest["detection"]
    detection["region_classifier"] = {
        **classifier.to_manifest(),
        "l2": l2,
        "derived_from": source.version,
    }
    detection["any_ich_score"] = (
        "largest P(blood) of the region classifier (logistic regression over region figures: "
        "size, network probability, HU, depth, midline distance, mirror symmetry, thickness, "
        "subtype) over connected blood regions that pass the blood rules"
    )
    detection["any_ich_threshold"] = point["threshold"]
    detection["threshold_rule"] = (
        "lowest region-classifier threshold with specificity >= 0.95 on the validation cases "
        "(hard mimics in every case, full base resolution)"
        if point["rule"] == "specificity"
        else "specificity target not reachable without dropping sensitivity below its floor: "
        "highest region-classifier threshold that keeps sensitivity 0.90 on the validation "
        "cases (hard mimics in every case, full base resolution)"
    )
    detection["validation"] = {"cases": int(truth.size),
                               "seeds": [int(v) for v in validation["seeds"]], "mimics": True,
                               "sensitivity": point["sensitivity"],
                               "specificity": point["specificity"],
                               "target_met": point["target_met"]}  # fmt: skip
    manifest.setdefault("notes", []).append(
        f"{version} uses the weights and blood rules of {source.version} unchanged (same "
        "sha256) and decides the series with a region classifier (false-positive reduction) "
        f"fitted on {classifier.fitted_on}." + (f" {note}" if note else "")
    )
    (output_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n",
                                            encoding="utf-8")  # fmt: skip
    write_model_card(output_dir)
    return detection


#: First seed of the validation cases that choose the classifier's threshold.
VALIDATION_SEED_START = 200_000


def train_region_classifier(
    source_dir: Path,
    output_dir: Path,
    version: str,
    *,
    base_dir: Path,
    work_dir: Path,
    cases: int = 200,
    validation_cases: int = 60,
    l2: float = 1.0,
) -> dict:
    """Fit the region classifier of an ICH package and write a package with it.

    Measures the candidate regions of ``cases`` synthetic series (seeds
    :data:`REGION_SEED_START`.., 75 % with hard mimics, 40 % without blood) and
    of ``validation_cases`` validation series (seeds
    :data:`VALIDATION_SEED_START`.., all with hard mimics, 25 % without blood),
    each cached in ``work_dir`` and reused when present; fits the logistic
    regression on the first and chooses its threshold on the second
    (:func:`write_classifier_package`). What ``dicom-node train ich-regions`` runs.

    Parameters
    ----------
    source_dir : Path
        Package whose weights and blood rules are used (weights copied unchanged).
    output_dir : Path
        New package folder (created).
    version : str
        Its version.
    base_dir : Path
        Real non-contrast head CT folder the lesions are drawn into.
    work_dir : Path
        Cache of the measured regions: ``train-<seed>-<cases>.npz`` and
        ``validation-<seed>-<cases>.npz``.
    cases, validation_cases : int
        Numbers of synthetic series to fit on and to choose the threshold on.
    l2 : float
        L2 penalty of the logistic regression.

    Returns
    -------
    dict
        The new package's ``detection`` entry (``any_ich_threshold``, ``validation``).

    Raises
    ------
    ModelPackageError
        If the source package fails verification or does not use the region rule.
    ValueError
        If the regions cannot be fitted (for example all of one class).
    """
    from dicom_node.imaging.region_features import CLIP_Z, LOG_FEATURES, fit_region_classifier

    common = {"model_dir": source_dir, "base_dir": base_dir}
    work_dir = Path(work_dir)
    train = load_or_collect(
        work_dir / f"train-{REGION_SEED_START}-{cases}.npz",
        **common,
        cases=cases,
        seed_start=REGION_SEED_START,
        mimic_share=0.75,
        negative_fraction=0.4,
    )
    validation = load_or_collect(
        work_dir / f"validation-{VALIDATION_SEED_START}-{validation_cases}.npz",
        **common,
        cases=validation_cases,
        seed_start=VALIDATION_SEED_START,
        mimic_share=1.0,
        negative_fraction=0.25,
    )
    classifier = fit_region_classifier(
        train["features"],
        region_labels(train),
        l2=l2,
        log_features=LOG_FEATURES,
        clip_z=CLIP_Z,
        fitted_on=(
            f"{len(train['features'])} candidate regions of {cases} synthetic cases "
            f"(seeds {REGION_SEED_START}-{REGION_SEED_START + cases - 1}, 75 % with "
            "hard mimics, 40 % without blood) on the real base head"
        ),
    )
    return write_classifier_package(source_dir, output_dir, version, classifier, validation, l2=l2)
