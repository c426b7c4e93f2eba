"""The node's exception hierarchy.

One base class; the split between :class:`TransientError` and
:class:`PermanentError` decides whether a job or a delivery is retried.
Leaf classes are named after the failure. Code that converts a library
exception always chains it (``raise ... from err``).
"""

from __future__ import annotations


class DicomNodeError(Exception):
    """Base class of every error raised by dicom-node."""


class TransientError(DicomNodeError):
    """A failure that may go away on retry (network, disk pressure, a busy peer)."""


class PermanentError(DicomNodeError):
    """A failure that the same input will always produce; retrying is pointless."""


class ConfigurationError(PermanentError):
    """The settings or the selection rules are invalid."""


class MissingExtraError(ConfigurationError, ImportError):
    """A selected feature needs an optional extra that is not installed.

    The message names the pip command (``pip install 'dicom-node[ich]'``). Also an
    :class:`ImportError`, so code that falls back when a library is absent still works.
    """


class InvalidUIDError(PermanentError, ValueError):
    """A value that must be a DICOM UID is not one (PS3.5 section 9.1)."""


class InvalidInstanceError(PermanentError):
    """A received instance cannot be understood: not DICOM, or a required UID missing or invalid."""


class SpoolWriteError(TransientError):
    """A received instance could not be written durably to the spool."""


class SeriesLoadError(PermanentError):
    """A series cannot be assembled into a volume (mixed geometry, missing pixels...)."""


class PipelineError(PermanentError):
    """A pipeline could not analyse a volume it was given."""


class NotAnalysableError(PipelineError):
    """The volume is not plausible input for the pipeline, or its output is not plausible.

    Not a failure of the node: the job succeeds and delivers a TID 1500 "not
    analysable" report that names the check and the reason, never a finding.

    Parameters
    ----------
    gate : str
        Name of the check that failed, for example ``"head_ct"`` or
        ``"brain_content"``.
    reason : str
        What was found, in words a radiologist understands; no patient
        identifiers.
    """

    def __init__(self, gate: str, reason: str) -> None:
        super().__init__(f"not analysable ({gate}): {reason}")
        self.gate = gate
        self.reason = reason


class ModelPackageError(PermanentError):
    """A model package is missing, incomplete, or its weights do not match the manifest sha256."""


class DatasetError(PermanentError):
    """A training or evaluation dataset breaks its documented layout (file and rule named)."""


class ResultBuildError(PermanentError):
    """A result object (SEG, SR) could not be built or failed validation."""


class DeliveryError(TransientError):
    """A result could not be delivered now (association refused, timeout, peer busy)."""


class DeliveryRefusedError(PermanentError):
    """The destination permanently refuses a result (SOP class not supported)."""


class IllegalTransitionError(DicomNodeError):
    """A job, series or delivery was asked to make a state change its state machine forbids."""


class InvalidQueryError(DicomNodeError, ValueError):
    """A filter of a list query (a state, a page) has a value the node does not know."""


class SeriesPurgedError(IllegalTransitionError):
    """A job of a series whose files retention purged cannot run again (nothing to read)."""


class JobCanceledError(DicomNodeError):
    """An operator canceled a RUNNING job; raised by the executor at a stage boundary.

    Neither transient nor permanent: the worker ends the job CANCELED, without
    retry and without recording or delivering results.
    """

    def __init__(self, job_id: int, stage: str) -> None:
        super().__init__(f"job {job_id} canceled by an operator; stopped {stage}")
        self.job_id = job_id
        self.stage = stage
