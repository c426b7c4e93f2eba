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

import cv2
import numpy as np

from dicom_node.imaging.windowing import Window

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


#: Lowest HU used before resampling: GE padding (-1500 HU or lower) becomes air.
AIR_HU = -1024.0
#: HU above which a pixel counts as part of the head when centring the model grid.
HEAD_MIN_HU = -300.0


@dataclass(frozen=True)
class InPlaneGrid:
    """The in-plane affine map between a source slice and the model grid.

    Model pixel ``(u, v)`` (column, row) and source pixel ``(x, y)`` are
    related by ``[u, v] = matrix @ [x, y, 1]``. The same map holds for every
    slice of a series, because the slices of one series share Pixel Spacing,
    Rows and Columns.

    Parameters
    ----------
    matrix : numpy.ndarray
        float64 array of shape (2, 3), source pixel ``(x, y)`` = (column,
        row) -> model pixel ``(u, v)``; ``matrix[0, 0]`` and ``matrix[1, 1]``
        are the scale factors (source spacing / model spacing, both in mm).
    source_shape : tuple of int
        (rows, columns) of the source slices.
    size : int
        Rows and columns of the model grid (pixels).

    References
    ----------
    DICOM PS3.3 C.7.6.2.1.1 (pixel centres are integer indices); OpenCV
    ``warpAffine`` with ``WARP_INVERSE_MAP`` for the way back.
    """

    matrix: np.ndarray
    source_shape: tuple[int, int]
    size: int


def head_grid(
    hu: np.ndarray, pixel_spacing_mm: tuple[float, float], spec: IchInputSpec
) -> InPlaneGrid:
    """Centre the model grid on the head and scale to the model spacing.

    Parameters
    ----------
    hu : numpy.ndarray
        float32 array (slices, rows, columns) in HU.
    pixel_spacing_mm : tuple of float
        (row spacing, column spacing) of the source in mm, as DICOM Pixel
        Spacing.
    spec : IchInputSpec
        Model input specification.

    Returns
    -------
    InPlaneGrid
        The map from source pixels to model pixels; the centre of the head's
        bounding box (pixels above :data:`HEAD_MIN_HU` in any slice) lands
        on the centre of the model grid, pixel ``(size - 1) / 2``. Source
        pixels farther than ``size * spec.pixel_spacing_mm / 2`` mm from that
        centre along a row or column lie outside the model field of view.

    Raises
    ------
    ValueError
        If ``hu`` is not 3-D or no pixel is above :data:`HEAD_MIN_HU`.
    """
    if hu.ndim != 3:
        raise ValueError(f"hu must be (slices, rows, columns), got shape {hu.shape}")
    head = np.any(hu > HEAD_MIN_HU, axis=0)
    rows = np.flatnonzero(head.any(axis=1))
    cols = np.flatnonzero(head.any(axis=0))
    if rows.size == 0:
        raise ValueError("no pixel above -300 HU: the series shows no head")
    cy = 0.5 * (rows[0] + rows[-1])
    cx = 0.5 * (cols[0] + cols[-1])
    row_mm, col_mm = (float(v) for v in pixel_spacing_mm)
    sx = col_mm / spec.pixel_spacing_mm
    sy = row_mm / spec.pixel_spacing_mm
    centre = (spec.size - 1) / 2.0
    matrix = np.array([[sx, 0.0, centre - sx * cx], [0.0, sy, centre - sy * cy]], dtype=np.float64)
    return InPlaneGrid(matrix=matrix, source_shape=(hu.shape[1], hu.shape[2]), size=spec.size)


def _antialias_sigma(grid: InPlaneGrid) -> tuple[float, float]:
    sx, sy = grid.matrix[0, 0], grid.matrix[1, 1]
    return max(0.0, (1.0 / sx - 1.0) / 2.0), max(0.0, (1.0 / sy - 1.0) / 2.0)


def to_model_grid(
    images: np.ndarray, grid: InPlaneGrid, *, fill: float = AIR_HU, antialias: bool = True
) -> np.ndarray:
    """Resample source slices onto the model grid.

    Parameters
    ----------
    images : numpy.ndarray
        Array (slices, rows, columns) on the source grid, HU or per-class
        fractions in [0, 1].
    grid : InPlaneGrid
        From :func:`head_grid`.
    fill : float
        Value where a model pixel falls outside the source image (HU for an
        HU image, default :data:`AIR_HU`; 0 for fractions).
    antialias : bool
        Gaussian pre-filter of sigma ``(downscale - 1) / 2`` source pixels
        per axis before bilinear sampling (as skimage's ``rescale`` does);
        no filter on an axis that is upsampled.

    Returns
    -------
    numpy.ndarray
        float32 array (slices, size, size).
    """
    sigma_x, sigma_y = _antialias_sigma(grid)
    out = np.empty((images.shape[0], grid.size, grid.size), dtype=np.float32)
    for k in range(images.shape[0]):
        image: np.ndarray = np.asarray(images[k], dtype=np.float32)
        if antialias and (sigma_x > 0 or sigma_y > 0):
            image = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma_x or 1e-3, sigmaY=sigma_y or 1e-3)
        out[k] = cv2.warpAffine(
            image,
            grid.matrix,
            (grid.size, grid.size),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=float(fill),
        )
    return out


