"""Train the ICH ResUNet on synthetic hemorrhages and write a model package.

``dicom-node train ich`` runs :func:`train_ich`:

1. load the real base head CT, block-average it in plane (about 1 mm
   pixels) and generate seeded synthetic cases (deformed anatomy, zero to
   three lesions of the five subtypes) on the model grid, cached in the work
   folder (:mod:`dicom_node.training.ich_data`);
2. optionally add voxel-labelled public data read by
   :mod:`dicom_node.training.datasets` (``--dataset physionet:PATH``);
3. train the 2.5D ResUNet with Dice + cross-entropy, sampling slices with a
   fixed share of hemorrhage slices, random left-right flips, a fixed seed
   and a checkpoint per epoch (training resumes from the newest one);
4. choose the any-ICH operating threshold on separate validation cases made
   at the base series' full resolution, as the node will see series (the
   threshold that maximises Youden's J = sensitivity + specificity - 1);
5. write ``model.keras``, ``manifest.json`` (input spacing, windows, labels
   with SNOMED CT codes, threshold, weights sha256, training data summary)
   and ``MODEL_CARD.md``.

References
----------
Youden WJ. Index for rating diagnostic tests. Cancer 1950;3:32-35;
Kingma DP, Ba J. Adam. ICLR 2015.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from dicom_node.imaging.ich_input import ICH_CLASSES, ICH_SUBTYPES, IchInputSpec, stack_context
from dicom_node.pipelines.keras_runtime import import_keras
from dicom_node.training.ich_data import (
    ModelGridCase,
    downsample_volume,
    generate_model_grid_cases,
    load_base_volume,
    load_cases,
    save_cases,
)

keras = import_keras("train")  # TensorFlow's native start-up lines stay off stderr

logger = logging.getLogger(__name__)


@dataclass
class IchTrainingConfig:
    """Settings of one training run (all seeded).

    Parameters
    ----------
    base_dir : Path
        Folder with the base head CT series (DICOM).
    output_dir : Path
        Model package folder to write, ``dicom_node/models/ich/<version>``.
    work_dir : Path
        Cache of generated cases and checkpoints.
    version : str
        Model version written to the manifest.
    train_cases, validation_cases : int
        Synthetic cases for training (random subtype mix) and for choosing
        the threshold (balanced plan of
        :func:`dicom_node.training.evaluate_ich.evaluation_plan`).
    train_seed_start, validation_seed_start : int
        First seed of each range; the ranges must not overlap each other
        (checked) or the evaluation range of
        :mod:`dicom_node.training.evaluate_ich` (not checked).
    downsample : int
        In-plane block-averaging factor of the base head before lesions are
        inserted (2 turns 0.49 mm pixels into 0.98 mm).
    epochs, steps_per_epoch, batch_size : int
        Optimisation length; slices per step.
    learning_rate : float
        Adam learning rate at the start; cosine decay to 5 % of it.
    positive_fraction : float
        Share of sampled slices that contain hemorrhage.
    filters : tuple of int
        ResUNet filters per level.
    seed : int
        Seed of weight initialisation and slice sampling.
    processes : int
        Processes generating synthetic cases.
    datasets : list of str
        Extra voxel-labelled datasets, ``"physionet:PATH"`` or ``"bhsd:PATH"``.
    mimic_fraction : float
        Probability that a training case gets 1-4 hard mimics of hemorrhage
        (:mod:`dicom_node.training.mimics`: calcifications, dense falx or
        tentorium, beam hardening, partial-volume bone, motion), negatives
        and positives alike; 0 trains on exactly the cases of before.
    scanner_variety : bool
        Vary kernel, noise and field of view of every training case
        (:func:`dicom_node.training.mimics.vary_scanner`).
    validation_mimics : bool
        Give every validation case (where the threshold is chosen) mimics,
        and scanner variety when ``scanner_variety`` is set, so the operating
        point is chosen on cases that look like real negatives.
    init_from : Path or None
        Model package whose weights start the training (fine-tuning) instead
        of a random initialisation; its architecture replaces ``filters``.
    spec : IchInputSpec
        Model input specification.
    """

    base_dir: Path
    output_dir: Path
    work_dir: Path
    version: str = "1.0.0"
    train_cases: int = 400
    validation_cases: int = 60
    train_seed_start: int = 0
    validation_seed_start: int = 200_000
    downsample: int = 2
    epochs: int = 14
    steps_per_epoch: int = 120
    batch_size: int = 12
    learning_rate: float = 2e-3
    positive_fraction: float = 0.7
    filters: tuple[int, ...] = (16, 32, 64, 128)
    seed: int = 0
    processes: int = 2
    datasets: list[str] = field(default_factory=list)
    mimic_fraction: float = 0.0
    scanner_variety: bool = False
    validation_mimics: bool = False
    init_from: Path | None = None
    spec: IchInputSpec = field(default_factory=IchInputSpec)

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.mimic_fraction) <= 1.0:
            raise ValueError(f"mimic_fraction must be in [0, 1], got {self.mimic_fraction}")


def _mimic_key(mimics: float | bool, scanner: bool) -> str:
    """Cache-name suffix of the mimic options; empty for the defaults (old cache names)."""
    key = f"-m{float(mimics):g}" if float(mimics) > 0 else ""
    return key + ("-sv" if scanner else "")


def _cached_cases(
    path: Path,
    base,
    seeds: Sequence,
    spec: IchInputSpec,
    processes: int,
    *,
    mimics: float | bool = 0.0,
    scanner: bool = False,
) -> list[ModelGridCase]:
    if path.is_file():
        cases = load_cases(path)
        if [c.seed for c in cases] == [s[0] if isinstance(s, tuple) else s for s in seeds]:
            logger.info("using %d cached cases from %s", len(cases), path)
            return cases
    started = time.monotonic()
    cases = generate_model_grid_cases(
        base, seeds, spec, processes=processes, mimics=mimics, scanner=scanner
    )
    save_cases(path, cases)
    logger.info("generated %d cases in %.0f s", len(cases), time.monotonic() - started)
    return cases


#: keras.utils.PyDataset, as a name mypy accepts for a base class (keras ships no types).
_PyDataset: Any = keras.utils.PyDataset


class SliceBatches(_PyDataset):
    """Random 2.5D slice batches from model-grid cases (a Keras ``PyDataset``).

    Parameters
    ----------
    cases : sequence of ModelGridCase
        Training cases.
    spec : IchInputSpec
        Model input specification.
    batch_size, steps : int
        Slices per batch; batches per epoch.
    positive_fraction : float
        Share of slices drawn from those that contain hemorrhage.
    seed : int
        Seed of the sampling; epoch ``e`` batch ``i`` is reproducible.

    Notes
    -----
    A batch is ``x`` float32 (batch, size, size, channels) and ``y`` uint8
    (batch, size, size); each slice is flipped left-right with probability
    0.5 (labels with it).
    """

    def __init__(self, cases, spec, *, batch_size, steps, positive_fraction, seed) -> None:
        super().__init__(workers=1, use_multiprocessing=False)
        self.cases = list(cases)
        self.spec = spec
        self.batch_size = batch_size
        self.steps = steps
        self.positive_fraction = positive_fraction
        self.seed = seed
        self.epoch = 0
        positive: list[tuple[int, int]] = []
        negative: list[tuple[int, int]] = []
        for c, case in enumerate(self.cases):
            has_blood = (case.labels > 0).reshape(case.labels.shape[0], -1).any(axis=1)
            for k, flag in enumerate(has_blood):
                (positive if flag else negative).append((c, k))
        self.positive = np.array(positive, dtype=np.int64).reshape(-1, 2)
        self.negative = np.array(negative, dtype=np.int64).reshape(-1, 2)

    def __len__(self) -> int:
        return self.steps

    def on_epoch_end(self) -> None:
        self.epoch += 1

    def __getitem__(self, index: int):
        rng = np.random.default_rng((self.seed, self.epoch, index))
        n_pos = int(round(self.batch_size * self.positive_fraction)) if len(self.positive) else 0
        picks = []
        if n_pos:
            picks.append(self.positive[rng.integers(0, len(self.positive), n_pos)])
        picks.append(self.negative[rng.integers(0, len(self.negative), self.batch_size - n_pos)])
        chosen = np.concatenate(picks)
        x = np.empty(
            (self.batch_size, self.spec.size, self.spec.size, self.spec.channels), dtype=np.float32
        )
        y = np.empty((self.batch_size, self.spec.size, self.spec.size), dtype=np.uint8)
        for i, (c, k) in enumerate(chosen):
            case = self.cases[int(c)]
            x[i] = stack_context(case.windowed, self.spec, np.array([k]))[0]
            y[i] = case.labels[k]
            if rng.random() < 0.5:
                x[i] = x[i, :, ::-1]
                y[i] = y[i, :, ::-1]
        return x, y


def save_inference_model(model, path: Path, spec: IchInputSpec, filters: tuple[int, ...]) -> None:
    """Save the trained weights in an uncompiled copy of the network (no optimizer state).

    Parameters
    ----------
    model : keras.Model
        The trained ResUNet.
    path : Path
        ``model.keras`` to write; about a third of the size of a file that
        also holds the Adam moments.
    spec : IchInputSpec
        Its input specification.
    filters : tuple of int
        Its filters per level.
    """
    from dicom_node.training.resunet import build_resunet

    inference = build_resunet(
        size=spec.size, channels=spec.channels, classes=ICH_CLASSES, filters=tuple(filters)
    )
    inference.set_weights(model.get_weights())
    inference.save(path)


def series_scores(model, cases: Sequence[ModelGridCase], spec: IchInputSpec) -> np.ndarray:
    """Any-ICH probability of each case as the pipeline computes it.

    Parameters
    ----------
    model : keras.Model
        The ResUNet.
    cases : sequence of ModelGridCase
        Cases on the model grid.
    spec : IchInputSpec
        Model input specification.

    Returns
    -------
    numpy.ndarray
        float64 array (cases,) in [0, 1].
    """
    from dicom_node.pipelines.ich import IchPrediction, predict_model_grid

    scores = []
    for case in cases:
        probabilities = predict_model_grid(model, case.windowed, spec)
        # smoothed_max reads only the probabilities; a model-grid case has no source grid
        prediction = IchPrediction(probabilities=probabilities, grid=None)  # type: ignore[arg-type]
        scores.append(prediction.smoothed_max(None))
    return np.asarray(scores, dtype=np.float64)


def youden_threshold(scores: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """Threshold on a score that maximises Youden's J.

    Parameters
    ----------
    scores : numpy.ndarray
        (cases,) scores, higher meaning hemorrhage.
    truth : numpy.ndarray
        (cases,) booleans, True for hemorrhage.

    Returns
    -------
    threshold, sensitivity, specificity : float
        Among the observed scores, the lowest one with the largest J (ties go
        to the more sensitive side) is found; the threshold returned lies
        midway between it and the next lower observed score (it is that score
        when none is lower), so it gives the same sensitivity and
        specificity, which are returned with it.

    Raises
    ------
    ValueError
        If ``truth`` has no positives or no negatives.

    References
    ----------
    Youden WJ. Cancer 1950;3:32-35.
    """
    truth = np.asarray(truth, dtype=bool)
    if truth.all() or not truth.any():
        raise ValueError("need both positive and negative cases to choose a threshold")
    best = (-1.0, 0.5, 0.0, 0.0)
    for candidate in np.unique(scores):
        predicted = scores >= candidate
        sensitivity = float((predicted & truth).sum() / truth.sum())
        specificity = float((~predicted & ~truth).sum() / (~truth).sum())
        j = sensitivity + specificity - 1.0
        if j > best[0] + 1e-12:
            best = (j, float(candidate), sensitivity, specificity)
    # Put the threshold midway below the chosen score, towards the next lower score.
    lower = scores[scores < best[1]]
    threshold = 0.5 * (best[1] + lower.max()) if lower.size else best[1]
    return float(threshold), best[2], best[3]


def label_entries() -> list[dict]:
    """The manifest ``labels``: value, finding and its codes from :mod:`dicom_node.results.codes`.

    Returns
    -------
    list of dict
        One entry per subtype in label order, with the SNOMED CT (or DICOM)
        codes the results carry; ``codes`` is null where the results layer
        has no checked code for a subtype.
    """
    from dicom_node.errors import ResultBuildError
    from dicom_node.results import codes

    entries = []
    for value, subtype in enumerate(ICH_SUBTYPES, start=1):
        try:
            fc = codes.finding_codes(subtype)
            coded = {
                "finding_type": [
                    fc.finding_type.value,
                    fc.finding_type.scheme_designator,
                    fc.finding_type.meaning,
                ],
                "finding_site": [
                    fc.finding_site.value,
                    fc.finding_site.scheme_designator,
                    fc.finding_site.meaning,
                ],
            }
        except (ResultBuildError, AttributeError) as err:
            logger.warning("no codes for %s: %s", subtype, err)
            coded = None
        entries.append({"value": value, "finding": subtype, "codes": coded})
    return entries


#: Kinds of :func:`dicom_node.training.mimics.vary_scanner`, not mimics of blood.
_SCANNER_KINDS = ("kernel:", "noise:", "field of view:")


def _summary_key(name: str) -> str:
    """``"kind: site"`` of a mimic without the drawn parameters of a scanner change."""
    kind, _, site = name.partition(": ")
    if kind == "kernel":
        return f"kernel: {site.split(':')[0]}"
    return kind if name.startswith(_SCANNER_KINDS) else name


def _training_summary(config: IchTrainingConfig, cases: Sequence[ModelGridCase], base) -> dict:
    counts = {s: 0 for s in ICH_SUBTYPES}
    volumes: dict[str, list[float]] = {s: [] for s in ICH_SUBTYPES}
    negatives = multi = 0
    mimic_counts: dict[str, int] = {}
    for case in cases:
        for name in case.mimics:
            key = _summary_key(name)
            mimic_counts[key] = mimic_counts.get(key, 0) + 1
        if not case.subtypes:
            negatives += 1
        if len(case.subtypes) > 1:
            multi += 1
        for s, v in zip(case.subtypes, case.volumes_ml, strict=True):
            counts[s] += 1
            volumes[s].append(v)
    return {
        "kind": "synthetic hemorrhages inserted into one real non-contrast head CT",
        "base_series": {
            "source": "../shared/data/head-ct-ge (GE HiSpeed Dual, neurolabusc/dcm_qa_ct, BSD-2)",
            "slices": int(base.shape[0]),
            "pixel_spacing_mm": [float(v) for v in base.pixel_spacing_mm],
            "in_plane_downsample": config.downsample,
        },
        "cases": len(cases),
        "negative_cases": negatives,
        "multi_lesion_cases": multi,
        "lesions_per_subtype": counts,
        "lesion_volume_ml_range": {
            s: [round(min(v), 2), round(max(v), 2)] if v else None for s, v in volumes.items()
        },
        "seeds": [config.train_seed_start, config.train_seed_start + config.train_cases - 1],
        "generator": "dicom_node.training.lesions.make_case",
        "mimic_fraction": float(config.mimic_fraction),
        "scanner_variety": bool(config.scanner_variety),
        "validation_mimics": bool(config.validation_mimics),
        "cases_with_mimics": sum(
            1 for c in cases if any(not m.startswith(_SCANNER_KINDS) for m in c.mimics)
        ),
        "mimics_per_kind": mimic_counts,
        "extra_datasets": list(config.datasets),
    }


def train_ich(config: IchTrainingConfig) -> Path:
    """Run a whole training (see the module docstring) and write the package.

    Parameters
    ----------
    config : IchTrainingConfig
        The run's settings.

    Returns
    -------
    Path
        The package folder (``config.output_dir``).

    Raises
    ------
    SeriesLoadError
        If the base series cannot be loaded.
    ValueError
        If the training and validation seed ranges overlap (the evaluation
        range is not checked), or the validation cases lack positives or
        negatives.
    DatasetError
        If a ``config.datasets`` entry cannot be read or has no voxel labels.
    """
    from dicom_node.pipelines.ich import MANIFEST_NAME, WEIGHTS_NAME, sha256_file
    from dicom_node.pipelines.ich_layers import ClassDice, DiceCrossEntropyLoss
    from dicom_node.training.model_card import write_model_card
    from dicom_node.training.resunet import build_resunet

    train_seeds = range(config.train_seed_start, config.train_seed_start + config.train_cases)
    validation_seeds = range(
        config.validation_seed_start, config.validation_seed_start + config.validation_cases
    )
    if set(train_seeds) & set(validation_seeds):
        raise ValueError("training and validation seed ranges overlap")
    config.work_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    full = load_base_volume(config.base_dir)
    base = downsample_volume(full, config.downsample)
    spec = config.spec
    # The cache name carries what the cases depend on besides the seeds.
    key = f"d{config.downsample}-s{spec.size}-p{spec.pixel_spacing_mm:g}" + _mimic_key(
        config.mimic_fraction, config.scanner_variety
    )
    train_cases = _cached_cases(
        config.work_dir / f"train-{key}.npz",
        base,
        list(train_seeds),
        spec,
        config.processes,
        mimics=config.mimic_fraction,
        scanner=config.scanner_variety,
    )
    from dicom_node.training.evaluate_ich import evaluation_plan

    validation_plan = evaluation_plan(
        config.validation_cases, config.validation_seed_start, mimics=config.validation_mimics
    )
    validation_scanner = config.validation_mimics and config.scanner_variety
    # Validation cases are made at the base's full resolution, the resolution the node
    # sees: scores of cases made on the downsampled head run higher, and a threshold
    # chosen on them is too strict for real series.
    validation_key = f"s{spec.size}-p{spec.pixel_spacing_mm:g}" + _mimic_key(
        1.0 if config.validation_mimics else 0.0, validation_scanner
    )
    validation_cases = _cached_cases(
        config.work_dir / f"validation-full-{validation_key}.npz",
        full,
        validation_plan,
        spec,
        config.processes,
        scanner=validation_scanner,
    )
    extra = []
    for dataset in config.datasets:
        from dicom_node.training.ich_real import model_grid_cases_from_dataset

        extra.extend(model_grid_cases_from_dataset(dataset, spec))
    batches = SliceBatches(
        [*train_cases, *extra],
        spec,
        batch_size=config.batch_size,
        steps=config.steps_per_epoch,
        positive_fraction=config.positive_fraction,
        seed=config.seed,
    )
    checkpoints = config.work_dir / "checkpoints"
    checkpoints.mkdir(exist_ok=True)
    existing = sorted(checkpoints.glob("epoch-*.keras"))
    initial_epoch = 0
    schedule = keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=config.epochs * config.steps_per_epoch, alpha=0.05
    )
    if existing:
        model = keras.saving.load_model(existing[-1])
        initial_epoch = int(existing[-1].stem.split("-")[1])
        batches.epoch = initial_epoch
        logger.info("resuming from %s", existing[-1])
    else:
        if config.init_from is not None:
            from dicom_node.pipelines.ich import IchModelPackage, load_keras_model

            start = IchModelPackage.load(Path(config.init_from))
            model = load_keras_model(start.path / WEIGHTS_NAME)
            logger.info("fine-tuning from %s %s", start.name, start.version)
        else:
            model = build_resunet(
                size=spec.size, channels=spec.channels, classes=ICH_CLASSES, filters=config.filters
            )
        metrics = [ClassDice(i, f"dice_{s.split()[0]}") for i, s in enumerate(ICH_SUBTYPES, 1)]
        model.compile(
            optimizer=keras.optimizers.Adam(schedule),
            loss=DiceCrossEntropyLoss(ICH_CLASSES),
            metrics=metrics,
        )
    started = time.monotonic()
    history = model.fit(
        batches,
        epochs=config.epochs,
        initial_epoch=initial_epoch,
        verbose=2,
        callbacks=[keras.callbacks.ModelCheckpoint(str(checkpoints / "epoch-{epoch:02d}.keras"))],
    )
    train_s = time.monotonic() - started

    scores = series_scores(model, validation_cases, spec)
    truth = np.array([bool(c.subtypes) for c in validation_cases])
    threshold, sensitivity, specificity = youden_threshold(scores, truth)

    config.output_dir.mkdir(parents=True, exist_ok=True)
    weights = config.output_dir / WEIGHTS_NAME
    save_inference_model(model, weights, spec, config.filters)
    manifest = {
        "name": "ich-resunet",
        "version": config.version,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "framework": {"keras": keras.__version__, "backend": keras.backend.backend()},
        "architecture": {
            "type": "2.5D residual U-Net",
            "filters": list(config.filters),
            "parameters": int(model.count_params()),
        },
        "input": spec.to_manifest(),
        "output": {"classes": ["background", *ICH_SUBTYPES], "activation": "softmax"},
        "labels": label_entries(),
        "detection": {
            "any_ich_score": "max over slices of the 3x3 mean of 1 - P(background)",
            "any_ich_threshold": round(threshold, 4),
            "threshold_rule": "Youden's J on the validation cases (full base resolution)",
            "validation": {
                "cases": len(validation_cases),
                "sensitivity": sensitivity,
                "specificity": specificity,
                "seeds": [validation_seeds.start, validation_seeds.stop - 1],
                "mimics": bool(config.validation_mimics),
                "scanner_variety": bool(validation_scanner),
            },
            # One subtype per connected blood region (pipelines/ich.py); chosen on
            # the validation seeds, where it raised 1.0.0's mean subtype Dice.
            "subtype_assignment": "region",
            "min_volume_ml": 0.05,
            "min_component_ml": 0.02,
        },
        "weights_sha256": sha256_file(weights),
        "training": {
            "config": {
                k: (str(v) if isinstance(v, Path) else v)
                for k, v in asdict(config).items()
                if k not in ("spec", "base_dir", "output_dir", "work_dir")
            },
            "data": _training_summary(config, train_cases, base),
            "seconds": round(train_s, 1),
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "final_epoch": {k: round(float(v[-1]), 4) for k, v in history.history.items()},
        },
        "intended_use": "research and integration testing only; not for clinical use",
    }
    (config.output_dir / MANIFEST_NAME).write_text(
        json.dumps(manifest, indent=2) + "\n", encoding="utf-8"
    )
    write_model_card(config.output_dir)
    logger.info(
        "wrote %s (threshold %.3f, validation sensitivity %.2f specificity %.2f)",
        config.output_dir,
        threshold,
        sensitivity,
        specificity,
    )
    return config.output_dir
