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
visible in :attr:`DciodvfyReport.allowed_errors`. The node's own SEG and SR
need none. :data:`LABEL_MAP_SEGMENTATION_FALSE_POSITIVES` documents the only
kind found so far, on objects made by others: this dciodvfy release predates
the Label Map Segmentation IOD (2024) and rejects such instances.

Messages can quote attribute values, including patient names; use
:meth:`DciodvfyMessage.redacted` for logs.

References
----------
dicom3tools, https://www.dclunie.com/dicom3tools.html (Debian package
``dicom3tools``); PS3.3 (the IODs it checks); PS3.5 (encoding).
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dicom_node.errors import ResultBuildError

logger = logging.getLogger(__name__)

_SEVERITY = re.compile(r"(?:^\s*|\s-\s)(?P<severity>Error|Warning|Abort)\s-\s(?P<text>.*)$")
_ERROR_WORD = re.compile(r"\b(Error|Abort)\b")
_TAG_PREFIX = re.compile(r"^\((?P<tag>0x[0-9a-fA-F]{4},0x[0-9a-fA-F]{4})\)")
_IOD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
# "PN [1] = <value>" and any "= <value>" on a line about a Patient-group tag.
_PN_VALUE = re.compile(r"(PN \[\d+\] = <)[^>]*(>)")
_ANY_VALUE = re.compile(r"(= <)[^>]*(>)")

INSTALL_HINT = (
    "dciodvfy (dicom3tools) is not installed or not on PATH; install the Debian/Ubuntu "
    "package 'dicom3tools' (apt-get install dicom3tools) or build it from "
    "https://www.dclunie.com/dicom3tools.html"
)


@dataclass(frozen=True)
class DciodvfyMessage:
    """One finding reported by dciodvfy.

    Parameters
    ----------
    severity : str
        ``"Error"``, ``"Warning"`` or ``"Abort"``.
    text : str
        The message after the severity, as dciodvfy wrote it.
    tag : str or None
        The attribute tag the line starts with, as ``"0x0043,0x106d"``, if any.
    line : str
        The whole output line.
    """

    severity: str
    text: str
    tag: str | None
    line: str

    def redacted(self) -> str:
        """Return the line with person-name values and Patient-group values hidden.

        Returns
        -------
        str
            The line, safe for logs: ``PN [n] = <...>`` values and every
            ``= <...>`` value on a line about a (0010,xxxx) attribute are
            replaced by ``<redacted>``.
        """
        line = _PN_VALUE.sub(r"\1redacted\2", self.line)
        if "(0x0010," in line:
            line = _ANY_VALUE.sub(r"\1redacted\2", line)
        return line


@dataclass(frozen=True)
class AllowedError:
    """An error kind that is a known false positive of dciodvfy, with its reason.

    Parameters
    ----------
    pattern : str
        Regular expression searched in the error text.
    reason : str
        Why the error is a false positive of dciodvfy and not of the object
        (kept with the report, so that the decision is reviewable).
    """

    pattern: str
    reason: str

    def matches(self, message: DciodvfyMessage) -> bool:
        """Return whether ``message`` is an instance of this allowed error.

        Parameters
        ----------
        message : DciodvfyMessage
            An ``Error`` message.

        Returns
        -------
        bool
            True if the pattern is found in the message text.
        """
        return re.search(self.pattern, message.text) is not None


#: dciodvfy 20220618 does not know the Label Map Segmentation IOD
#: (SOP Class 1.2.840.10008.5.1.4.1.1.66.7, added to PS3.3 in 2024): it cannot
#: find the IOD and applies the BINARY/FRACTIONAL rule that segment numbers
#: start at 1, whereas a label map may describe segment 0. Not applied by
#: default; the node emits BINARY segmentations only.
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


