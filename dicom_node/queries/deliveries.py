"""Deliveries of result objects: the deliveries list and the jobs list's delivery marks.

:func:`list_deliveries` (``dicom-node deliveries list`` and the deliveries
page) and :func:`delivery_marks`, which says on each jobs-list row whether
its results were all delivered. Split from the former
``dicom_node/queries.py`` (issue 14); every name is still exported by
:mod:`dicom_node.queries`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dicom_node.db.models import Delivery, DeliveryState, JobState, ResultObject
from dicom_node.queries.parsing import _enum_value

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
