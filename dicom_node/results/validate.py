"""Validation of emitted objects with dciodvfy (dicom3tools).

Every object the node emits is checked with David Clunie's ``dciodvfy``
against the IOD its SOP Class names. dciodvfy writes its findings to stderr,
one per line, in these forms (checked on dicom3tools 1.00~20220618)::

    CTImage                                     <- the IOD it checked against
    Error - Missing attribute Type 2 Required Element=<PatientSex> Module=<Patient>
    Warning - Missing attribute or value that would be needed to build DICOMDIR - Study ID
    (0x0043,0x106d) US Area Size  - Warning - Explicit value representation doesn't match ...
    Abort - File open for read failed - "/no/such/file"

and exits with status 1 when it reports an error. Lines are parsed into
errors (``Error`` and ``Abort``) and warnings; a non-zero exit status without
any parsed error becomes an error too, so nothing fails silently.

False positives of dciodvfy itself can be accepted only through an explicit
allow-list passed by the caller (:class:`AllowedError`); accepted errors stay
visible in :attr:`DciodvfyReport.allowed_errors`. The node's BINARY SEG, SR
and SC need none. :data:`LABEL_MAP_SEGMENTATION_FALSE_POSITIVES` documents the
only kind found: this dciodvfy release predates the Label Map Segmentation
Storage SOP Class (Supplement 243, 2024), so it cannot find the IOD and checks
none of its modules. So that a label map SEG is not left unchecked,
:func:`validate_result_file` also runs dciodvfy on a copy relabelled as
Segmentation Storage; Supplement 243 documents both SOP classes with the same
IOD, so every module is checked, and only the exact differences the
supplement makes for LABELMAP are accepted
(:data:`LABEL_MAP_AS_SEGMENTATION_DIFFERENCES`).

Messages can quote attribute values, including patient names; use
:meth:`DciodvfyMessage.redacted` for logs.

The output is parsed (:class:`DciodvfyMessage`, :class:`AllowedError`,
:class:`DciodvfyReport`, :func:`parse_dciodvfy_output`) in
:mod:`dicom_node.results.validate_report`; those names are importable from
here too.

References
----------
dicom3tools, https://www.dclunie.com/dicom3tools.html (Debian package
``dicom3tools``); PS3.3 (the IODs it checks); PS3.5 (encoding).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pydicom

from dicom_node.errors import ResultBuildError

# The parsing of dciodvfy's output has a module of its own (issue 14); its names stay
# importable from here.
from dicom_node.results.validate_report import _ANY_VALUE as _ANY_VALUE
from dicom_node.results.validate_report import _ERROR_WORD as _ERROR_WORD
from dicom_node.results.validate_report import _IOD_NAME as _IOD_NAME
from dicom_node.results.validate_report import _PN_VALUE as _PN_VALUE
from dicom_node.results.validate_report import _SEVERITY as _SEVERITY
from dicom_node.results.validate_report import _TAG_PREFIX as _TAG_PREFIX
from dicom_node.results.validate_report import (
    AllowedError,
    DciodvfyReport,
    parse_dciodvfy_output,
)
from dicom_node.results.validate_report import DciodvfyMessage as DciodvfyMessage

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "dciodvfy (dicom3tools) is not installed or not on PATH; install the Debian/Ubuntu "
    "package 'dicom3tools' (apt-get install dicom3tools) or build it from "
    "https://www.dclunie.com/dicom3tools.html"
)


#: SOP Class UIDs of the two segmentation storage classes.
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
LABEL_MAP_SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"

#: dciodvfy 20220618 does not know the Label Map Segmentation Storage SOP Class
#: (1.2.840.10008.5.1.4.1.1.66.7, Supplement 243, in PS3.4/PS3.3 since 2024):
#: it cannot find the IOD and applies the BINARY/FRACTIONAL rule that segment
#: numbers start at 1 and increase by 1, whereas Supplement 243 ("Segment
#: Number not required to start at and increment by 1") lets a label map
#: describe segment 0 (highdicom writes the background as segment 0). Applied
#: only to instances of that SOP class (:func:`validate_result_file`).
LABEL_MAP_SEGMENTATION_FALSE_POSITIVES: tuple[AllowedError, ...] = (
    AllowedError(
        r"^Information Object Not found$",
        "dciodvfy release predates the Label Map Segmentation IOD",
    ),
    AllowedError(
        r"^SegmentNumber not monotonically increasing from one by one",
        "Label Map Segmentation may use segment number 0; dciodvfy applies the SEG rule",
    ),
)

#: dciodvfy 20220618 also does not know that Label Map Segmentation Storage is a
#: segmentation SOP class when an SR references it: a TID 1411 Referenced
#: Segment (IMAGE content item with Referenced Segment Number) pointing at a
#: label map SEG is reported as a segment number on a non-segmentation
#: reference. Accepted only for SRs that reference a Label Map SEG; such an SR
#: is also checked as a copy whose references name Segmentation Storage, with
#: no allow-list at all (:func:`validate_result_file`).
LABEL_MAP_REFERENCE_FALSE_POSITIVES: tuple[AllowedError, ...] = (
    AllowedError(
        r"^Shall not be present for Referenced SOP Class that is not segmentation - "
        r"attribute <ReferencedSegmentNumber>$",
        "dciodvfy release predates Label Map Segmentation Storage, a segmentation SOP class",
    ),
)

#: What dciodvfy reports on a correct label map SEG relabelled as Segmentation
#: Storage, each a difference Supplement 243 makes for Segmentation Type
#: LABELMAP: the new enumerated value; segment number 0 (background); and no
#: Segment Identification Sequence in the per-frame functional groups, because
#: a label map frame holds every segment (the pixel value is the segment
#: number) instead of one segment per frame.
LABEL_MAP_AS_SEGMENTATION_DIFFERENCES: tuple[AllowedError, ...] = (
    *LABEL_MAP_SEGMENTATION_FALSE_POSITIVES[1:],
    AllowedError(
        r"^Unrecognized enumerated value <LABELMAP> for value 1 of attribute "
        r"<Segmentation Type>$",
        "LABELMAP is the Segmentation Type of the Label Map Segmentation SOP Class",
    ),
    AllowedError(
        r"^Value is zero for value 1 of attribute <Segment Number>$",
        "a label map may describe segment 0 (the background)",
    ),
    AllowedError(
        r"^Missing attribute Type 1 Required Element=<SegmentIdentificationSequence> "
        r"Module=<SegmentationMacro>$",
        "a label map frame holds every segment; no per-frame Segment Identification",
    ),
)


def dciodvfy_executable(executable: str | None = None) -> str:
    """Locate the dciodvfy executable.

    Parameters
    ----------
    executable : str or None
        Explicit name or path; ``"dciodvfy"`` looked up on PATH when None.

    Returns
    -------
    str
        Absolute path of the executable.

    Raises
    ------
    dicom_node.errors.ResultBuildError
        If it cannot be found (with how to install it).
    """
    found = shutil.which(executable or "dciodvfy")
    if found is None:
        raise ResultBuildError(INSTALL_HINT)
    return found


def check_validation_setting(validation: str) -> str | None:
    """Check ``results.validation`` against this machine once, at start-up.

    Parameters
    ----------
    validation : {"dciodvfy", "if-available", "off"}
        The setting (:class:`dicom_node.config.ResultSettings`).

    Returns
    -------
    str or None
        A one-line notice when dciodvfy is wanted if available but is not
        installed (result objects are then checked only by highdicom while
        they are built); None otherwise.

    Raises
    ------
    dicom_node.errors.ConfigurationError
        If the setting is ``"dciodvfy"`` and dciodvfy is not on PATH: the node
        would fail every job, so it does not start.
    """
    from dicom_node.errors import ConfigurationError

    if validation == "off" or shutil.which("dciodvfy") is not None:
        return None
    if validation == "dciodvfy":
        raise ConfigurationError(f'results.validation = "dciodvfy", but {INSTALL_HINT}')
    return (
        "dciodvfy (dicom3tools) is not installed: result objects are checked by highdicom "
        'only (apt-get install dicom3tools, or set results.validation = "off" to silence this)'
    )


def run_dciodvfy(
    path: Path,
    *,
    allowed_errors: Sequence[AllowedError] = (),
    executable: str | None = None,
    timeout_s: float = 120.0,
) -> DciodvfyReport:
    """Validate a DICOM file with dciodvfy and parse what it reports.

    Parameters
    ----------
    path : pathlib.Path
        A DICOM Part 10 file.
    allowed_errors : sequence of AllowedError
        Known false positives of dciodvfy to set apart (explicit allow-list;
        empty by default, and empty for the node's own SEG and SR).
    executable : str or None
        dciodvfy name or path; looked up on PATH when None.
    timeout_s : float
        Seconds after which dciodvfy is stopped.

    Returns
    -------
    DciodvfyReport
        Parsed errors and warnings; call :meth:`DciodvfyReport.raise_for_errors`
        to turn remaining errors into an exception.

    Raises
    ------
    dicom_node.errors.ResultBuildError
        If dciodvfy is not installed, cannot be started, or runs longer than
        ``timeout_s``.

    References
    ----------
    dicom3tools dciodvfy; PS3.3 Information Object Definitions.
    """
    program = dciodvfy_executable(executable)
    path = Path(path)
    try:
        completed = subprocess.run(  # fixed program, path argument only
            [program, str(path)],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise ResultBuildError(f"dciodvfy ran longer than {timeout_s} s on {path.name}") from err
    except OSError as err:
        raise ResultBuildError(f"cannot run dciodvfy: {err}") from err
    report = parse_dciodvfy_output(
        completed.stdout + completed.stderr,
        path=path,
        returncode=completed.returncode,
        allowed_errors=allowed_errors,
    )
    logger.info(
        "dciodvfy %s: IOD %s, %d error(s), %d warning(s), %d allowed error(s)",
        path.name,
        report.iod,
        len(report.errors),
        len(report.warnings),
        len(report.allowed_errors),
    )
    for message in report.errors:
        logger.warning("dciodvfy %s: %s", path.name, message.redacted())
    for message in report.allowed_errors:
        logger.info("dciodvfy %s (allowed): %s", path.name, message.redacted())
    return report


def _relabel_label_map(dataset: pydicom.Dataset) -> bool:
    """Replace every Label Map Segmentation Storage UID by Segmentation Storage, in place.

    Returns whether any value was replaced (SOP Class UID, Referenced SOP
    Class UIDs in sequences at any depth).
    """
    found = False

    def _walk(item: pydicom.Dataset) -> None:
        nonlocal found
        for element in item:
            if element.VR == "SQ":
                for child in element.value:
                    _walk(child)
            elif element.VR == "UI" and str(element.value) == LABEL_MAP_SEGMENTATION_STORAGE:
                element.value = SEGMENTATION_STORAGE
                found = True

    _walk(dataset)
    return found


def validate_result_file(
    path: Path, *, executable: str | None = None, timeout_s: float = 120.0
) -> DciodvfyReport:
    """Validate an object the node emits, with the allow-list its SOP class needs.

    BINARY SEG, SR and SC are checked as they are, with no allow-list. A Label
    Map Segmentation is checked twice: as it is, accepting only
    :data:`LABEL_MAP_SEGMENTATION_FALSE_POSITIVES`; and as a temporary copy
    relabelled Segmentation Storage, so that dciodvfy checks every module of
    the (shared) Segmentation IOD, accepting only
    :data:`LABEL_MAP_AS_SEGMENTATION_DIFFERENCES`. An SR that references a
    label map SEG is checked as it is, accepting only
    :data:`LABEL_MAP_REFERENCE_FALSE_POSITIVES`, and as a copy whose
    references name Segmentation Storage, accepting nothing. The errors and
    warnings of both runs are merged into one report.

    Parameters
    ----------
    path : pathlib.Path
        A DICOM Part 10 file written by the node.
    executable : str or None
        dciodvfy name or path; looked up on PATH when None.
    timeout_s : float
        Seconds after which one dciodvfy run is stopped.

    Returns
    -------
    DciodvfyReport
        Errors left after the allow-list (call
        :meth:`DciodvfyReport.raise_for_errors`), warnings, accepted errors.

    Raises
    ------
    dicom_node.errors.ResultBuildError
        If dciodvfy is missing, fails to run, or the file cannot be read.

    References
    ----------
    dicom3tools dciodvfy; PS3.3 A.51 Segmentation IOD; DICOM Supplement 243
    Label Map Segmentation.
    """
    path = Path(path)
    try:
        dataset = pydicom.dcmread(path)
        sop_class_uid = str(dataset.SOPClassUID)
    except Exception as err:  # any read failure means an invalid file
        raise ResultBuildError(f"cannot read {path.name} for validation: {err}") from err
    if sop_class_uid == LABEL_MAP_SEGMENTATION_STORAGE:
        direct_allowed = LABEL_MAP_SEGMENTATION_FALSE_POSITIVES
        surrogate_allowed = LABEL_MAP_AS_SEGMENTATION_DIFFERENCES
    elif _relabel_label_map(dataset):
        # An SR (or another object) that references a label map SEG.
        direct_allowed = LABEL_MAP_REFERENCE_FALSE_POSITIVES
        surrogate_allowed = ()
    else:
        return run_dciodvfy(path, executable=executable, timeout_s=timeout_s)
    direct = run_dciodvfy(
        path, allowed_errors=direct_allowed, executable=executable, timeout_s=timeout_s
    )
    _relabel_label_map(dataset)
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    with tempfile.TemporaryDirectory(prefix="dciodvfy-") as tmp:
        surrogate_path = Path(tmp) / path.name
        dataset.save_as(surrogate_path, enforce_file_format=True)
        surrogate = run_dciodvfy(
            surrogate_path,
            allowed_errors=surrogate_allowed,
            executable=executable,
            timeout_s=timeout_s,
        )
    return DciodvfyReport(
        path=path,
        iod=surrogate.iod,
        errors=direct.errors + surrogate.errors,
        warnings=direct.warnings + surrogate.warnings,
        allowed_errors=direct.allowed_errors + surrogate.allowed_errors,
        other_lines=direct.other_lines + surrogate.other_lines,
        returncode=max(direct.returncode, surrogate.returncode),
        output=direct.output + surrogate.output,
    )
