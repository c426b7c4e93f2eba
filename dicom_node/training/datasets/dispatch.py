"""Opening a dataset by a ``KIND:PATH`` spec (:func:`open_dataset`), as the CLI takes it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from dicom_node.errors import DatasetError
from dicom_node.training.datasets.bhsd import read_bhsd
from dicom_node.training.datasets.common import LabelledSlices, LabelledVolume
from dicom_node.training.datasets.physionet import read_physionet_ct_ich
from dicom_node.training.datasets.renders import read_ich_renders
from dicom_node.training.datasets.rsna import read_rsna_ich

_READERS: dict[str, Callable[[Path], Iterator[LabelledVolume] | Iterator[LabelledSlices]]] = {
    "physionet": read_physionet_ct_ich,
    "bhsd": read_bhsd,
    "rsna": read_rsna_ich,
    "renders": read_ich_renders,
}


def open_dataset(spec: str) -> Iterator[LabelledVolume] | Iterator[LabelledSlices]:
    """Open a dataset named as ``KIND:PATH``, KIND one of physionet, bhsd, rsna, renders.

    Parameters
    ----------
    spec : str
        For example ``"bhsd:/data/label_192"`` or ``"rsna:/data/rsna-ich"``.

    Returns
    -------
    iterator of LabelledVolume or LabelledSlices
        The reader's iterator with its default options.

    Raises
    ------
    DatasetError
        If KIND is unknown or PATH is empty or not a folder.
    """
    kind, sep, path = spec.partition(":")
    if not sep or kind not in _READERS or not path:
        raise DatasetError(
            f"rule 'dataset is KIND:PATH with KIND one of {', '.join(_READERS)}' broken: "
            f"{spec[:200]!r}"
        )
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"{root}: rule 'the dataset root is a folder' broken: not found")
    return _READERS[kind](root)
