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

The settings and the slice batches are in
:mod:`dicom_node.training.train_ich_data`, the threshold and the manifest's
parts in :mod:`dicom_node.training.train_ich_package`, both split out of this
module; every name they define is importable from here too.

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
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from dicom_node.imaging.ich_input import ICH_CLASSES, ICH_SUBTYPES
from dicom_node.pipelines.keras_runtime import import_keras
from dicom_node.training.ich_data import downsample_volume, load_base_volume
from dicom_node.training.train_ich_data import (
    IchTrainingConfig,
    SliceBatches,
    _cached_cases,
    _mimic_key,
    _PyDataset,  # noqa: F401 (importable from here, as before the split)
)
from dicom_node.training.train_ich_package import (
    _SCANNER_KINDS,  # noqa: F401 (importable from here, as before the split)
    _summary_key,  # noqa: F401 (importable from here, as before the split)
    _training_summary,
    label_entries,
    save_inference_model,
    series_scores,
    youden_threshold,
)

#: The names importable from this module: its own and those of
#: :mod:`dicom_node.training.train_ich_data` and
#: :mod:`dicom_node.training.train_ich_package`, split out of it.
__all__ = [
    "IchTrainingConfig",
    "SliceBatches",
    "label_entries",
    "save_inference_model",
    "series_scores",
    "train_ich",
    "youden_threshold",
]

keras = import_keras("train")  # TensorFlow's native start-up lines stay off stderr

logger = logging.getLogger(__name__)


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
