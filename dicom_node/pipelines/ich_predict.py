"""Prediction on the ICH model grid: loading the network and running it on a series.

:func:`load_keras_model` loads ``model.keras`` (with the custom layers of
:mod:`dicom_node.pipelines.ich_layers` registered); :func:`predict_volume`
groups the source slices into slabs, resamples them in plane to the model
grid (:mod:`dicom_node.imaging.ich_input`), windows them and runs the
network in fixed-size batches; :class:`IchPrediction` holds the per-pixel
softmax on the model grid with the grid and slabs that map it back to the
source slices. Split out of :mod:`dicom_node.pipelines.ich`, which
re-exports every name defined here.

References
----------
Ronneberger O, et al. U-Net. MICCAI 2015; Keras 3 saving API
(``keras.saving.load_model``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dicom_node.errors import ModelPackageError, PipelineError
from dicom_node.imaging.ich_input import (
    AIR_HU,
    ICH_CLASSES,
    IchInputSpec,
    InPlaneGrid,
    SlabGrid,
    head_grid,
    slab_grid,
    stack_context,
    to_model_grid,
    window_channels,
)
from dicom_node.pipelines.keras_runtime import import_keras
from dicom_node.series.volume import CTVolume

#: Slices per forward pass; a fixed batch shape avoids retracing the model.
BATCH_SLICES = 8


def _configure_threads() -> None:
    """Give the framework every core this process may use (TensorFlow backend)."""
    keras = import_keras()

    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(cores or 1))
        tf.config.threading.set_inter_op_parallelism_threads(2)
    except RuntimeError:  # already initialised in this process
        pass


def load_keras_model(path: Path):
    """Load a ``.keras`` file without compiling it.

    Parameters
    ----------
    path : Path
        The ``model.keras`` file.

    Returns
    -------
    keras.Model

    Raises
    ------
    ModelPackageError
        If Keras cannot read the file.
    """
    # TensorFlow's native start-up lines stay off stderr (keras_runtime).
    _configure_threads()
    keras = import_keras()

    from dicom_node.pipelines import ich_layers  # noqa: F401  (registers the custom objects)

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as err:  # Keras raises ValueError, OSError, zipfile errors...
        raise ModelPackageError(f"{path}: Keras cannot load the model: {err}") from err


@dataclass(frozen=True, eq=False)
class IchPrediction:
    """Model output for one series on the model grid.

    Parameters
    ----------
    probabilities : numpy.ndarray
        float32 array (model slices, size, size, classes), softmax per pixel,
        class 0 background then :data:`ICH_SUBTYPES`. One model slice per
        slab of ``slabs`` (per source slice when ``slabs`` is None).
    grid : InPlaneGrid
        Map between the source slices and the model grid.
    slabs : SlabGrid or None
        How source slices were grouped into model slices; None means one
        model slice per source slice.
    """

    probabilities: np.ndarray
    grid: InPlaneGrid
    slabs: SlabGrid | None = None

    def slab_of_slice(self, slices: int) -> np.ndarray:
        """Model slice of each source slice.

        Parameters
        ----------
        slices : int
            Number of source slices.

        Returns
        -------
        numpy.ndarray
            int array (slices,).
        """
        if self.slabs is None:
            return np.arange(slices)
        return self.slabs.slab_of_slice

    def slice_scores(self, channel: int | None = None) -> np.ndarray:
        """Largest 3x3-mean probability in each slice, of a class or of "not background".

        Parameters
        ----------
        channel : int or None
            Class index (1-5); None means any hemorrhage (1 - background).

        Returns
        -------
        numpy.ndarray
            float32 array (slices,), values in [0, 1].
        """
        if channel is None:
            p = 1.0 - self.probabilities[..., 0]
        else:
            p = self.probabilities[..., channel]
        return np.array(
            [cv2.blur(np.ascontiguousarray(s), (3, 3)).max() for s in p], dtype=np.float32
        )

    def smoothed_max(self, channel: int | None = None) -> float:
        """Largest 3x3-mean probability of a class, or of "not background", in the series.

        Parameters
        ----------
        channel : int or None
            As :meth:`slice_scores`.

        Returns
        -------
        float
            In [0, 1]; 0.0 for a series without slices.
        """
        scores = self.slice_scores(channel)
        return float(scores.max()) if scores.size else 0.0


def predict_model_grid(model, windowed: np.ndarray, spec: IchInputSpec) -> np.ndarray:
    """Run the network on windowed model-grid slices.

    Parameters
    ----------
    model : keras.Model
        The ResUNet.
    windowed : numpy.ndarray
        uint8 array (slices, size, size, windows) from
        :func:`~dicom_node.imaging.ich_input.window_channels`.
    spec : IchInputSpec
        Model input specification.

    Returns
    -------
    numpy.ndarray
        float32 array (slices, size, size, classes), softmax per pixel.
        The model is called on batches of exactly :data:`BATCH_SLICES`
        slices; the last batch is padded with zeros and the padding dropped.
    """
    slices = windowed.shape[0]
    out = np.empty((slices, spec.size, spec.size, ICH_CLASSES), dtype=np.float32)
    for start in range(0, slices, BATCH_SLICES):
        indices = np.arange(start, min(start + BATCH_SLICES, slices))
        batch = stack_context(windowed, spec, indices)
        if len(indices) < BATCH_SLICES:
            pad = np.zeros((BATCH_SLICES - len(indices), *batch.shape[1:]), dtype=np.float32)
            batch = np.concatenate([batch, pad])
        probabilities = np.asarray(model.predict_on_batch(batch), dtype=np.float32)
        out[indices] = probabilities[: len(indices)]
    return out


def predict_volume(
    model, volume: CTVolume, spec: IchInputSpec, slabs: SlabGrid | None = None
) -> IchPrediction:
    """Resample a volume (or its slabs) to the model grid and predict.

    Parameters
    ----------
    model : keras.Model
        The ResUNet.
    volume : CTVolume
        Series in HU, (slices, rows, columns); values below :data:`AIR_HU`
        (scanner padding) are raised to it first.
    spec : IchInputSpec
        Model input specification.
    slabs : SlabGrid or None
        Slabs to predict on; None builds them from
        ``spec.slab_thickness_mm`` (:func:`~dicom_node.imaging.ich_input.slab_grid`).

    Returns
    -------
    IchPrediction
        Probabilities (slabs, size, size, classes) on the model grid, one
        model slice per slab (per source slice for thick-slice series), with
        the grid and slabs that map them back.

    Raises
    ------
    PipelineError
        If the series shows no head.
    """
    if slabs is None:
        slabs = slab_grid(volume.hu, volume.slice_positions_mm, spec.slab_thickness_mm)
    try:
        grid = head_grid(slabs.hu, volume.pixel_spacing_mm, spec)
    except ValueError as err:
        raise PipelineError(f"cannot place the model grid: {err}") from err
    hu_model = to_model_grid(np.maximum(slabs.hu, AIR_HU), grid)
    windowed = window_channels(hu_model, spec)
    return IchPrediction(
        probabilities=predict_model_grid(model, windowed, spec),
        grid=grid,
        slabs=None if slabs.is_identity else slabs,
    )


def slab_voxel_volume_ml(volume: CTVolume, slab_of_slice: np.ndarray) -> np.ndarray:
    """Volume (mL) of one voxel of each slab: the sum over its source slices.

    Parameters
    ----------
    volume : CTVolume
        The series.
    slab_of_slice : numpy.ndarray
        int (slices,): slab of each source slice.

    Returns
    -------
    numpy.ndarray
        float64 (slabs,).
    """
    return np.bincount(slab_of_slice, weights=volume.voxel_volume_ml)
