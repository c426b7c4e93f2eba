"""Read models of the job database for the dashboard and the CLI.

Jobs with filters and paging, one job with its timeline and stage durations,
series and deliveries. Everything here only reads; the functions that change
state are in :mod:`dicom_node.jobs.queue`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, selectinload

from dicom_node.db.models import (
    Delivery,
    DeliveryState,
    Job,
    JobState,
    Notification,
    NotificationState,
    Purge,
    ResultObject,
    Series,
    SeriesState,
    StateChange,
    utcnow,
)
from dicom_node.errors import InvalidQueryError
from dicom_node.jobs.queue import can_requeue
from dicom_node.results.summary import has_positive_finding
from dicom_node.stats import Milestones, milestones_for_jobs

#: Values of the finding filter.
FINDING_FILTERS = ("present", "absent", "none")

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(value: str | None, now: datetime | None = None) -> datetime | None:
    """Parse a ``--since``/``since=`` value: ISO 8601 date or time, or an age like ``24h``.

    Parameters
    ----------
    value : str or None
        ``2025-01-31``, ``2025-01-31T08:00``, ``2025-01-31T08:00+01:00`` (a
        time without offset is UTC), or ``<number><s|m|h|d|w>`` back from now.
    now : datetime or None
        Reference for relative values (UTC).

    Returns
    -------
    datetime or None
        Timezone-aware UTC; None for an empty value.

    Raises
    ------
    ValueError
        If the value is neither form.
    """
    if value is None or not value.strip():
        return None
    match = _RELATIVE.match(value)
    if match:
        seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
        return (now or utcnow()) - timedelta(seconds=seconds)
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError as err:
        raise ValueError(f"{value!r} is not an ISO 8601 date/time nor an age like 24h") from err
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


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


#: Order of the delivery states in :func:`delivery_marks` texts (worst first).
_UNDELIVERED_ORDER = (DeliveryState.DEAD, DeliveryState.RETRYING, DeliveryState.PENDING)


def delivery_marks(session: Session, jobs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add to each :func:`job_summary` row whether its result objects were all delivered.

    One query for the whole page. Each row gets ``deliveries`` (counts of its
    deliveries by state, e.g. ``{"SENT": 1, "DEAD": 2}``; empty when the job
    has none, i.e. no destination) and ``undelivered``: for a SUCCEEDED job
    with a delivery that is not SENT, ``"undelivered: 2 DEAD"`` (a DEAD one;
    the exporter has given up) or ``"delivery pending: 1 RETRYING"`` (still
    being tried), otherwise None. The jobs list of the CLI (``jobs list``,
    ``--json``) and of the dashboard both show it.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Open session on the job database.
    jobs : sequence of dict
        :func:`job_summary` rows (``job_id`` and ``state`` are read); changed in place.

    Returns
    -------
    list of dict
        The same rows.
    """
    ids = [row["job_id"] for row in jobs]
    counts: dict[int, dict[str, int]] = {i: {} for i in ids}
    for start in range(0, len(ids), 500):
        rows = session.execute(
            select(ResultObject.job_id, Delivery.state, func.count())
            .join(Delivery, Delivery.result_object_id == ResultObject.id)
            .where(ResultObject.job_id.in_(ids[start : start + 500]))
            .group_by(ResultObject.job_id, Delivery.state)
        ).all()
        for job_id, state, n in rows:
            counts[job_id][str(state)] = int(n)
    for row in jobs:
        by_state = counts.get(row["job_id"], {})
        row["deliveries"] = by_state
        row["undelivered"] = None
        missing = [(s, by_state.get(str(s), 0)) for s in _UNDELIVERED_ORDER]
        if row["state"] == str(JobState.SUCCEEDED) and any(n for _, n in missing):
            word = "undelivered" if by_state.get(str(DeliveryState.DEAD)) else "delivery pending"
            row["undelivered"] = f"{word}: " + ", ".join(f"{n} {s}" for s, n in missing if n)
    return list(jobs)


@dataclass
class TimelineEvent:
    """One line of a job's timeline.

    Parameters
    ----------
    at : datetime
        When (UTC).
    entity : str
        ``series``, ``job``, ``delivery``, ``notification`` or ``retention``.
    what : str
        Human-readable milestone, e.g. ``last instance received``.
    from_state, to_state : str or None
    reason : str or None
    since_previous_s : float or None
        Seconds since the previous event.
    """

    at: datetime
    entity: str
    what: str
    from_state: str | None = None
    to_state: str | None = None
    reason: str | None = None
    since_previous_s: float | None = None

    def as_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "at": self.at.isoformat(),
            "entity": self.entity,
            "what": self.what,
            "from": self.from_state,
            "to": self.to_state,
            "reason": self.reason,
            "since_previous_s": self.since_previous_s,
        }