def to_source_grid(images: np.ndarray, grid: InPlaneGrid) -> np.ndarray:
    """Map model-grid images (probabilities) back to the source pixels.

    Parameters
    ----------
    images : numpy.ndarray
        float32 array (slices, size, size) or (slices, size, size, channels).
    grid : InPlaneGrid
        The grid the images were predicted on.

    Returns
    -------
    numpy.ndarray
        float32 array (slices, rows, columns[, channels]) on the source grid,
        bilinear, 0 outside the model field of view.

    Notes
    -----
    The fill is 0 in every channel, background included: outside the model
    field of view a softmax no longer sums to 1, and a test such as
    ``P(background) <= 0.5`` is true there.
    """
    rows, cols = grid.source_shape
    tail = images.shape[3:]
    out = np.zeros((images.shape[0], rows, cols, *tail), dtype=np.float32)
    for k in range(images.shape[0]):
        out[k] = cv2.warpAffine(
            np.ascontiguousarray(images[k], dtype=np.float32),
            grid.matrix,
            (cols, rows),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0.0,
        ).reshape(rows, cols, *tail)
    return out


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


@dataclass(frozen=True, eq=False)
class SlabGrid:
    """Consecutive source slices grouped into slabs of about the model's slice thickness.

    Parameters
    ----------
    slab_of_slice : numpy.ndarray
        int array (slices,): the slab each source slice belongs to, in slice
        order (non-decreasing, 0 .. slabs - 1).
    hu : numpy.ndarray
        float32 array (slabs, rows, columns): mean HU of each slab's source
        slices, on the source pixel grid (no in-plane resampling).

    References
    ----------
    Thick-slab averaging of thin axial CT (multiplanar reconstruction
    "average" mode): Prokop M, Galanski M. Spiral and Multislice Computed
    Tomography of the Body. Thieme; 2003, chapter 2.
    """

    slab_of_slice: np.ndarray
    hu: np.ndarray

    @property
    def slabs(self) -> int:
        """int: Number of slabs."""
        return int(self.hu.shape[0])

    @property
    def is_identity(self) -> bool:
        """bool: True when every slab is exactly one source slice."""
        return self.slabs == len(self.slab_of_slice)


def slab_grid(
    hu: np.ndarray, slice_positions_mm: np.ndarray, slab_thickness_mm: float | None
) -> SlabGrid:
    """Group thin source slices into slabs of about ``slab_thickness_mm``.

    A series whose median step along the slice normal is at least 0.7 times
    the slab thickness keeps one slab per slice. Otherwise runs of ``n =
    round(slab_thickness_mm / median step)`` consecutive slices form one
    slab (the last run is merged into its neighbour when shorter than
    ``n / 2``), and the slab's HU is their mean. Masks predicted on a slab
    go back to every one of its source slices, so every source frame keeps
    its own mask frame.

    Parameters
    ----------
    hu : numpy.ndarray
        float32 array (slices, rows, columns) in HU, slices ascending along
        the normal.
    slice_positions_mm : numpy.ndarray
        float array (slices,): position of each slice along the normal (mm).
    slab_thickness_mm : float or None
        Target slab thickness (mm); None keeps one slab per slice.

    Returns
    -------
    SlabGrid
        The grouping and the slab HU (the input array itself when nothing is
        grouped).

    Raises
    ------
    ValueError
        If ``hu`` is not 3-D or the positions do not match its slices.
    """
    if hu.ndim != 3 or len(slice_positions_mm) != hu.shape[0]:
        raise ValueError(
            f"hu {hu.shape} and {len(slice_positions_mm)} slice positions do not match"
        )
    slices = hu.shape[0]
    steps = np.diff(np.asarray(slice_positions_mm, dtype=np.float64))
    step = float(np.median(steps)) if steps.size else 0.0
    if slab_thickness_mm is None or step <= 0 or step >= 0.7 * slab_thickness_mm:
        return SlabGrid(slab_of_slice=np.arange(slices), hu=hu)
    n = max(1, int(round(slab_thickness_mm / step)))
    slab_of_slice = np.arange(slices) // n
    last = int(slab_of_slice[-1])
    if last > 0 and int((slab_of_slice == last).sum()) < n / 2:
        slab_of_slice[slab_of_slice == last] = last - 1
    count = int(slab_of_slice[-1]) + 1
    out = np.empty((count, hu.shape[1], hu.shape[2]), dtype=np.float32)
    for j in range(count):
        members = np.flatnonzero(slab_of_slice == j)
        out[j] = hu[members[0] : members[-1] + 1].mean(axis=0, dtype=np.float32)
    return SlabGrid(slab_of_slice=slab_of_slice, hu=out)
