"""Read models of the job database for the dashboard and the CLI.

Jobs with filters and paging, one job with its timeline and stage durations,
series and deliveries. Everything here only reads; the functions that change
state are in :mod:`dicom_node.jobs.queue`.

The read layer is shared by the CLI, the web pages and the API, which import
it from here. It is split by what is read: :mod:`~dicom_node.queries.jobs`
(the jobs list and its rows), :mod:`~dicom_node.queries.job_detail` (one
job), :mod:`~dicom_node.queries.series`, :mod:`~dicom_node.queries.deliveries`
and :mod:`~dicom_node.queries.parsing` (query values); this package exports
every name of them.
"""

from __future__ import annotations

from dicom_node.queries.deliveries import _UNDELIVERED_ORDER as _UNDELIVERED_ORDER
from dicom_node.queries.deliveries import delivery_marks, list_deliveries
from dicom_node.queries.job_detail import _WHAT as _WHAT
from dicom_node.queries.job_detail import (
    ADMIN_ONLY_KEYS,
    TimelineEvent,
    job_detail,
    job_detail_for,
    job_detail_json,
)
from dicom_node.queries.jobs import (
    DETAIL_SIGNIFICANT_DIGITS,
    FINDING_FILTERS,
    JobFilter,
    finding_text,
    format_study_date,
    job_summary,
    list_jobs,
    pipelines_seen,
    rounded,
)
from dicom_node.queries.jobs import _finding_matches as _finding_matches
from dicom_node.queries.jobs import _job_query as _job_query
from dicom_node.queries.parsing import _RELATIVE as _RELATIVE
from dicom_node.queries.parsing import _UNIT_S as _UNIT_S
from dicom_node.queries.parsing import _enum_value as _enum_value
from dicom_node.queries.parsing import parse_since
from dicom_node.queries.series import (
    latest_job_of_series,
    list_series,
    not_eligible_series,
    result_objects_of_job,
    series_summary,
)

__all__ = [
    "ADMIN_ONLY_KEYS",
    "DETAIL_SIGNIFICANT_DIGITS",
    "FINDING_FILTERS",
    "JobFilter",
    "TimelineEvent",
    "delivery_marks",
    "finding_text",
    "format_study_date",
    "job_detail",
    "job_detail_for",
    "job_detail_json",
    "job_summary",
    "latest_job_of_series",
    "list_deliveries",
    "list_jobs",
    "list_series",
    "not_eligible_series",
    "parse_since",
    "pipelines_seen",
    "result_objects_of_job",
    "rounded",
    "series_summary",
]
