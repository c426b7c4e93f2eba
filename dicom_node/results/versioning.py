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

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

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


#: Added to a result object's Series Number per later version (v2 of SR 9902 is 10002),
#: so a viewer lists each version as its own series.
SERIES_NUMBER_STEP_PER_VERSION = 100


@dataclass(frozen=True)
class PredecessorDocument:
    """An SR object of the superseded result version, for PredecessorDocumentsSequence.

    References
    ----------
    DICOM PS3.3 C.17.2.1 SR Document General Module (Predecessor Documents
    Sequence); Table 10-11 SOP Instance Reference Macro (hierarchical).
    """

    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    sop_instance_uid: str


def mark_result_version(
    dataset: Dataset,
    version: int,
    supersedes: int | None,
    predecessors: Sequence[PredecessorDocument] = (),
    *,
    now: datetime | None = None,
) -> None:
    """Say in DICOM that a result object supersedes an earlier version (in place).

    For a first version nothing changes. For version ``n`` > 1 the Series
    Description names the version and the one it supersedes, the Series
    Number becomes ``number + 100 * (n - 1)``, SeriesDate/SeriesTime are the
    time of this version, and an SR (Modality ``SR``) lists the superseded
    version's SR objects in its Predecessor Documents Sequence.

    Parameters
    ----------
    dataset : pydicom.Dataset
        A SEG, SR or SC object built for the job.
    version : int
        Its result version.
    supersedes : int or None
        The version it replaces, None for a first version.
    predecessors : sequence of PredecessorDocument
        The SR objects of the superseded version (written into an SR only).
    now : datetime or None
        Time of this version (UTC-aware or local); now when None.

    References
    ----------
    DICOM PS3.3 C.7.3.1 General Series Module (Series Number, Series Date and
    Time); C.17.2.1 SR Document General Module (Predecessor Documents
    Sequence, 0040,A360).
    """
    if version <= 1 or supersedes is None:
        return
    dataset.SeriesDescription = versioned_description(
        str(dataset.get("SeriesDescription", "") or "AI result"), version, supersedes
    )
    number = dataset.get("SeriesNumber")
    if number not in (None, ""):
        dataset.SeriesNumber = int(number) + SERIES_NUMBER_STEP_PER_VERSION * (version - 1)
    at = (now or datetime.now(UTC)).astimezone()
    dataset.SeriesDate = at.strftime("%Y%m%d")
    dataset.SeriesTime = at.strftime("%H%M%S")
    if dataset.get("Modality") == "SR" and predecessors:
        items = []
        for study_uid in dict.fromkeys(p.study_instance_uid for p in predecessors):
            study = Dataset()
            study.StudyInstanceUID = study_uid
            series_items = []
            in_study = [p for p in predecessors if p.study_instance_uid == study_uid]
            for series_uid in dict.fromkeys(p.series_instance_uid for p in in_study):
                series = Dataset()
                series.SeriesInstanceUID = series_uid
                references = []
                for p in in_study:
                    if p.series_instance_uid != series_uid:
                        continue
                    reference = Dataset()
                    reference.ReferencedSOPClassUID = p.sop_class_uid
                    reference.ReferencedSOPInstanceUID = p.sop_instance_uid
                    references.append(reference)
                series.ReferencedSOPSequence = references
                series_items.append(series)
            study.ReferencedSeriesSequence = series_items
            items.append(study)
        dataset.PredecessorDocumentsSequence = items
