"""The overview's figures and the health check: job and series counts, latency, disk, deliveries.

:func:`overview` gathers every figure of the dashboard's overview and of
``dicom-node stats`` (latency percentiles from
:mod:`dicom_node.stats.milestones`, destination reachability from
:mod:`dicom_node.stats.echo`); :func:`health` is the check behind ``/health``.
Split out of :mod:`dicom_node.stats`, which re-exports every name here.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.config import Settings
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
    utcnow,
)
from dicom_node.stats.echo import EchoResult
from dicom_node.stats.milestones import STAGES, milestones_for_jobs, percentile_s


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