_WHAT = {
    ("series", "RECEIVING"): "receiving",
    ("series", "COMPLETE"): "series complete",
    ("series", "DISPATCHED"): "dispatched to a pipeline",
    ("series", "NOT_ELIGIBLE"): "not eligible",
    ("job", "QUEUED"): "queued",
    ("job", "RUNNING"): "started",
    ("job", "SUCCEEDED"): "results built",
    ("job", "FAILED"): "failed",
    ("job", "CANCELED"): "canceled",
    ("delivery", "PENDING"): "delivery pending",
    ("delivery", "SENT"): "delivered",
    ("delivery", "RETRYING"): "delivery retrying",
    ("delivery", "DEAD"): "delivery given up",
}


def job_detail(session: Session, job_id: int, outbox: Path) -> dict[str, Any] | None:
    """Everything the job page and ``jobs show`` need about one job.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Open session on the job database.
    job_id : int
        The job.
    outbox : pathlib.Path
        Absolute outbox directory (result object paths are relative to it).

    Returns
    -------
    dict or None
        None when there is no such job. Keys: the :func:`job_summary` row,
        ``series``, ``study_instance_uid``, ``timeline`` (list of
        :class:`TimelineEvent`), ``milestones`` (:class:`Milestones`),
        ``stages_s``, ``result_objects`` (with deliveries), ``notifications``,
        ``details``, ``purge``, ``traceback`` (the formatted traceback of the
        last failed attempt, or None: for admins only, see
        :func:`job_detail_for`), ``cancel_requested_at`` (ISO 8601 or None).
    """
    job = session.get(Job, job_id)
    if job is None:
        return None
    series = job.series  # foreign keys: a job's series and a series' study always exist
    study = series.study
    objects = session.scalars(
        select(ResultObject)
        .options(selectinload(ResultObject.deliveries))
        .where(ResultObject.job_id == job.id)
        .order_by(ResultObject.id)
    ).all()
    delivery_ids = {d.id: (o, d) for o in objects for d in o.deliveries}
    events: list[TimelineEvent] = [
        TimelineEvent(series.last_instance_at, "series", "last instance received"),
    ]
    changes = session.scalars(
        select(StateChange)
        .where(
            ((StateChange.entity == "job") & (StateChange.entity_id == job.id))
            | ((StateChange.entity == "series") & (StateChange.entity_id == series.id))
            | (
                (StateChange.entity == "delivery")
                & (StateChange.entity_id.in_(list(delivery_ids) or [-1]))
            )
        )
        .order_by(StateChange.at, StateChange.id)
    ).all()
    for change in changes:
        what = _WHAT.get((change.entity, change.to_state), change.to_state.lower())
        if change.entity == "series" and change.from_state is None:
            what = "first instance received"
        if change.entity == "delivery":
            obj, delivery = delivery_ids[change.entity_id]
            what = f"{obj.kind} {what} ({delivery.destination})"
        events.append(
            TimelineEvent(
                change.at, change.entity, what, change.from_state, change.to_state, change.reason
            )
        )
    notifications = session.scalars(
        select(Notification).where(Notification.job_id == job.id).order_by(Notification.id)
    ).all()
    for n in notifications:
        if n.sent_at is not None:
            events.append(TimelineEvent(n.sent_at, "notification", f"webhook {n.webhook} notified"))
    purge = session.scalar(select(Purge).where(Purge.series_id == series.id))
    if purge is not None:
        events.append(TimelineEvent(purge.purged_at, "retention", "files purged"))
    if not any(e.what == "first instance received" for e in events):
        events.append(TimelineEvent(series.first_instance_at, "series", "first instance received"))
    events.sort(key=lambda e: e.at)
    previous = None
    for event in events:
        if previous is not None:
            event.since_previous_s = max(0.0, (event.at - previous).total_seconds())
        previous = event.at
    milestones = milestones_for_jobs(session, [job.id]).get(job.id)
    data = job_summary(job, series)
    data.update(
        {
            "study_instance_uid": study.study_instance_uid,
            "series": {
                "series_instance_uid": series.series_instance_uid,
                "modality": series.modality,
                "series_description": series.series_description,
                "body_part_examined": series.body_part_examined,
                "instance_count": series.instance_count,
                "calling_ae_title": series.calling_ae_title,
                "state": str(series.state),
                "state_reason": series.state_reason,
                "frame_of_reference_uid": series.frame_of_reference_uid,
                "first_instance_at": series.first_instance_at.isoformat(),
                "last_instance_at": series.last_instance_at.isoformat(),
                "completion_basis": series.completion_basis,
            },
            "timeline": events,
            "milestones": milestones,
            "stages_s": milestones.durations_s() if milestones else {},
            "details": rounded((job.result_summary or {}).get("details")),
            "result_objects": [
                {
                    "id": o.id,
                    "kind": o.kind,
                    "sop_instance_uid": o.sop_instance_uid,
                    "series_instance_uid": o.series_instance_uid,
                    "path": str(outbox / o.path),
                    "size_bytes": o.size_bytes,
                    "created_at": o.created_at.isoformat(),
                    "deliveries": [
                        {
                            "id": d.id,
                            "destination": d.destination,
                            "state": str(d.state),
                            "attempts": d.attempts,
                            "last_error": d.last_error,
                            "sent_at": d.sent_at.isoformat() if d.sent_at else None,
                        }
                        for d in o.deliveries
                    ],
                }
                for o in objects
            ],
            "notifications": [
                {
                    "webhook": n.webhook,
                    "state": str(n.state),
                    "attempts": n.attempts,
                    "next_attempt_at": (
                        n.next_attempt_at.isoformat()
                        if n.state == NotificationState.PENDING and n.next_attempt_at
                        else None
                    ),
                    "response_status": n.response_status,
                    "last_error": n.last_error,
                    "sent_at": n.sent_at.isoformat() if n.sent_at else None,
                }
                for n in notifications
            ],
            "purge": (
                {
                    "purged_at": purge.purged_at.isoformat(),
                    "spool_files": purge.spool_files,
                    "outbox_files": purge.outbox_files,
                    "bytes_freed": purge.bytes_freed,
                }
                if purge
                else None
            ),
            "traceback": job.error_traceback,
            "cancel_requested_at": (
                job.cancel_requested_at.isoformat() if job.cancel_requested_at else None
            ),
            "can_requeue": can_requeue(session, job),
            "can_cancel": job.state == JobState.QUEUED
            or (job.state == JobState.RUNNING and job.cancel_requested_at is None),
        }
    )
    return data


