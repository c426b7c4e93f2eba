"""Prometheus metrics of a node, computed from the job database at scrape time.

The node's work is spread over processes (the SCP and the exporter in the
main process, workers in others, maybe on other hosts), but all of it lands
in the job database. So the metrics are read from there by a custom collector
on a registry owned by each :class:`~dicom_node.app.Node` (never the global
default registry): counters survive restarts and every process agrees.

Metric names (all prefixed ``dicom_node_``):

====================================  =========  =====================================
name                                  type       labels
====================================  =========  =====================================
instances_received_total              counter
received_bytes_total                  counter
series                                gauge      state
jobs                                  gauge      state
queue_depth                           gauge
stage_duration_seconds                histogram  stage (see :mod:`dicom_node.stats`)
deliveries                            gauge      destination, state
delivery_failures_total               counter    destination (failed attempts)
notifications                         gauge      webhook, state
workers_alive                         gauge
disk_free_bytes                       gauge
spool_bytes                           gauge
info                                  gauge      version
====================================  =========  =====================================

References
----------
Prometheus exposition formats, "Text-based format"; prometheus-client
"Custom Collectors".
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterator
from threading import Lock

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import __version__
from dicom_node.config import Settings
from dicom_node.db.models import (
    Delivery,
    DeliveryState,
    Instance,
    Job,
    JobState,
    Notification,
    Purge,
    SeriesState,
    StateChange,
)
from dicom_node.db.models import Series as SeriesRow
from dicom_node.stats import STAGES, milestones_for_jobs

logger = logging.getLogger(__name__)

#: Upper bounds (s) of the stage duration histogram buckets: 0.1 s to 2 h.
DURATION_BUCKETS_S: tuple[float, ...] = (
    0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200,
)  # fmt: skip


class JobDatabaseCollector(Collector):
    """A prometheus-client collector that reads the node's figures from the job database.

    Stage durations of a job are cached once the job is settled (finished and
    every delivery SENT or DEAD), so a scrape only computes new jobs.

    Parameters
    ----------
    session_factory : sqlalchemy.orm.sessionmaker
    settings : Settings
    workers_alive : callable or None
        Number of live worker processes; the gauge is left out when None.
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        settings: Settings,
        workers_alive: Callable[[], int] | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.settings = settings
        self.workers_alive = workers_alive
        self._settled: dict[tuple[int, object], dict[str, float]] = {}
        self._lock = Lock()

    def describe(self) -> list[Metric]:
        """No up-front description: metrics are only known at collection."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Yield every metric family (one DB session per scrape)."""
        with self.session_factory() as session:
            yield from self._collect(session)

    def _collect(self, session: Session) -> Iterator[Metric]:
        count, size = session.execute(
            select(func.count(Instance.id), func.coalesce(func.sum(Instance.size_bytes), 0))
        ).one()
        received = CounterMetricFamily(
            "dicom_node_instances_received", "SOP instances received and stored (C-STORE, upload)"
        )
        received.add_metric([], float(count))
        yield received
        received_bytes = CounterMetricFamily(
            "dicom_node_received_bytes", "Bytes of received instances stored in the spool"
        )
        received_bytes.add_metric([], float(size))
        yield received_bytes

        series = GaugeMetricFamily("dicom_node_series", "Series by state", labels=["state"])
        by_state = dict(
            session.execute(select(SeriesRow.state, func.count()).group_by(SeriesRow.state)).all()
        )
        for series_state in SeriesState:
            series.add_metric([str(series_state)], float(by_state.get(series_state, 0)))
        yield series

        jobs = GaugeMetricFamily("dicom_node_jobs", "Jobs by state", labels=["state"])
        job_states = dict(
            session.execute(select(Job.state, func.count()).group_by(Job.state)).all()
        )
        for job_state in JobState:
            jobs.add_metric([str(job_state)], float(job_states.get(job_state, 0)))
        yield jobs
        depth = GaugeMetricFamily("dicom_node_queue_depth", "Jobs waiting for a worker (QUEUED)")
        depth.add_metric([], float(job_states.get(JobState.QUEUED, 0)))
        yield depth

        yield self._durations(session)

        deliveries = GaugeMetricFamily(
            "dicom_node_deliveries", "Deliveries by destination and state",
            labels=["destination", "state"],
        )  # fmt: skip
        for name, delivery_state, n in session.execute(
            select(Delivery.destination, Delivery.state, func.count()).group_by(
                Delivery.destination, Delivery.state
            )
        ):
            deliveries.add_metric([name, str(delivery_state)], float(n))
        yield deliveries
        failures = CounterMetricFamily(
            "dicom_node_delivery_failures",
            "Failed delivery attempts (to RETRYING or DEAD) by destination",
            labels=["destination"],
        )
        names = {d.name: 0 for d in self.settings.export.destinations}
        for name, n in session.execute(
            select(Delivery.destination, func.count(StateChange.id))
            .join(
                StateChange,
                (StateChange.entity == "delivery") & (StateChange.entity_id == Delivery.id),
            )
            .where(StateChange.to_state.in_([str(DeliveryState.RETRYING), str(DeliveryState.DEAD)]))
            .group_by(Delivery.destination)
        ):
            names[name] = int(n)
        for name, n in names.items():
            failures.add_metric([name], float(n))
        yield failures

        notifications = GaugeMetricFamily(
            "dicom_node_notifications", "Webhook messages by webhook and state",
            labels=["webhook", "state"],
        )  # fmt: skip
        for name, notification_state, n in session.execute(
            select(Notification.webhook, Notification.state, func.count()).group_by(
                Notification.webhook, Notification.state
            )
        ):
            notifications.add_metric([name, str(notification_state)], float(n))
        yield notifications

        if self.workers_alive is not None:
            alive = GaugeMetricFamily("dicom_node_workers_alive", "Live worker processes")
            alive.add_metric([], float(self.workers_alive()))
            yield alive
        try:
            usage = shutil.disk_usage(self.settings.storage.spool_path)
            free = GaugeMetricFamily(
                "dicom_node_disk_free_bytes", "Free bytes on the spool's file system"
            )
            free.add_metric([], float(usage.free))
            yield free
        except OSError as err:
            logger.warning("cannot read disk usage of the spool: %s", err)
        spool = GaugeMetricFamily(
            "dicom_node_spool_bytes", "Bytes of received instances still in the spool"
        )
        spool.add_metric(
            [],
            float(
                session.scalar(
                    select(func.coalesce(func.sum(Instance.size_bytes), 0)).where(
                        Instance.series_id.not_in(select(Purge.series_id))
                    )
                )
                or 0
            ),
        )
        yield spool
        info = GaugeMetricFamily("dicom_node_info", "Node version", labels=["version"])
        info.add_metric([__version__], 1.0)
        yield info

    def _durations(self, session: Session) -> HistogramMetricFamily:
        rows = session.execute(
            select(Job.id, Job.updated_at).where(Job.state == JobState.SUCCEEDED)
        ).all()
        with self._lock:
            live = {(job_id, updated) for job_id, updated in rows}
            for key in list(self._settled):
                if key not in live:
                    del self._settled[key]
            todo = [key for key in live if key not in self._settled]
            fresh = milestones_for_jobs(session, [job_id for job_id, _ in todo])
            per_job: list[dict[str, float]] = list(self._settled.values())
            for key in todo:
                m = fresh.get(key[0])
                if m is None:
                    continue
                durations = m.durations_s()
                per_job.append(durations)
                settled_deliveries = m.delivered is not None or (
                    m.deliveries_pending > 0 and not self._has_open_delivery(session, key[0])
                )
                if settled_deliveries:
                    self._settled[key] = durations
        histogram = HistogramMetricFamily(
            "dicom_node_stage_duration_seconds",
            "Duration of each stage of a job's latest run (seconds), succeeded jobs",
            labels=["stage"],
        )
        for stage in STAGES:
            values = np.asarray([d[stage] for d in per_job if stage in d], dtype=float)
            buckets = [
                (_le(bound), float(np.count_nonzero(values <= bound)))
                for bound in DURATION_BUCKETS_S
            ]
            buckets.append(("+Inf", float(values.size)))
            histogram.add_metric([stage], buckets, sum_value=float(values.sum()))
        return histogram

    @staticmethod
    def _has_open_delivery(session: Session, job_id: int) -> bool:
        from dicom_node.db.models import ResultObject

        return (
            session.scalar(
                select(func.count(Delivery.id))
                .join(ResultObject, Delivery.result_object_id == ResultObject.id)
                .where(
                    ResultObject.job_id == job_id,
                    Delivery.state.in_([DeliveryState.PENDING, DeliveryState.RETRYING]),
                )
            )
            or 0  # COUNT always returns a row
        ) > 0


def _le(bound: float) -> str:
    return repr(float(bound))


def make_registry(
    session_factory: sessionmaker[Session],
    settings: Settings,
    workers_alive: Callable[[], int] | None = None,
) -> CollectorRegistry:
    """Return a new registry holding a :class:`JobDatabaseCollector` (one per node).

    Parameters
    ----------
    session_factory : sqlalchemy.orm.sessionmaker
        Sessions on the job database (read at each scrape).
    settings : Settings
        Destinations and the spool directory.
    workers_alive : callable or None
        Number of live worker processes; no gauge when None.

    Returns
    -------
    prometheus_client.CollectorRegistry
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobDatabaseCollector(session_factory, settings, workers_alive))
    return registry
