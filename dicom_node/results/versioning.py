"""Result versions: a series analysed again yields new series that say what they supersede.

When instances of a series arrive after its job started, the series is
analysed again and the new results are a new *result version*: new series
(new Series and SOP Instance UIDs, as every result object has), and a Series
Description that names the version and the one it supersedes, for example
``AI ICH SEG v2, supersedes v1 (not for diagnostic use)``. The earlier objects
stay as they are in the PACS; nothing is sent twice.

Series Description is LO (at most 64 characters): a description that would
be longer names findings by their abbreviation (``ICH``) and, if still too
long, is shortened before the version.

References
----------
DICOM PS3.3 C.7.3.1 General Series Module (Series Description, LO);
PS3.5 6.2 (LO: 64 characters maximum).
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from dicom_node.results.codes import finding_codes, known_finding_labels
from dicom_node.results.seg import NOT_FOR_DIAGNOSTIC_USE

#: Longest Series Description (VR LO).
MAX_DESCRIPTION_CHARS = 64


def versioned_description(description: str, version: int, supersedes: int | None) -> str:
    """Return ``description`` naming its result version and the version it supersedes.

    Parameters
    ----------
    description : str
        The object's Series Description, for example
        ``"AI intracranial hemorrhage SEG (not for diagnostic use)"``.
    version : int
        Result version of the object (1 for the first analysis).
    supersedes : int or None
        The version it replaces; None for a first version.

    Returns
    -------
    str
        Unchanged for version 1; otherwise ``"<description> v<n>, supersedes
        v<m>"`` with the "not for diagnostic use" label kept last, at most 64
        characters.

    References
    ----------
    DICOM PS3.3 C.7.3.1; PS3.5 6.2 (LO).
    """
    if version <= 1 or supersedes is None:
        return description[:MAX_DESCRIPTION_CHARS]
    suffix = f" v{version}, supersedes v{supersedes}"
    label = ""
    base = description.strip()
    if base.endswith(NOT_FOR_DIAGNOSTIC_USE):
        base = base[: -len(NOT_FOR_DIAGNOSTIC_USE)].rstrip()
        label = " " + NOT_FOR_DIAGNOSTIC_USE
    room = MAX_DESCRIPTION_CHARS - len(suffix) - len(label)
    if len(base) > room:
        for finding in sorted(known_finding_labels(), key=len, reverse=True):
            if finding in base:
                base = base.replace(finding, finding_codes(finding).abbreviation)
    if len(base) > room:
        base = base[: max(0, room)].rstrip()
    return f"{base}{suffix}{label}"[:MAX_DESCRIPTION_CHARS]


def mark_result_version(dataset: Dataset, version: int, supersedes: int | None) -> None:
    """Write the result version into a result object's Series Description (in place).

    Parameters
    ----------
    dataset : pydicom.Dataset
        A SEG, SR or SC object built for the job.
    version : int
        Its result version.
    supersedes : int or None
        The version it replaces, None for a first version.

    References
    ----------
    DICOM PS3.3 C.7.3.1 General Series Module.
    """
    if version <= 1 or supersedes is None:
        return
    dataset.SeriesDescription = versioned_description(
        str(dataset.get("SeriesDescription", "") or "AI result"), version, supersedes
    )