@dataclass(frozen=True)
class DciodvfyReport:
    """What dciodvfy said about one file.

    Parameters
    ----------
    path : pathlib.Path
        The file checked.
    iod : str or None
        The IOD dciodvfy checked against (``"Segmentation"``,
        ``"Comprehensive3DSR"``...), None if it did not say.
    errors : tuple of DciodvfyMessage
        Errors and aborts not covered by the allow-list.
    warnings : tuple of DciodvfyMessage
        Warnings.
    allowed_errors : tuple of DciodvfyMessage
        Errors matched by the caller's allow-list (still reported).
    other_lines : tuple of str
        Output lines that are neither messages nor the IOD name.
    returncode : int
        dciodvfy's exit status (1 when it found an error).
    output : str
        The raw output (stdout then stderr).
    """

    path: Path
    iod: str | None
    errors: tuple[DciodvfyMessage, ...]
    warnings: tuple[DciodvfyMessage, ...]
    allowed_errors: tuple[DciodvfyMessage, ...]
    other_lines: tuple[str, ...]
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        """bool: True when no error remains after the allow-list."""
        return not self.errors

    def raise_for_errors(self) -> None:
        """Raise if dciodvfy reported an error not covered by the allow-list.

        Raises
        ------
        dicom_node.errors.ResultBuildError
            Listing the (redacted) error lines.
        """
        if self.errors:
            lines = "; ".join(message.redacted() for message in self.errors)
            raise ResultBuildError(
                f"dciodvfy found {len(self.errors)} error(s) in {self.path.name}: {lines}"
            )


def parse_dciodvfy_output(
    output: str,
    *,
    path: Path,
    returncode: int,
    allowed_errors: Sequence[AllowedError] = (),
) -> DciodvfyReport:
    """Parse dciodvfy's output into a report.

    Parameters
    ----------
    output : str
        Everything dciodvfy wrote (stdout and stderr).
    path : pathlib.Path
        The file that was checked.
    returncode : int
        dciodvfy's exit status.
    allowed_errors : sequence of AllowedError
        Known false positives to set apart; empty by default.

    Returns
    -------
    DciodvfyReport
        Errors, warnings, allowed errors and unparsed lines. A line in an
        unknown form that contains the word ``Error`` or ``Abort`` counts as an
        error, and a non-zero exit status with no parsed error adds a
        synthetic ``Error`` message, so that no failure is dropped.
    """
    errors: list[DciodvfyMessage] = []
    warnings: list[DciodvfyMessage] = []
    allowed: list[DciodvfyMessage] = []
    other: list[str] = []
    iod: str | None = None
    for raw_line in output.splitlines():
        line = raw_line.rstrip()
        if not line.strip():
            continue
        match = _SEVERITY.search(line)
        if match is None:
            if iod is None and _IOD_NAME.match(line.strip()):
                iod = line.strip()
            elif _ERROR_WORD.search(line):
                # An error in a form this parser does not know: never drop it.
                errors.append(DciodvfyMessage("Error", line.strip(), None, line))
            else:
                other.append(line)
            continue
        tag_match = _TAG_PREFIX.match(line)
        message = DciodvfyMessage(
            severity=match["severity"],
            text=match["text"].strip(),
            tag=tag_match["tag"] if tag_match else None,
            line=line,
        )
        if message.severity == "Warning":
            warnings.append(message)
        elif any(rule.matches(message) for rule in allowed_errors):
            allowed.append(message)
        else:
            errors.append(message)
    if returncode != 0 and not errors and not allowed:
        text = f"dciodvfy exited with status {returncode} without reporting an error"
        errors.append(DciodvfyMessage("Error", text, None, f"Error - {text}"))
    return DciodvfyReport(
        path=path,
        iod=iod,
        errors=tuple(errors),
        warnings=tuple(warnings),
        allowed_errors=tuple(allowed),
        other_lines=tuple(other),
        returncode=returncode,
        output=output,
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
        completed = subprocess.run(  # noqa: S603 - fixed program, path argument only
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
