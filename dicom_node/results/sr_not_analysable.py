"""The TID 1500 report that says a series could not be analysed, and why.

:func:`build_not_analysable_report` writes a Comprehensive 3D SR in the
source study whose TID 1500 root container holds only the language, the
device observer context, the procedure reported and the "Qualitative
Evaluations" container (rows 12-14): "Not Evaluated" for each finding the
pipeline looks for, and the reason as comment. There is no SEG and no
measurement (DCMTK's TID 1500 validity check accepts Imaging Measurements
*or* Qualitative Evaluations). Importable from :mod:`dicom_node.results.sr`
too, which builds the Measurement Report of a result that was analysed.

References
----------
PS3.3 A.35.13 Comprehensive 3D SR IOD; PS3.16 TID 1500 Measurement Report
(rows 1-5, 12-14), TID 1001 Observation Context, TID 1204 Language of
Content Item and Descendants; CID 240; IHE AIR.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from dicom_node.errors import ResultBuildError
from dicom_node.pipelines.base import AlgorithmIdentity, PipelineResult
from dicom_node.results import codes
from dicom_node.results.equipment import EquipmentIdentity
from dicom_node.results.seg import NOT_FOR_DIAGNOSTIC_USE, content_label_for, replay_warnings
from dicom_node.results.source import prepare_source_images, uid_or_new
from dicom_node.results.sr_content import (
    _comprehensive_3d_sr,
    device_observer_context,
    qualitative_evaluations_container,
)

# TID 1204 default language: English (RFC 5646 "en-US"), as highdicom's MeasurementReport.
_DEFAULT_LANGUAGE = hd.sr.CodedConcept("en-US", "RFC5646", "English (United States)")

# The logger of dicom_node.results.sr, where this builder lived and is still imported from,
# so that its records keep their name.
logger = logging.getLogger("dicom_node.results.sr")


def build_not_analysable_report(
    source_images: Sequence[Dataset],
    *,
    pipeline: str,
    algorithm: AlgorithmIdentity,
    finding_labels: Sequence[str],
    reason: str,
    equipment: EquipmentIdentity,
    series_number: int = 9902,
    series_description: str | None = None,
    procedure_reported: Code | None = None,
    sop_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
) -> hd.sr.Comprehensive3DSR:
    """Build the TID 1500 report that says a series could not be analysed, and why.

    There is no SEG and no measurement: the root container holds the
    language, the device observer context, the procedure reported and the
    Qualitative Evaluations container (rows 12-14) with, for each finding
    the pipeline looks for, the statement "<finding>: Not Evaluated" (SCT
    373121007) and the comment "Not analysable: <reason>.". TID 1500 makes
    Imaging Measurements (row 6) conditional; DCMTK's implementation of TID
    1500 accepts a report with Qualitative Evaluations instead.

    Parameters
    ----------
    source_images : sequence of pydicom.Dataset
        The series' images (headers suffice), listed as evidence; not modified.
    pipeline : str
        Pipeline name (for the series description), for example ``"ich"``.
    algorithm : dicom_node.pipelines.base.AlgorithmIdentity
        The algorithm that would have run (device observer name and
        Contributing Equipment).
    finding_labels : sequence of str
        Labels of the findings the pipeline reports (for example
        ``["intracranial hemorrhage"]``).
    reason : str
        Why the series is not analysable, in words a radiologist understands
        (no patient identifiers).
    equipment : EquipmentIdentity
        The node.
    series_number : int
        Series Number of the SR series.
    series_description : str or None
        Series Description; default ``"AI <label> report (not for diagnostic use)"``.
    procedure_reported : pydicom.sr.coding.Code or None
        TID 1500 "Procedure reported"; when None, as
        :func:`dicom_node.results.sr.build_measurement_report`.
    sop_instance_uid, series_instance_uid : str or None
        UIDs; new when None.

    Returns
    -------
    highdicom.sr.Comprehensive3DSR
        COMPLETE, UNVERIFIED, PRELIMINARY; in the source study.

    Raises
    ------
    dicom_node.errors.ResultBuildError
        If the reason is empty, a label has no codes, the source images are not
        one series, or highdicom rejects the content.
    dicom_node.errors.InvalidUIDError
        If a given UID is not valid.

    References
    ----------
    PS3.3 A.35.13 Comprehensive 3D SR IOD; PS3.16 TID 1500 (rows 1-5, 12-14),
    TID 1001, TID 1204; IHE AIR.
    """
    started = time.perf_counter()
    reason = " ".join(str(reason).split())
    if not reason:
        raise ResultBuildError("a not-analysable report needs a reason")
    if not finding_labels:
        raise ResultBuildError("a not-analysable report needs the findings it could not evaluate")
    sources = prepare_source_images(source_images, require_geometry=False)
    sop_instance_uid = uid_or_new("SOPInstanceUID", sop_instance_uid)
    series_instance_uid = uid_or_new("SeriesInstanceUID", series_instance_uid)
    if series_description is None:
        series_description = f"AI {content_label_for(pipeline)} report {NOT_FOR_DIAGNOSTIC_USE}"
    seen: dict[str, Code] = {}
    for label in finding_labels:
        code = codes.finding_codes(label).finding_type
        seen.setdefault(code.value, code)
    statements = [(code, codes.NOT_EVALUATED, "") for code in seen.values()]
    stub = PipelineResult(pipeline, algorithm, [])
    if procedure_reported is None:
        procedure_reported = codes.PROCEDURES_REPORTED.get(pipeline, codes.CT_HEAD)
    try:
        root = hd.sr.ContainerContentItem(name=codes.IMAGING_MEASUREMENT_REPORT, template_id="1500")
        root.ContentSequence = hd.sr.ContentSequence()
        root.ContentSequence.extend(hd.sr.LanguageOfContentItemAndDescendants(_DEFAULT_LANGUAGE))
        root.ContentSequence.extend(device_observer_context(equipment, stub))
        root.ContentSequence.append(
            hd.sr.CodeContentItem(
                name=hd.sr.CodedConcept("121058", "DCM", "Procedure reported"),
                value=procedure_reported,
                relationship_type=hd.sr.RelationshipTypeValues.HAS_CONCEPT_MOD,
            )
        )
        root.ContentSequence.append(
            qualitative_evaluations_container(statements, comment=f"Not analysable: {reason}.")
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            document = _comprehensive_3d_sr(
                sources,
                root,
                equipment,
                algorithm,
                series_instance_uid=series_instance_uid,
                series_number=series_number,
                sop_instance_uid=sop_instance_uid,
                series_description=series_description,
            )
    except (ValueError, TypeError, AttributeError, KeyError) as err:
        raise ResultBuildError(f"highdicom rejected the not-analysable report: {err}") from err
    replay_warnings(caught, sop_instance_uid, logger)
    logger.info(
        "built not-analysable SR %s (series %s) in %.2f s",
        sop_instance_uid,
        series_instance_uid,
        time.perf_counter() - started,
    )
    return document
