"""Slabs of the learned ICH pipeline: thin source slices averaged to the model's thickness.

:func:`slab_grid` groups consecutive source slices of a thin-slice series
into slabs of about the thickness the model was trained on, and
:class:`SlabGrid` records which slab each source slice belongs to, so that a
mask predicted on a slab returns to every one of its source frames. Split out
of :mod:`dicom_node.imaging.ich_input`, which re-exports every name here.

References
----------
Thick-slab averaging of thin axial CT (multiplanar reconstruction "average"
mode): Prokop M, Galanski M. Spiral and Multislice Computed Tomography of the
Body. Thieme; 2003, chapter 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