#: Keys of :func:`job_detail` shown to admins only.
ADMIN_ONLY_KEYS = ("traceback",)


def job_detail_for(detail: dict[str, Any], *, is_admin: bool) -> dict[str, Any]:
    """:func:`job_detail` as a user of the dashboard may see it.

    A traceback names source files and lines of the node and may quote
    exception text: admins see it, viewers get ``traceback = None``.

    Parameters
    ----------
    detail : dict
        A :func:`job_detail` document.
    is_admin : bool
        Whether the reader has the admin role.

    Returns
    -------
    dict
        ``detail`` itself for admins; a copy without :data:`ADMIN_ONLY_KEYS` values otherwise.
    """
    if is_admin:
        return detail
    return {**detail, **{key: None for key in ADMIN_ONLY_KEYS}}


def job_detail_json(detail: dict[str, Any]) -> dict[str, Any]:
    """:func:`job_detail` with the timeline and milestones made JSON-ready."""
    out = dict(detail)
    out["timeline"] = [e.as_json() for e in detail["timeline"]]
    m: Milestones | None = detail["milestones"]
    out["milestones"] = (
        {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in m.__dict__.items()}
        if m
        else None
    )
    return out


def _enum_value(kind, value: str, what: str):
    """``kind(value.upper())``, or InvalidQueryError naming the known values."""
    try:
        return kind(value.upper())
    except ValueError:
        known = ", ".join(member.value for member in kind)
        raise InvalidQueryError(f"unknown {what} {value!r} (known: {known})") from None


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


def list_deliveries(
    session: Session,
    *,
    state: str | None = None,
    destination: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], int]:
    """Deliveries, newest first, with their result object and job.

    Returns
    -------
    (list of dict, int)
        JSON-ready rows and the number of matching deliveries.

    Raises
    ------
    InvalidQueryError
        If ``state`` is not a delivery state.
    """
    query = select(Delivery, ResultObject).join(
        ResultObject, Delivery.result_object_id == ResultObject.id
    )
    if state:
        query = query.where(Delivery.state == _enum_value(DeliveryState, state, "delivery state"))
    if destination:
        query = query.where(Delivery.destination == destination)
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    rows = session.execute(query.order_by(Delivery.id.desc()).offset(offset).limit(limit)).all()
    return [
        {
            "delivery_id": d.id,
            "job_id": o.job_id,
            "kind": o.kind,
            "sop_instance_uid": o.sop_instance_uid,
            "destination": d.destination,
            "state": str(d.state),
            "attempts": d.attempts,
            "next_attempt_at": d.next_attempt_at.isoformat() if d.next_attempt_at else None,
            "sent_at": d.sent_at.isoformat() if d.sent_at else None,
            "last_error": d.last_error,
            "created_at": d.created_at.isoformat(),
        }
        for d, o in rows
    ], int(total or 0)
