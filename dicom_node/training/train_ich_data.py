"""The settings of an ICH training run and the data it trains on: cached cases, slice batches.

Split out of :mod:`dicom_node.training.train_ich`, which runs the training and
re-exports every name defined here (its log lines keep the
``dicom_node.training.train_ich`` logger):

- :class:`IchTrainingConfig`, the seeded settings of one run;
- the case cache of the work folder: synthetic model-grid cases made by
  :func:`dicom_node.training.ich_data.generate_model_grid_cases`, saved and
  reused when the seeds match, under a name that carries the mimic options;
- :class:`SliceBatches`, random 2.5D slice batches with a fixed share of
  hemorrhage slices and random left-right flips (a Keras ``PyDataset``).

References
----------
Kingma DP, Ba J. Adam. ICLR 2015 (the optimiser the settings parameterise).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dicom_node.imaging.ich_input import IchInputSpec, stack_context
from dicom_node.pipelines.keras_runtime import import_keras
from dicom_node.training.ich_data import (
    ModelGridCase,
    generate_model_grid_cases,
    load_cases,
    save_cases,
)

keras = import_keras("train")  # TensorFlow's native start-up lines stay off stderr

#: The logger of :mod:`dicom_node.training.train_ich`, which this module was split from.
logger = logging.getLogger("dicom_node.training.train_ich")


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
