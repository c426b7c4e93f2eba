"""One job in full: its timeline, stage durations, result objects and deliveries.

:func:`job_detail` is what the job page, the job API and ``dicom-node jobs
show`` read; :func:`job_detail_for` hides what only admins see and
:func:`job_detail_json` makes it JSON-ready. Split from the former
``dicom_node/queries.py`` (issue 14); every name is still exported by
:mod:`dicom_node.queries`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from dicom_node.db.models import (
    Job,
    JobState,
    Notification,
    NotificationState,
    Purge,
    ResultObject,
    StateChange,
)
from dicom_node.jobs.queue import can_requeue
from dicom_node.queries.jobs import job_summary, rounded
from dicom_node.stats import Milestones, milestones_for_jobs


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
