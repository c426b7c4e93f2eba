"""Model input for the learned ICH pipeline: labels, windows, in-plane resampling.

Shared by training (:mod:`dicom_node.training`) and inference
(:mod:`dicom_node.pipelines.ich`) so that both see exactly the same input.
No deep-learning framework is imported here.

The model sees each source slice resampled in plane to a fixed pixel spacing
(:attr:`IchInputSpec.pixel_spacing_mm`) on a fixed square grid centred on the
head, through several CT windows, stacked with its neighbouring source slices
(2.5D). Slices are never resampled along the slice axis: a prediction on the
model grid maps back to its own source frame by the inverse of the in-plane
affine transform, so masks return to the exact source grid (rows, columns,
SOP instance) of the series.

This module holds the labels, the input specification, the windows and the
2.5D stacking; the in-plane grid is in :mod:`dicom_node.imaging.ich_grid` and
the slabs of thin-slice series in :mod:`dicom_node.imaging.ich_slabs`, both
re-exported here.

References
----------
DICOM PS3.3 C.7.6.2.1.2 Pixel Spacing; PS3.3 C.11.2.1.2 Window Center and
Window Width; Ronneberger O, et al. U-Net. MICCAI 2015. Several CT windows as
channels and neighbouring slices stacked (2.5D) are the usual input of entries
to the RSNA Intracranial Hemorrhage Detection challenge (Flanders AE, et al.
Radiol Artif Intell 2020;2(3):e190211 describes its data and labels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dicom_node.imaging.ich_grid import (
    AIR_HU,
    HEAD_MIN_HU,
    InPlaneGrid,
    head_grid,
    to_model_grid,
    to_source_grid,
)
from dicom_node.imaging.ich_grid import _antialias_sigma as _antialias_sigma
from dicom_node.imaging.ich_slabs import SlabGrid, slab_grid
from dicom_node.imaging.windowing import Window

__all__ = [
    "AIR_HU",
    "HEAD_MIN_HU",
    "ICH_CLASSES",
    "ICH_SUBTYPES",
    "ICH_WINDOWS",
    "IchInputSpec",
    "InPlaneGrid",
    "SlabGrid",
    "head_grid",
    "labels_to_model_grid",
    "slab_grid",
    "stack_context",
    "subtype_label",
    "to_model_grid",
    "to_source_grid",
    "window_channels",
]

#: Hemorrhage subtypes in model label order: label value ``i + 1`` is
#: ``ICH_SUBTYPES[i]``; 0 is background. The names are the finding labels of
#: :mod:`dicom_node.results.codes`.
ICH_SUBTYPES: tuple[str, ...] = (
    "epidural hemorrhage",
    "subdural hemorrhage",
    "subarachnoid hemorrhage",
    "intraparenchymal hemorrhage",
    "intraventricular hemorrhage",
)

#: Number of model classes: background plus :data:`ICH_SUBTYPES`.
ICH_CLASSES: int = len(ICH_SUBTYPES) + 1

#: Windows the model sees as channels (brain 40/80, subdural 80/200, bone 600/2800 HU).
ICH_WINDOWS: tuple[Window, ...] = (
    Window(center_hu=40.0, width_hu=80.0),
    Window(center_hu=80.0, width_hu=200.0),
    Window(center_hu=600.0, width_hu=2800.0),
)


def subtype_label(subtype: str) -> int:
    """Return the label value (1-5) of a hemorrhage subtype.

    Parameters
    ----------
    subtype : str
        One of :data:`ICH_SUBTYPES`, for example ``"subdural hemorrhage"``.

    Returns
    -------
    int
        ``ICH_SUBTYPES.index(subtype) + 1``.

    Raises
    ------
    ValueError
        If ``subtype`` is not one of :data:`ICH_SUBTYPES`.
    """
    try:
        return ICH_SUBTYPES.index(subtype) + 1
    except ValueError as err:
        raise ValueError(
            f"unknown hemorrhage subtype {subtype!r}; known: {', '.join(ICH_SUBTYPES)}"
        ) from err


@dataclass(frozen=True)
class IchInputSpec:
    """How a series is turned into model input.

    Parameters
    ----------
    pixel_spacing_mm : float
        In-plane pixel spacing of the model grid (mm, both axes).
    size : int
        Rows and columns of the square model grid (pixels); ``size *
        pixel_spacing_mm`` is the field of view (mm).
    context_slices : int
        Neighbouring source slices on each side stacked as channels (2.5D);
        edge slices repeat themselves.
    windows : tuple of Window
        CT windows, one channel each per stacked slice.
    slab_thickness_mm : float or None
        Series whose slices are much thinner than this are analysed on slabs
        of about this thickness (mm): consecutive source slices averaged
        (:func:`slab_grid`), as the model was trained on 4-7 mm slices. None
        (packages before 1.1.0): every source slice is one model slice.

    References
    ----------
    DICOM PS3.3 C.11.2.1.2 Window Center and Window Width.
    """

    pixel_spacing_mm: float = 2.0
    size: int = 128
    context_slices: int = 1
    windows: tuple[Window, ...] = ICH_WINDOWS
    slab_thickness_mm: float | None = None

    @property
    def channels(self) -> int:
        """int: Number of input channels, ``len(windows) * (2 * context_slices + 1)``."""
        return len(self.windows) * (2 * self.context_slices + 1)

    def to_manifest(self) -> dict:
        """Return the spec as the ``input`` entry of a model manifest.

        Returns
        -------
        dict
            JSON types only: ``pixel_spacing_mm`` (mm), ``size`` (pixels),
            ``context_slices``, ``windows`` (``center_hu``, ``width_hu`` in HU)
            and a human-readable ``channel_order``; read back by
            :meth:`from_manifest`.
        """
        return {
            "pixel_spacing_mm": self.pixel_spacing_mm,
            "size": self.size,
            "context_slices": self.context_slices,
            "windows": [{"center_hu": w.center_hu, "width_hu": w.width_hu} for w in self.windows],
            "channel_order": "slice offset -k..+k, then window",
            **(
                {"slab_thickness_mm": self.slab_thickness_mm}
                if self.slab_thickness_mm is not None
                else {}
            ),
        }

    @classmethod
    def from_manifest(cls, entry: dict) -> IchInputSpec:
        """Build a spec from a manifest ``input`` entry.

        Parameters
        ----------
        entry : dict
            As written by :meth:`to_manifest`.

        Returns
        -------
        IchInputSpec

        Raises
        ------
        ValueError
            If a key is missing or a value is out of range.
        """
        try:
            spec = cls(
                pixel_spacing_mm=float(entry["pixel_spacing_mm"]),
                size=int(entry["size"]),
                context_slices=int(entry["context_slices"]),
                windows=tuple(
                    Window(center_hu=float(w["center_hu"]), width_hu=float(w["width_hu"]))
                    for w in entry["windows"]
                ),
                slab_thickness_mm=(
                    None
                    if entry.get("slab_thickness_mm") is None
                    else float(entry["slab_thickness_mm"])
                ),
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"model manifest input entry is incomplete: {err}") from err
        if spec.slab_thickness_mm is not None and spec.slab_thickness_mm <= 0:
            raise ValueError(f"model manifest slab_thickness_mm must be positive: {entry}")
        if spec.pixel_spacing_mm <= 0 or spec.size < 16 or spec.context_slices < 0:
            raise ValueError(f"model manifest input entry out of range: {entry}")
        if not spec.windows or any(w.width_hu <= 0 for w in spec.windows):
            raise ValueError(f"model manifest windows invalid: {entry['windows']}")
        return spec


def window_channels(hu_model: np.ndarray, spec: IchInputSpec) -> np.ndarray:
    """Apply the spec's windows to model-grid HU.

    Parameters
    ----------
    hu_model : numpy.ndarray
        float32 array (slices, size, size) in HU on the model grid.
    spec : IchInputSpec
        Model input specification.

    Returns
    -------
    numpy.ndarray
        uint8 array (slices, size, size, windows): 0 at the window's lower
        edge, 255 at its upper edge (linear, clipped).

    References
    ----------
    DICOM PS3.3 C.11.2.1.2.1 (linear window function; here without the 0.5
    offsets, which only matter for display).
    """
    out = np.empty((*hu_model.shape, len(spec.windows)), dtype=np.uint8)
    for i, window in enumerate(spec.windows):
        low = window.center_hu - window.width_hu / 2.0
        scaled = (hu_model - low) * (255.0 / window.width_hu)
        out[..., i] = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return out


def stack_context(
    windowed: np.ndarray, spec: IchInputSpec, indices: np.ndarray | None = None
) -> np.ndarray:
    """Stack each slice with its neighbours (2.5D) as float32 model input.

    Parameters
    ----------
    windowed : numpy.ndarray
        uint8 array (slices, size, size, windows) from :func:`window_channels`.
    spec : IchInputSpec
        Model input specification.
    indices : numpy.ndarray or None
        int array (n,) of slice indices to build (default: every slice).

    Returns
    -------
    numpy.ndarray
        float32 array (len(indices), size, size, spec.channels) in [0, 1];
        channel order: slice offset ``-k..+k``, then window. Neighbours past
        the first or last slice repeat the edge slice.
    """
    slices = windowed.shape[0]
    if indices is None:
        indices = np.arange(slices)
    k = spec.context_slices
    offsets = np.arange(-k, k + 1)
    neighbours = np.clip(indices[:, None] + offsets[None, :], 0, slices - 1)
    stacked = windowed[neighbours]  # (n, 2k+1, size, size, windows)
    stacked = np.moveaxis(stacked, 1, 3)  # (n, size, size, 2k+1, windows)
    n, h, w = stacked.shape[:3]
    return stacked.reshape(n, h, w, -1).astype(np.float32) * (1.0 / 255.0)


def labels_to_model_grid(
    labels: np.ndarray, grid: InPlaneGrid, *, min_fraction: float = 0.4
) -> np.ndarray:
    """Resample a label volume onto the model grid by per-class area fractions.

    Parameters
    ----------
    labels : numpy.ndarray
        uint8 array (slices, rows, columns): 0 background, 1..5 the subtypes
        of :data:`ICH_SUBTYPES`. Any other value (for example 255, subtype
        unknown) is treated as background; map it separately.
    grid : InPlaneGrid
        From :func:`head_grid`.
    min_fraction : float
        A model pixel takes the subtype with the largest area fraction when
        that fraction is at least this; else background. Below 0.5 so that
        thin blood (subarachnoid) survives the coarser grid.

    Returns
    -------
    numpy.ndarray
        uint8 array (slices, size, size), values 0..5.
    """
    out = np.zeros((labels.shape[0], grid.size, grid.size), dtype=np.uint8)
    best = np.zeros(out.shape, dtype=np.float32)
    for value in range(1, ICH_CLASSES):
        present = labels == value
        if not present.any():
            continue
        fraction = to_model_grid(present.astype(np.float32), grid, fill=0.0)
        better = (fraction >= min_fraction) & (fraction > best)
        out[better] = value
        best = np.maximum(best, fraction)
    return out
