"""Received series and what came of them: the series list, refused series, a series' jobs.

:func:`list_series` and :func:`series_summary` (``dicom-node series list``
and the series page), :func:`not_eligible_series` (the second part of
``dicom-node jobs list``), :func:`latest_job_of_series` and
:func:`result_objects_of_job`. Split from the former
``dicom_node/queries.py`` (issue 14); every name is still exported by
:mod:`dicom_node.queries`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from dicom_node.db.models import Job, ResultObject, Series, SeriesState
from dicom_node.queries.parsing import _enum_value


def list_series(
    session: Session, *, state: str | None = None, offset: int = 0, limit: int = 50
) -> tuple[list[tuple[Series, list[Job]]], int]:
    """Received series, newest first, with their jobs.

    Returns
    -------
    (list of (Series, list of Job), int)
        The page and the number of matching series.

    Raises
    ------
    InvalidQueryError
        If ``state`` is not a series state.
    """
    query = select(Series)
    if state:
        query = query.where(Series.state == _enum_value(SeriesState, state, "series state"))
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    rows = session.scalars(
        query.options(selectinload(Series.jobs))
        .order_by(Series.id.desc())
        .offset(offset)
        .limit(limit)
    ).all()
    return [(s, sorted(s.jobs, key=lambda j: j.id)) for s in rows], int(total or 0)


def series_summary(series: Series) -> dict[str, Any]:
    """One row of ``dicom-node series list`` as JSON-ready values (UIDs, no patient data).

    Keys: ``series_instance_uid``, ``state``, ``modality``, ``instances``,
    ``series_description``, ``reason`` (why it is in its state, or None) and
    ``last_instance_at`` (ISO 8601, UTC).
    """
    return {
        "series_instance_uid": series.series_instance_uid,
        "state": str(series.state),
        "modality": series.modality,
        "instances": series.instance_count,
        "series_description": series.series_description,
        "reason": series.state_reason,
        "last_instance_at": series.last_instance_at.isoformat(),
    }


def not_eligible_series(
    session: Session, *, since: datetime | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Series that selection refused (NOT_ELIGIBLE), newest first, with the reason.

    The second part of ``dicom-node jobs list``: series that made no job.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Open session on the job database.
    since : datetime or None
        Only series whose last instance arrived at or after this time (UTC).
    limit : int
        At most this many.

    Returns
    -------
    list of dict
        JSON-ready rows: ``series_instance_uid``, ``state``, ``modality``,
        ``series_description``, ``reason``.
    """
    query = select(Series).where(Series.state == SeriesState.NOT_ELIGIBLE)
    if since is not None:
        query = query.where(Series.last_instance_at >= since)
    return [
        {
            "series_instance_uid": s.series_instance_uid,
            "state": str(s.state),
            "modality": s.modality,
            "series_description": s.series_description,
            "reason": s.state_reason,
        }
        for s in session.scalars(query.order_by(Series.id.desc()).limit(limit))
    ]


def latest_job_of_series(session: Session, series_instance_uid: str) -> Job | None:
    """The newest job (highest id) of the series with this Series Instance UID, or None."""
    return session.scalar(
        select(Job)
        .join(Series, Job.series_id == Series.id)
        .where(Series.series_instance_uid == series_instance_uid)
        .order_by(Job.id.desc())
        .limit(1)
    )


def result_objects_of_job(session: Session, job_id: int) -> list[ResultObject]:
    """The result objects (SEG, SR, SC) a job wrote, in the order it wrote them."""
    return list(
        session.scalars(
            select(ResultObject).where(ResultObject.job_id == job_id).order_by(ResultObject.id)
        )
    )
