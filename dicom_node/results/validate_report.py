"""dciodvfy's findings on one file: messages, allow-list entries, report, parser.

dciodvfy (dicom3tools) writes one finding per line, in the forms listed in
:mod:`dicom_node.results.validate`. :func:`parse_dciodvfy_output` turns that
output into a :class:`DciodvfyReport` of :class:`DciodvfyMessage` errors and
warnings; errors matching an explicit allow-list of :class:`AllowedError`
(known false positives of dciodvfy) are set apart, still reported. A line in
an unknown form that names an error, or a non-zero exit status with no error
parsed, is an error too, so nothing fails silently.
:meth:`DciodvfyMessage.redacted` hides person-name and Patient-group values
for logs.

Split from :mod:`dicom_node.results.validate` (issue 14), which runs
dciodvfy and still exports every name defined here.

References
----------
dicom3tools, https://www.dclunie.com/dicom3tools.html; PS3.3 (the IODs
dciodvfy checks); PS3.5 6.2 (PN values).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dicom_node.errors import ResultBuildError

_SEVERITY = re.compile(r"(?:^\s*|\s-\s)(?P<severity>Error|Warning|Abort)\s-\s(?P<text>.*)$")
_ERROR_WORD = re.compile(r"\b(Error|Abort)\b")
_TAG_PREFIX = re.compile(r"^\((?P<tag>0x[0-9a-fA-F]{4},0x[0-9a-fA-F]{4})\)")
_IOD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
# "PN [1] = <value>" and any "= <value>" on a line about a Patient-group tag.
_PN_VALUE = re.compile(r"(PN \[\d+\] = <)[^>]*(>)")
_ANY_VALUE = re.compile(r"(= <)[^>]*(>)")


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
