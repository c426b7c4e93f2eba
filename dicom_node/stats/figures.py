"""Figures about the node, read from the job database: stage durations, latency, health.

The dashboard's overview, ``dicom-node stats`` and ``/metrics`` all use these
functions, so they show the same numbers. Durations come from the timestamps
the node records anyway: the instance times of a series, the ``state_change``
log of every transition (UTC), and the ``sent_at`` of each delivery.

The stages of one run of a job (the latest run when a job was requeued):

============  ====================================  ===============================
stage         from                                  to
============  ====================================  ===============================
receiving     first instance received               last instance received
quiet         last instance received                series COMPLETE
dispatch      series COMPLETE                       job QUEUED
queue         job QUEUED                            job RUNNING (worker claimed it)
analysis      job RUNNING                           job SUCCEEDED (results built)
export        results built                         last delivery SENT
total         last instance received                delivered
============  ====================================  ===============================

"Delivered" is the time the last result object of the run reached its last
destination; with no destinations configured it is the time the results were
built (they stay in the outbox).

A run started by an operator's requeue has no ``dispatch`` and no ``total``
(they would measure the operator's decision, not the node), so the latency
figures count only the runs that followed a series' arrival; its ``run``
duration (queued -> delivered) is shown on the job page instead.
"""

from __future__ import annotations

import logging
import shutil
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from threading import Lock
from typing import Any

import numpy as np
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.config import Destination, Settings
from dicom_node.db.models import (
    Delivery,
    DeliveryState,
    Instance,
    Job,
    JobState,
    Notification,
    Purge,
    ResultObject,
    Series,
    SeriesState,
    StateChange,
    utcnow,
)

logger = logging.getLogger(__name__)

#: Stage names in pipeline order (see the module docstring).
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


@dataclass
class EchoResult:
    """Outcome of a C-ECHO to one destination.

    Parameters
    ----------
    name, ae_title, host : str
    port : int
    reachable : bool or None
        None when not checked yet.
    status : int or None
        DIMSE status of the C-ECHO response (0x0000 success).
    error : str or None
    checked_at : datetime or None
    round_trip_s : float or None
    """

    name: str
    ae_title: str
    host: str
    port: int
    reachable: bool | None = None
    status: int | None = None
    error: str | None = None
    checked_at: datetime | None = None
    round_trip_s: float | None = None


def echo_destination(
    destination: Destination, calling_ae_title: str, timeout_s: float
) -> EchoResult:
    """C-ECHO one destination and report whether it answered with success.

    Parameters
    ----------
    destination : Destination
        The peer: AE title, host, port and its own calling AE title if set.
    calling_ae_title : str
        Our AE title (unless the destination sets one).
    timeout_s : float
        Network, ACSE and DIMSE timeout in seconds.

    Returns
    -------
    EchoResult

    References
    ----------
    DICOM PS3.4 Annex A (Verification Service Class); PS3.7 9.1.5 (C-ECHO).
    """
    import time

    from dicom_node.errors import DicomNodeError
    from dicom_node.export.exporter import peer_for
    from dicom_node.export.scu import echo

    result = EchoResult(destination.name, destination.ae_title, destination.host, destination.port)
    started = time.monotonic()
    try:
        result.status = echo(peer_for(destination, calling_ae_title, timeout_s=timeout_s))
        result.reachable = result.status == 0
        if not result.reachable:
            result.error = f"C-ECHO status 0x{result.status:04X}"
    except (DicomNodeError, OSError) as err:
        result.reachable, result.error = False, str(err)
    result.round_trip_s = time.monotonic() - started
    result.checked_at = utcnow()
    return result


class DestinationMonitor:
    """Keeps the latest C-ECHO result of every destination (refreshed by the scheduler).

    Parameters
    ----------
    destinations : sequence of Destination
    calling_ae_title : str
    timeout_s : float
        Per C-ECHO, in seconds.
    """

    def __init__(
        self, destinations: Sequence[Destination], calling_ae_title: str, timeout_s: float
    ) -> None:
        self.destinations = list(destinations)
        self.calling_ae_title = calling_ae_title
        self.timeout_s = timeout_s
        self._lock = Lock()
        self._results = {
            d.name: EchoResult(d.name, d.ae_title, d.host, d.port) for d in self.destinations
        }

    def check(self) -> list[EchoResult]:
        """C-ECHO every destination now (in parallel) and keep the results."""
        if not self.destinations:
            return []
        with ThreadPoolExecutor(max_workers=min(8, len(self.destinations))) as pool:
            results = list(
                pool.map(
                    lambda d: echo_destination(d, self.calling_ae_title, self.timeout_s),
                    self.destinations,
                )
            )
        with self._lock:
            for r in results:
                self._results[r.name] = r
        for r in results:
            if not r.reachable:
                logger.warning("destination %s does not answer C-ECHO: %s", r.name, r.error)
        return results

    def snapshot(self) -> list[EchoResult]:
        """Return the latest results without contacting anyone."""
        with self._lock:
            return [self._results[d.name] for d in self.destinations]

    def refresh_if_stale(self, max_age_s: float) -> list[EchoResult]:
        """Return the latest results, checking again first when any is older than ``max_age_s``."""
        now = utcnow()
        stale = any(
            r.checked_at is None or (now - r.checked_at).total_seconds() > max_age_s
            for r in self.snapshot()
        )
        return self.check() if stale else self.snapshot()


