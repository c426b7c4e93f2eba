"""Synthetic ICH training data on the model grid, generated once and cached.

Each case is the real base head CT, deformed and with zero to three
synthetic hemorrhages inserted (:func:`dicom_node.training.lesions.make_case`),
then resampled exactly as the inference pipeline resamples a series
(:mod:`dicom_node.imaging.ich_input`). The training set stores, per case, the
windowed model-grid slices (uint8) and the label slices; 2.5D stacks are built
on the fly from neighbouring slices.

To keep generation fast the base volume is first block-averaged in plane (to
about 1 mm pixels); lesions are still made at that finer resolution, with
partial volume across the slice thickness, before the resampling to the model
grid (2 mm by default).

References
----------
DICOM PS3.3 C.7.6.2 Image Plane Module (geometry of the downsampled volume).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from dicom_node.imaging.ich_input import (
    AIR_HU,
    ICH_SUBTYPES,
    IchInputSpec,
    head_grid,
    labels_to_model_grid,
    to_model_grid,
    window_channels,
)
from dicom_node.series.volume import CTVolume

logger = logging.getLogger(__name__)


def load_base_volume(base_dir: Path):
    """Load the base head CT series from a folder.

    Parameters
    ----------
    base_dir : Path
        Folder whose files (recursively) are one CT series.

    Returns
    -------
    CTVolume

    Raises
    ------
    SeriesLoadError
        If the files do not form one volume.
    """
    from dicom_node.series.volume import load_ct_volume, read_datasets

    files = sorted(p for p in Path(base_dir).rglob("*") if p.is_file() and p.name != "LICENSE")
    return load_ct_volume(read_datasets(files))


def downsample_volume(volume: CTVolume, factor: int) -> CTVolume:
    """Block-average a volume in plane by an integer factor, keeping exact geometry.

    Parameters
    ----------
    volume : CTVolume
        Source volume (slices, rows, columns).
    factor : int
        In-plane factor (1 returns ``volume``); rows and columns are cropped
        to a multiple of it.

    Returns
    -------
    CTVolume
        Volume of shape (slices, rows // factor, columns // factor), HU below
        :data:`~dicom_node.imaging.ich_input.AIR_HU` (scanner padding) raised
        to it before averaging, whose Pixel Spacing is ``factor`` times
        larger and whose Image Position (Patient) is the centre of each new
        first pixel, so every new pixel centre is the mean of the ``factor x
        factor`` source centres it covers.

    Raises
    ------
    ValueError
        If ``factor`` is not a positive integer.

    References
    ----------
    DICOM PS3.3 C.7.6.2.1.1 Image Position and Image Orientation.
    """
    if factor < 1 or int(factor) != factor:
        raise ValueError(f"factor must be a positive integer, got {factor}")
    if factor == 1:
        return volume
    slices, rows, cols = volume.shape
    rows_n, cols_n = rows // factor, cols // factor
    hu = np.maximum(volume.hu[:, : rows_n * factor, : cols_n * factor], AIR_HU)
    hu = hu.reshape(slices, rows_n, factor, cols_n, factor).mean(axis=(2, 4)).astype(np.float32)
    row_mm, col_mm = volume.pixel_spacing_mm
    shift = (factor - 1) / 2.0
    offset = volume.row_direction * col_mm * shift + volume.column_direction * row_mm * shift
    return replace(
        volume,
        hu=hu,
        image_positions_mm=volume.image_positions_mm + offset[None, :],
        pixel_spacing_mm=(row_mm * factor, col_mm * factor),
    )


@dataclass(frozen=True, eq=False)
class ModelGridCase:
    """One synthetic case resampled onto the model grid.

    Parameters
    ----------
    windowed : numpy.ndarray
        uint8 array (slices, size, size, windows), see
        :func:`dicom_node.imaging.ich_input.window_channels`.
    labels : numpy.ndarray
        uint8 array (slices, size, size): 0 background, 1..5 subtypes,
        255 (:data:`~dicom_node.pipelines.ich_layers.IGNORE_LABEL`) hemorrhage of
        unknown subtype (cases from real datasets only).
    subtypes : tuple of str
        Subtypes inserted (empty for a negative case); for a real dataset, the
        subtypes present in its voxel labels.
    volumes_ml : tuple of float
        Label-mask volume (mL, on the source grid) of each lesion, same order.
    seed : int
        Seed of the case (-1 for a case from a real dataset).
    mimics : tuple of str
        ``"kind: site"`` of each hard mimic or scanner change in the case
        (:attr:`dicom_node.training.lesions.SyntheticCase.mimics`); empty
        when none.
    """

    windowed: np.ndarray
    labels: np.ndarray
    subtypes: tuple[str, ...]
    volumes_ml: tuple[float, ...]
    seed: int
    mimics: tuple[str, ...] = ()


def case_on_model_grid(case, spec: IchInputSpec) -> ModelGridCase:
    """Resample a :class:`~dicom_node.training.lesions.SyntheticCase` onto the model grid.

    Parameters
    ----------
    case : SyntheticCase
        A synthetic case on any in-plane grid.
    spec : IchInputSpec
        Model input specification.

    Returns
    -------
    ModelGridCase
        Windowed HU and labels on the grid of
        :func:`~dicom_node.imaging.ich_input.head_grid`.

    Raises
    ------
    ValueError
        If the case shows no head (no pixel above -300 HU).
    """
    volume = case.volume
    grid = head_grid(volume.hu, volume.pixel_spacing_mm, spec)
    hu_model = to_model_grid(np.maximum(volume.hu, AIR_HU), grid)
    return ModelGridCase(
        windowed=window_channels(hu_model, spec),
        labels=labels_to_model_grid(case.labels, grid),
        subtypes=tuple(lesion.subtype for lesion in case.lesions),
        volumes_ml=tuple(float(lesion.mask_volume_ml) for lesion in case.lesions),
        seed=case.seed,
        mimics=mimic_names(case),
    )


def mimic_names(case) -> tuple[str, ...]:
    """``"kind: site"`` of every mimic of a :class:`~dicom_node.training.lesions.SyntheticCase`.

    Parameters
    ----------
    case : SyntheticCase
        A synthetic case (cases made before mimics existed have none).

    Returns
    -------
    tuple of str
    """
    return tuple(f"{m.kind}: {m.site}" for m in getattr(case, "mimics", ()))


_WORKER_STATE: dict = {}


def _init_worker(
    base: CTVolume,
    anatomy,
    spec: IchInputSpec | None,
    mimics: float | bool = 0.0,
    scanner: bool = False,
) -> None:
    cv2.setNumThreads(1)
    _WORKER_STATE.update(base=base, anatomy=anatomy, spec=spec, mimics=mimics, scanner=scanner)


def _make_one(item):
    from dicom_node.training.lesions import make_case

    mimics = _WORKER_STATE.get("mimics", 0.0)
    if isinstance(item, tuple):
        seed, subtypes, *rest = item
        if rest:
            mimics = rest[0]
    else:
        seed, subtypes = item, None
    case = make_case(
        _WORKER_STATE["base"],
        _WORKER_STATE["anatomy"],
        seed=seed,
        subtypes=subtypes,
        mimics=mimics,
        scanner=bool(_WORKER_STATE.get("scanner", False)),
    )
    spec = _WORKER_STATE["spec"]
    return case if spec is None else case_on_model_grid(case, spec)


def iter_synthetic_cases(
    base: CTVolume,
    seeds: Sequence,
    spec: IchInputSpec | None = None,
    *,
    processes: int = 2,
    mimics: float | bool = 0.0,
    scanner: bool = False,
) -> Iterator:
    """Generate synthetic cases in worker processes, yielding them in order.

    The anatomy of ``base`` is derived once, here, so a base without a head
    fails before any worker starts (a pool whose initializer raises restarts
    its workers forever); each item then costs one
    :func:`dicom_node.training.lesions.make_case`.

    Parameters
    ----------
    base : CTVolume
        The base head (full resolution, or :func:`downsample_volume` of it).
    seeds : sequence of int, of (int, tuple of str) or of (int, tuple of str, float)
        One case per item; a seed alone draws a random subtype mix
        (:func:`dicom_node.training.lesions.random_subtypes`), a pair fixes
        the subtypes (empty tuple: negative), a third element sets that
        case's mimic probability (overriding ``mimics``). The seed fixes
        deformation, lesions and mimics.
    spec : IchInputSpec or None
        Resample each case onto this model grid (:class:`ModelGridCase`);
        None yields the :class:`~dicom_node.training.lesions.SyntheticCase`
        on the base's own grid.
    processes : int
        Worker processes (1 runs in this process).
    mimics : float or bool
        Probability that a case gets 1-4 hard mimics
        (``make_case(mimics=...)``); 0 makes exactly the cases made before
        mimics existed.
    scanner : bool
        Vary kernel, noise and field of view (``make_case(scanner=...)``).

    Yields
    ------
    ModelGridCase or SyntheticCase
        In the order of ``seeds``.

    Raises
    ------
    ValueError
        If a subtype is unknown, the anatomy has no room for a lesion, or
        the base shows no intracranial space (raised in the worker and
        re-raised here).
    """
    from dicom_node.training.anatomy import derive_anatomy

    items = [s if isinstance(s, tuple) else int(s) for s in seeds]
    state = (base, derive_anatomy(base), spec, mimics, bool(scanner))
    if processes <= 1:
        _init_worker(*state)
        yield from map(_make_one, items)
        return
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes, initializer=_init_worker, initargs=state) as pool:
        yield from pool.imap(_make_one, items, chunksize=2)


def generate_model_grid_cases(
    base: CTVolume,
    seeds: Sequence,
    spec: IchInputSpec,
    *,
    processes: int = 2,
    progress: bool = True,
    mimics: float | bool = 0.0,
    scanner: bool = False,
) -> list[ModelGridCase]:
    """Generate synthetic cases on the model grid, with a progress bar.

    Parameters
    ----------
    base : CTVolume
        The base head, typically :func:`downsample_volume` of the real head.
    seeds : sequence of int or of (int, tuple of str)
        As :func:`iter_synthetic_cases` takes them.
    spec : IchInputSpec
        Model input specification.
    processes : int
        Worker processes (1 runs in this process).
    progress : bool
        Show a progress bar (rich).
    mimics : float or bool
        Probability of hard mimics per case, as :func:`iter_synthetic_cases`.
    scanner : bool
        Scanner variety, as :func:`iter_synthetic_cases`.

    Returns
    -------
    list of ModelGridCase
        In the order of ``seeds``.

    Raises
    ------
    ValueError
        As :func:`iter_synthetic_cases`.
    """
    from rich.progress import track

    iterator = iter_synthetic_cases(
        base, seeds, spec, processes=processes, mimics=mimics, scanner=scanner
    )
    return list(
        track(iterator, total=len(seeds), description="synthetic cases", disable=not progress)
    )


def save_cases(path: Path, cases: Sequence[ModelGridCase]) -> None:
    """Write model-grid cases to one compressed ``.npz`` file.

    Parameters
    ----------
    path : Path
        Output file.
    cases : sequence of ModelGridCase
        Cases that share slice count and grid size.

    Raises
    ------
    ValueError
        If the cases differ in shape (``numpy.stack``).
    KeyError
        If a case names a subtype outside
        :data:`~dicom_node.imaging.ich_input.ICH_SUBTYPES`.
    """
    subtype_index = {name: i for i, name in enumerate(ICH_SUBTYPES)}
    lesion_rows = [
        (i, subtype_index[s], v)
        for i, case in enumerate(cases)
        for s, v in zip(case.subtypes, case.volumes_ml, strict=True)
    ]
    np.savez_compressed(
        path,
        windowed=np.stack([c.windowed for c in cases]),
        labels=np.stack([c.labels for c in cases]),
        seeds=np.array([c.seed for c in cases], dtype=np.int64),
        lesions=np.array(lesion_rows, dtype=np.float64).reshape(-1, 3),
        mimics=np.array([json.dumps(list(c.mimics)) for c in cases], dtype=str),
    )


def load_cases(path: Path) -> list[ModelGridCase]:
    """Read cases written by :func:`save_cases`.

    Parameters
    ----------
    path : Path
        A file written by :func:`save_cases`.

    Returns
    -------
    list of ModelGridCase
    """
    with np.load(path) as data:
        windowed, labels, seeds, lesions = (
            data["windowed"],
            data["labels"],
            data["seeds"],
            data["lesions"],
        )
        # Files written before mimics existed have no "mimics" entry.
        mimics = (
            [tuple(json.loads(str(v))) for v in data["mimics"]]
            if "mimics" in data.files
            else [()] * len(seeds)
        )
    cases = []
    for i in range(len(seeds)):
        rows = lesions[lesions[:, 0] == i]
        cases.append(
            ModelGridCase(
                windowed=windowed[i],
                labels=labels[i],
                subtypes=tuple(ICH_SUBTYPES[int(r[1])] for r in rows),
                volumes_ml=tuple(float(r[2]) for r in rows),
                seed=int(seeds[i]),
                mimics=mimics[i],
            )
        )
    return cases
