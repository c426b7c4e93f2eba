"""Milestones of one job's latest run and the durations of its stages, from the job database.

:class:`Milestones` holds the timestamps of a run, :func:`milestones_for_jobs`
reads them for many jobs at once, and :data:`STAGES` names the stages between
them in pipeline order (their bounds are tabled in :mod:`dicom_node.stats`).
Sources: the instance times of a series, the ``state_change`` log of every
transition (UTC) and the ``sent_at`` of each delivery. Split out of
:mod:`dicom_node.stats`, which re-exports every name here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.db.models import (
    Delivery,
    DeliveryState,
    Job,
    JobState,
    ResultObject,
    Series,
    SeriesState,
    StateChange,
)

#: Stage names in pipeline order (see :mod:`dicom_node.stats`).
STAGES: tuple[str, ...] = ("receiving", "quiet", "dispatch", "queue", "analysis", "export", "total")
_STAGE_BOUNDS: dict[str, tuple[str, str]] = {
    "receiving": ("first_instance", "last_instance"),
    "quiet": ("last_instance", "complete"),
    "dispatch": ("complete", "queued"),
    "queue": ("queued", "started"),
    "analysis": ("started", "results"),
    "export": ("results", "delivered"),
    "total": ("last_instance", "delivered"),
}


@dataclass
class Milestones:
    """The timestamps of the latest run of one job (UTC; None when not reached).

    Parameters
    ----------
    job_id : int
    first_instance, last_instance : datetime
        First and last instance of the series received.
    complete : datetime or None
        The series became COMPLETE (the last time before the job was queued).
    queued, started, results : datetime or None
        The job was (re)queued, claimed by a worker, and built its results.
    delivered : datetime or None
        Every delivery of the run SENT (or ``results`` when there are none).
    deliveries_pending : int
        Deliveries of the run not SENT yet (PENDING, RETRYING) or DEAD.
    requeued : bool
        The run was started by an operator's requeue.
    """

    job_id: int
    first_instance: datetime
    last_instance: datetime
    complete: datetime | None = None
    queued: datetime | None = None
    started: datetime | None = None
    results: datetime | None = None
    delivered: datetime | None = None
    deliveries_pending: int = 0
    requeued: bool = False

    def durations_s(self) -> dict[str, float]:
        """Return the duration in seconds of every stage whose two ends are known.

        Besides :data:`STAGES`, ``run`` is queued -> delivered of this run.
        """
        out: dict[str, float] = {}
        bounds = {**_STAGE_BOUNDS, "run": ("queued", "delivered")}
        for stage, (start, end) in bounds.items():
            if self.requeued and stage in ("dispatch", "total"):
                continue
            a, b = getattr(self, start), getattr(self, end)
            if a is not None and b is not None:
                out[stage] = max(0.0, (b - a).total_seconds())
        return out


def milestones_for_jobs(session: Session, job_ids: Sequence[int]) -> dict[int, Milestones]:
    """Compute :class:`Milestones` for many jobs with four queries.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Open session on the job database.
    job_ids : sequence of int
        The jobs.

    Returns
    -------
    dict
        Job id -> milestones (jobs that do not exist are left out).
    """
    ids = list(job_ids)
    if not ids:
        return {}
    out: dict[int, Milestones] = {}
    series_of: dict[int, int] = {}
    for chunk in _chunks(ids, 500):
        rows = session.execute(
            select(Job.id, Job.series_id, Series.first_instance_at, Series.last_instance_at)
            .join(Series, Job.series_id == Series.id)
            .where(Job.id.in_(chunk))
        ).all()
        for job_id, series_id, first_at, last_at in rows:
            out[job_id] = Milestones(job_id, first_at, last_at)
            series_of[job_id] = series_id
        job_events: dict[int, list[tuple[datetime, str]]] = defaultdict(list)
        for entity_id, to_state, at in session.execute(
            select(StateChange.entity_id, StateChange.to_state, StateChange.at)
            .where(StateChange.entity == "job", StateChange.entity_id.in_(chunk))
            .order_by(StateChange.at, StateChange.id)
        ):
            job_events[entity_id].append((at, to_state))
        series_ids = {series_of[j] for j in chunk if j in series_of}
        complete_at: dict[int, list[datetime]] = defaultdict(list)
        for entity_id, at in session.execute(
            select(StateChange.entity_id, StateChange.at).where(
                StateChange.entity == "series",
                StateChange.entity_id.in_(series_ids),
                StateChange.to_state == str(SeriesState.COMPLETE),
            )
        ):
            complete_at[entity_id].append(at)
        deliveries: dict[int, list[tuple[datetime, str, datetime | None]]] = defaultdict(list)
        objects: dict[int, list[datetime]] = defaultdict(list)
        for job_id, created_at, state, sent_at in session.execute(
            select(ResultObject.job_id, ResultObject.created_at, Delivery.state, Delivery.sent_at)
            .outerjoin(Delivery, Delivery.result_object_id == ResultObject.id)
            .where(ResultObject.job_id.in_(chunk))
        ):
            objects[job_id].append(created_at)
            if state is not None:
                deliveries[job_id].append((created_at, str(state), sent_at))
        for job_id in chunk:
            m = out.get(job_id)
            if m is None:
                continue
            _fill_job_milestones(m, job_events.get(job_id, []))
            if m.queued is not None:
                before = [t for t in complete_at.get(series_of[job_id], []) if t <= m.queued]
                m.complete = max(before) if before else None
            _fill_delivered(m, objects.get(job_id, []), deliveries.get(job_id, []))
    return out


def _chunks(values: list[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _fill_job_milestones(m: Milestones, events: list[tuple[datetime, str]]) -> None:
    """Latest run: queued at creation or operator requeue; a retry stays in the same run.

    After a failed attempt (RUNNING -> QUEUED) the run goes on: its queue
    stage then includes the failed attempt and the backoff, and its analysis
    stage is the attempt that succeeded.
    """
    queued = started = results = None
    previous: str | None = None
    terminal = {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED}
    for at, state in events:
        if state == JobState.QUEUED and (previous is None or previous in terminal):
            queued, started, results = at, None, None
            m.requeued = previous is not None
        elif state == JobState.RUNNING:
            started, results = at, None
        elif state == JobState.SUCCEEDED:
            results = at
        previous = state
    m.queued, m.started, m.results = queued, started, results


def _fill_delivered(
    m: Milestones, objects: list[datetime], deliveries: list[tuple[datetime, str, datetime | None]]
) -> None:
    if m.results is None or m.started is None:
        return
    run = [d for d in deliveries if d[0] >= m.started]
    run_objects = [t for t in objects if t >= m.started]
    if not run_objects:
        return
    if not run:
        m.delivered = m.results
        return
    m.deliveries_pending = sum(1 for _, state, _ in run if state != DeliveryState.SENT)
    if m.deliveries_pending == 0:
        m.delivered = max(sent for _, _, sent in run if sent is not None)


def percentile_s(values: Sequence[float], q: float) -> float | None:
    """Return the ``q``-th percentile (0-100, linear interpolation) or None when empty."""
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=float), q))