def _counts(session: Session, column, *where) -> dict[str, int]:
    rows = session.execute(select(column, func.count()).where(*where).group_by(column)).all()
    return {str(state): int(n) for state, n in rows}


def disk_figures(session: Session, settings: Settings) -> dict[str, Any]:
    """Spool and outbox usage (from the DB, without walking the tree) and free disk space.

    Returns
    -------
    dict
        ``spool_bytes``, ``spool_instances`` and ``outbox_bytes`` (files not
        purged), ``fs_total_bytes``, ``fs_free_bytes`` of the spool's file
        system, ``min_free_bytes`` and ``ok`` (free space above the watermark).
    """
    purged_series = select(Purge.series_id)
    spool_bytes, spool_instances = session.execute(
        select(func.coalesce(func.sum(Instance.size_bytes), 0), func.count(Instance.id)).where(
            Instance.series_id.not_in(purged_series)
        )
    ).one()
    outbox_bytes = session.scalar(
        select(func.coalesce(func.sum(ResultObject.size_bytes), 0))
        .join(Job, ResultObject.job_id == Job.id)
        .where(Job.series_id.not_in(purged_series))
    )
    usage = shutil.disk_usage(_existing(settings.storage.spool_path))
    minimum = settings.monitoring.min_free_disk_bytes
    return {
        "spool_path": str(settings.storage.spool_path),
        "spool_bytes": int(spool_bytes),
        "spool_instances": int(spool_instances),
        "outbox_bytes": int(outbox_bytes or 0),
        "fs_total_bytes": int(usage.total),
        "fs_free_bytes": int(usage.free),
        "min_free_bytes": int(minimum),
        "ok": usage.free >= minimum,
    }


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def overview(
    session: Session,
    settings: Settings,
    *,
    echo_results: Sequence[EchoResult] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """All figures of the dashboard's overview (and of ``dicom-node stats``).

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Open session on the job database.
    settings : Settings
        Supplies the latency target, the window and the destinations.
    echo_results : sequence of EchoResult or None
        Reachability of the destinations; None leaves it unknown.
    now : datetime or None
        End of the window (UTC).

    Returns
    -------
    dict
        JSON-ready: ``queue_depth``, ``jobs_by_state`` (all time),
        ``jobs_by_state_window``, ``series_by_state``, ``latency`` (p50/p95 of
        last instance -> delivered in the window against ``target_s``),
        ``stages`` (p50/p95 of each stage), ``deliveries`` per destination,
        ``destinations`` (C-ECHO), ``disk``, ``notifications``.
    """
    now = now or utcnow()
    window_s = settings.monitoring.stats_window_s
    since = now - timedelta(seconds=window_s)
    target_s = settings.monitoring.delivery_target_s
    jobs_by_state = _counts(session, Job.state)
    jobs_window = _counts(session, Job.state, Job.updated_at >= since)
    series_by_state = _counts(session, Series.state)
    queue_depth = jobs_by_state.get(str(JobState.QUEUED), 0)
    candidate_ids = session.scalars(
        select(Job.id).where(Job.state == JobState.SUCCEEDED, Job.finished_at >= since)
    ).all()
    milestones = milestones_for_jobs(session, candidate_ids)
    per_stage: dict[str, list[float]] = defaultdict(list)
    for m in milestones.values():
        if m.delivered is None or m.delivered < since:
            continue
        for stage, seconds in m.durations_s().items():
            per_stage[stage].append(seconds)
    totals = per_stage.get("total", [])
    p50, p95 = percentile_s(totals, 50), percentile_s(totals, 95)
    latency = {
        "target_s": target_s,
        "window_s": window_s,
        "n": len(totals),
        "p50_s": p50,
        "p95_s": p95,
        "max_s": max(totals) if totals else None,
        "over_target": sum(1 for t in totals if t > target_s),
        "within_target": None if p95 is None else p95 <= target_s,
    }
    stages = {
        stage: {
            "n": len(per_stage.get(stage, [])),
            "p50_s": percentile_s(per_stage.get(stage, []), 50),
            "p95_s": percentile_s(per_stage.get(stage, []), 95),
        }
        for stage in STAGES
    }
    return {
        "generated_at": now.isoformat(),
        "window_s": window_s,
        "queue_depth": queue_depth,
        "jobs_by_state": {str(s): jobs_by_state.get(str(s), 0) for s in JobState},
        "jobs_by_state_window": {str(s): jobs_window.get(str(s), 0) for s in JobState},
        "series_by_state": {str(s): series_by_state.get(str(s), 0) for s in SeriesState},
        "latency": latency,
        "stages": stages,
        "deliveries": delivery_figures(session, settings),
        "destinations": [_echo_json(r) for r in (echo_results or [])],
        "disk": disk_figures(session, settings),
        "notifications": _counts(session, Notification.state),
    }


def _echo_json(result: EchoResult) -> dict[str, Any]:
    data = asdict(result)
    data["checked_at"] = result.checked_at.isoformat() if result.checked_at else None
    return data


def delivery_figures(session: Session, settings: Settings) -> list[dict[str, Any]]:
    """Deliveries per destination: counts by state, failing now, and the latest error.

    A delivery is failing when it is RETRYING or DEAD. Destinations that are
    configured but have no deliveries yet are listed with zeros.
    """
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for name, state, n in session.execute(
        select(Delivery.destination, Delivery.state, func.count()).group_by(
            Delivery.destination, Delivery.state
        )
    ):
        counts[name][str(state)] = int(n)
    names = [d.name for d in settings.export.destinations]
    names += sorted(set(counts) - set(names))
    out = []
    for name in names:
        by_state = {str(s): counts[name].get(str(s), 0) for s in DeliveryState}
        last_error = session.scalar(
            select(Delivery.last_error)
            .where(
                Delivery.destination == name,
                Delivery.state.in_([DeliveryState.RETRYING, DeliveryState.DEAD]),
            )
            .order_by(Delivery.updated_at.desc())
            .limit(1)
        )
        out.append(
            {
                "destination": name,
                "configured": name in {d.name for d in settings.export.destinations},
                "by_state": by_state,
                "failing": by_state["RETRYING"] + by_state["DEAD"],
                "last_error": last_error,
            }
        )
    return out


@dataclass
class HealthReport:
    """Result of :func:`health`.

    Parameters
    ----------
    ok : bool
        Every check passed.
    checks : dict
        Check name -> details with an ``ok`` entry.
    """

    ok: bool
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """Return the JSON body of ``/health``."""
        return {"status": "ok" if self.ok else "fail", "checks": self.checks}


def health(
    session_factory: sessionmaker[Session],
    settings: Settings,
    workers_alive: Callable[[], int] | None = None,
) -> HealthReport:
    """Check that the node can do its work: database, disk space, worker processes.

    Parameters
    ----------
    session_factory : sqlalchemy.orm.sessionmaker
        Sessions on the job database (one ``SELECT 1``).
    settings : Settings
        ``monitoring.min_free_disk_bytes`` is the disk watermark;
        ``workers.processes`` the number of workers expected.
    workers_alive : callable or None
        Returns the number of live worker processes; None when this process
        does not own the workers (then the check is reported, not judged).

    Returns
    -------
    HealthReport
    """
    checks: dict[str, dict[str, Any]] = {}
    try:
        with session_factory() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = {"ok": True}
    except Exception as err:  # noqa: BLE001 - any failure means unhealthy
        checks["database"] = {"ok": False, "error": f"{err.__class__.__name__}: {err}"[:300]}
    try:
        usage = shutil.disk_usage(_existing(settings.storage.spool_path))
        minimum = settings.monitoring.min_free_disk_bytes
        checks["disk"] = {
            "ok": usage.free >= minimum,
            "free_bytes": int(usage.free),
            "min_free_bytes": int(minimum),
        }
    except OSError as err:
        checks["disk"] = {"ok": False, "error": str(err)}
    expected = settings.workers.processes
    if workers_alive is None:
        checks["workers"] = {"ok": True, "monitored": False, "expected": expected}
    else:
        alive = int(workers_alive())
        checks["workers"] = {"ok": alive >= expected, "alive": alive, "expected": expected}
    return HealthReport(all(c["ok"] for c in checks.values()), checks)
