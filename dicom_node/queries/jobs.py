"""The jobs list: filters, paging and one row per job, for the CLI, the dashboard and the API.

:class:`JobFilter` and :func:`list_jobs` (with the finding filter, which
reads the JSON result summary), :func:`pipelines_seen`, and the row itself
(:func:`job_summary`) with the texts it is made of (:func:`finding_text`,
:func:`format_study_date`, :func:`rounded`). Split from the former
``dicom_node/queries.py`` (issue 14); every name is still exported by
:mod:`dicom_node.queries`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from dicom_node.db.models import Job, JobState, Series
from dicom_node.results.summary import has_positive_finding

#: Values of the finding filter.
FINDING_FILTERS = ("present", "absent", "none")


@dataclass(frozen=True)
class JobFilter:
    """Filters of the jobs list.

    Parameters
    ----------
    state : str or None
        A :class:`~dicom_node.db.models.JobState` value.
    pipeline : str or None
    since : datetime or None
        Jobs created at or after this time (UTC).
    finding : str or None
        ``present`` (a positive finding), ``absent`` (results, no positive
        finding) or ``none`` (no results).
    series_instance_uid : str or None
    """

    state: str | None = None
    pipeline: str | None = None
    since: datetime | None = None
    finding: str | None = None
    series_instance_uid: str | None = None


def _finding_matches(summary: dict[str, Any] | None, finding: str) -> bool:
    has_results = bool((summary or {}).get("findings"))
    if finding == "present":
        return has_positive_finding(summary)
    if finding == "absent":
        return has_results and not has_positive_finding(summary)
    return not has_results


def _job_query(filters: JobFilter) -> Select:
    query = select(Job, Series).join(Series, Job.series_id == Series.id)
    if filters.state:
        query = query.where(Job.state == JobState(filters.state.upper()))
    if filters.pipeline:
        query = query.where(Job.pipeline == filters.pipeline)
    if filters.since is not None:
        query = query.where(Job.created_at >= filters.since)
    if filters.series_instance_uid:
        query = query.where(Series.series_instance_uid == filters.series_instance_uid)
    return query


def list_jobs(
    session: Session, filters: JobFilter, *, offset: int = 0, limit: int = 50
) -> tuple[list[tuple[Job, Series]], int]:
    """Jobs matching ``filters``, newest first, one page at a time.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Open session on the job database.
    filters : JobFilter
        What to list.
    offset, limit : int
        The page.

    Returns
    -------
    (list of (Job, Series), int)
        The page and the number of matching jobs.

    Raises
    ------
    ValueError
        If ``filters.state`` or ``filters.finding`` is not a known value.
    """
    if filters.finding and filters.finding not in FINDING_FILTERS:
        raise ValueError(f"finding must be one of {FINDING_FILTERS}, got {filters.finding!r}")
    query = _job_query(filters).order_by(Job.id.desc())
    if not filters.finding:
        total = session.scalar(select(func.count()).select_from(query.subquery()))
        rows = session.execute(query.offset(offset).limit(limit)).all()
        return [(job, series) for job, series in rows], int(total or 0)
    # Findings live in the JSON summary: filter those in Python, then page.
    ids = [
        job_id
        for job_id, summary in session.execute(
            query.with_only_columns(Job.id, Job.result_summary)
        ).all()
        if _finding_matches(summary, filters.finding)
    ]
    page = ids[offset : offset + limit]
    if not page:
        return [], len(ids)
    rows = session.execute(
        select(Job, Series).join(Series, Job.series_id == Series.id).where(Job.id.in_(page))
    ).all()
    by_id = {job.id: (job, series) for job, series in rows}
    return [by_id[i] for i in page if i in by_id], len(ids)


def pipelines_seen(session: Session) -> list[str]:
    """Pipeline names that have jobs (for the filter's choices)."""
    return list(session.scalars(select(Job.pipeline).distinct().order_by(Job.pipeline)))


#: Significant digits of the floats in a job's pipeline details as shown to people.
DETAIL_SIGNIFICANT_DIGITS = 4


def rounded(value: Any, digits: int = DETAIL_SIGNIFICANT_DIGITS) -> Any:
    """``value`` with every float rounded to ``digits`` significant digits (JSON types kept).

    Pipeline details keep full precision in the database (evaluation reads them);
    a score of 0.14057545006824265 or a volume of 12.190766280026013 mL is
    shown as 0.1406 and 12.19.
    """
    if isinstance(value, float):
        return float(f"{value:.{digits}g}") if value == value else value
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v, digits) for v in value]
    return value


def finding_text(findings: Sequence[dict[str, Any]]) -> str:
    """``label present|absent[, side site] (volume mL)`` per finding, joined with ``; ``.

    A present finding with a ``laterality`` or ``finding_site`` (for CTA, the
    side and segment of a suspected large-vessel occlusion) names them, for
    example ``vessel occlusion present, left middle cerebral artery m1 segment``.
    """
    parts = []
    for f in findings:
        word = "present" if f.get("present") else "absent"
        volume = f.get("volume_ml")
        where = " ".join(str(f[k]) for k in ("laterality", "finding_site") if f.get(k))
        parts.append(
            f"{f.get('label')} {word}"
            + (f", {where}" if where and f.get("present") else "")
            + (f" ({volume:.2f} mL)" if volume is not None else "")
        )
    return "; ".join(parts)


def format_study_date(value: str | None) -> str:
    """A DICOM DA value (``YYYYMMDD``, PS3.5 6.2) as ``YYYY-MM-DD``; "-" when empty.

    Anything else (a non-conformant value some senders write) is shown as received.
    """
    if value and len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value or "-"


def job_summary(job: Job, series: Series) -> dict[str, Any]:
    """One row of the jobs list as JSON-ready values, for the CLI, the dashboard and the API.

    UIDs, the study's Accession Number and Study Date (``YYYYMMDD``, as
    received; empty when the instances had none), no patient name, ID or
    birth date. ``series`` must be attached to an open session (its study is
    loaded).
    """
    summary = job.result_summary or {}
    findings = summary.get("findings", [])
    study = series.study
    return {
        "job_id": job.id,
        "state": str(job.state),
        "pipeline": job.pipeline,
        "algorithm": summary.get("algorithm", {}).get("name"),
        "study_instance_uid": study.study_instance_uid if study is not None else None,
        "accession_number": study.accession_number if study is not None else "",
        "study_date": study.study_date if study is not None else "",
        "series_instance_uid": series.series_instance_uid,
        "series_id": series.id,
        "modality": series.modality,
        "series_description": series.series_description,
        "instances": series.instance_count,
        "attempts": job.attempts,
        "created_at": job.created_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "findings": findings,
        "positive": has_positive_finding(summary),
        "finding_text": finding_text(findings),
        "not_analysable": summary.get("not_analysable"),
        "error": job.error,
    }
