"""Pixel data and frames of the node's SEG.

* ``_stack_masks``: the findings' masks checked against the source grid and
  stacked as one (slices, rows, columns, segments) array;
* ``_label_map_pixels``: those masks as one label map (pixel value = segment
  number) for Segmentation Type LABELMAP, refusing overlapping findings;
* ``_frames_per_slice`` and :func:`split_slices`: how many frames each
  source slice contributes, and contiguous runs of slices that fit a
  receiver's limit on the Number of Frames, one SEG instance per run
  (:func:`dicom_node.results.seg.build_segmentations`).

Split from :mod:`dicom_node.results.seg` (issue 14), which still exports
every name defined here.

References
----------
PS3.3 C.8.20 Segmentation Image Module (Segmentation Type); PS3.3 C.7.6.16
Multi-frame Functional Groups Module (Number of Frames); DICOM Supplement
243 Label Map Segmentation.
"""

from __future__ import annotations

import numpy as np

from dicom_node.errors import ResultBuildError
from dicom_node.pipelines.base import PipelineResult


def _stack_masks(result: PipelineResult, shape: tuple[int, int, int]) -> np.ndarray:
    """Return the findings' masks as one (slices, rows, columns, segments) uint8 array."""
    masks = []
    for number, finding in enumerate(result.findings, start=1):
        mask = np.asarray(finding.mask)
        if mask.shape != shape:
            raise ResultBuildError(
                f"mask of segment {number} ({finding.label}) has shape {mask.shape}, "
                f"expected (slices, rows, columns) = {shape}"
            )
        if mask.dtype != bool:
            if not np.issubdtype(mask.dtype, np.integer) or not np.isin(mask, (0, 1)).all():
                raise ResultBuildError(
                    f"mask of segment {number} ({finding.label}) is not binary (dtype {mask.dtype})"
                )
        masks.append(mask.astype(np.uint8, copy=False))
    return np.stack(masks, axis=-1)


def _label_map_pixels(pixel_array: np.ndarray, result: PipelineResult) -> np.ndarray:
    """Return (slices, rows, columns, segments) masks as one label map, pixel = segment number.

    uint8 when there are fewer than 256 segments, else uint16. Raises
    ResultBuildError, naming the findings, when segments overlap.
    """
    if (pixel_array.sum(axis=-1) > 1).any():
        shared = pixel_array.reshape(-1, pixel_array.shape[-1])
        shared = shared[shared.sum(axis=1) > 1].any(axis=0)
        labels = [f.label for f, s in zip(result.findings, shared, strict=True) if s]
        raise ResultBuildError(
            "findings overlap: a LABELMAP segmentation cannot encode overlapping segments "
            f"({', '.join(labels)})"
        )
    numbers = np.arange(1, pixel_array.shape[-1] + 1, dtype=np.uint16)
    label_map = (pixel_array.astype(np.uint16) * numbers).sum(axis=-1)
    return label_map.astype(np.uint8 if len(numbers) < 256 else np.uint16)


def _frames_per_slice(
    result: PipelineResult, segmentation_type: str, omit_empty_frames: bool
) -> np.ndarray:
    """Number of frames each source slice contributes, shape (slices,)."""
    per_segment = np.stack(
        [np.asarray(f.mask).reshape(len(f.mask), -1).any(axis=1) for f in result.findings],
        axis=1,
    )  # (slices, segments)
    if not per_segment.any():
        omit_empty_frames = False  # an all-empty result keeps every frame
    if segmentation_type == "LABELMAP":
        return (
            per_segment.any(axis=1).astype(int)
            if omit_empty_frames
            else np.ones(len(per_segment), dtype=int)
        )
    if omit_empty_frames:
        return per_segment.sum(axis=1).astype(int)
    return np.full(len(per_segment), per_segment.shape[1], dtype=int)


def split_slices(frames_per_slice: np.ndarray, max_frames: int) -> list[slice]:
    """Split the slice axis into contiguous runs of at most ``max_frames`` frames.

    Slices that contribute no frame join the current run; runs without any
    frame are dropped (their slices have nothing to encode).

    Parameters
    ----------
    frames_per_slice : numpy.ndarray
        int array of shape (slices,): frames each slice contributes.
    max_frames : int
        Largest number of frames per run; 0 means one run with every slice.

    Returns
    -------
    list of slice
        Slice-axis ranges, in order.

    Raises
    ------
    dicom_node.errors.ResultBuildError
        If one slice alone contributes more than ``max_frames`` frames.
    """
    total = len(frames_per_slice)
    if max_frames <= 0 or int(frames_per_slice.sum()) <= max_frames:
        return [slice(0, total)]
    if int(frames_per_slice.max()) > max_frames:
        raise ResultBuildError(
            f"one slice needs {int(frames_per_slice.max())} frames, more than "
            f"max_frames={max_frames}; use LABELMAP or raise the limit"
        )
    runs: list[slice] = []
    start, count = 0, 0
    for index, frames in enumerate(frames_per_slice.tolist()):
        if count + frames > max_frames:
            runs.append(slice(start, index))
            start, count = index, 0
        count += frames
    runs.append(slice(start, total))
    return [run for run in runs if int(frames_per_slice[run].sum()) > 0]
