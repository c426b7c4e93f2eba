"""Reading a job's result summary (the JSON document a pipeline run leaves on its job).

The summary is written by :class:`dicom_node.jobs.executor.JobExecutor` from the pipeline's
findings (``{"findings": [{"label", "present", "volume_ml", ...}], ...}``). These readers
sit in ``results/`` so that the notifier, the query layer and the exporter can share them
without importing each other.
"""

from __future__ import annotations

from typing import Any

__all__ = ["has_positive_finding"]


def has_positive_finding(summary: dict[str, Any] | None) -> bool:
    """True when a job's result summary has a finding with ``present`` true.

    Parameters
    ----------
    summary : dict or None
        The job's ``result_summary`` (None for a job that has not produced one).

    Returns
    -------
    bool
        False for None, an empty summary or one whose findings are all absent.
    """
    return any(bool(f.get("present")) for f in (summary or {}).get("findings", []))
