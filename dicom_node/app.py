"""Composition root: builds every part of the node from the settings.

Only this module knows every part. :class:`Node` runs the whole node on one
machine: the Storage SCP (or a pool of receiver processes), the scheduler's
sweeps (series dispatch, export, notifications, retention, C-ECHO checks),
the exporter, the dashboard and N worker processes. What those parts do lives
with them: the job executor in :mod:`dicom_node.jobs.executor`, the series
dispatch in :mod:`dicom_node.jobs.dispatch`, the worker processes in
:mod:`dicom_node.jobs.processes`.
"""

from __future__ import annotations

import logging
import socket
import threading
from datetime import datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler

from dicom_node.audit import AuditLog
from dicom_node.config import Settings
from dicom_node.db.engine import make_engine, make_session_factory
from dicom_node.db.models import utcnow
from dicom_node.db.schema import check_schema
from dicom_node.export.exporter import DeadDeliveryResumer, deliver_due, peer_for
from dicom_node.jobs.dispatch import sweep_series
from dicom_node.jobs.processes import WorkerPool
from dicom_node.jobs.processes import (  # kept for cli.py until the CLI split lands
    worker_process_main as worker_process_main,
)
from dicom_node.metrics import make_registry
from dicom_node.notifications import send_due_notifications
from dicom_node.receive.associations import close_lost_associations
from dicom_node.receive.ingest import InstanceIngest
from dicom_node.receive.pool import ReceiverPool
from dicom_node.receive.scp import StorageSCP
from dicom_node.receive.spool import Spool
from dicom_node.recovery import recover_at_start
from dicom_node.results.validate import check_validation_setting
from dicom_node.retention import purge
from dicom_node.stats import DestinationMonitor

logger = logging.getLogger(__name__)


class Node:
    """The whole node on one machine: SCP, scheduler sweeps, exporter, workers, dashboard.

    The scheduler also sends webhook notifications, purges expired files
    (retention) and C-ECHOes the destinations; the dashboard (``web.enabled``)
    serves pages, ``/metrics`` from :attr:`registry` and ``/health``.

    Parameters
    ----------
    settings : Settings

    Examples
    --------
    >>> node = Node(load_settings())   # doctest: +SKIP
    >>> node.start(); ...; node.stop()  # doctest: +SKIP
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        notice = check_validation_setting(settings.results.validation)  # raises if required
        if notice is not None:
            logger.warning("%s", notice)
        settings.storage.base_dir.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(settings.storage.url)
        check_schema(self.engine)
        self.session_factory = make_session_factory(self.engine)
        self.spool = Spool(settings.storage.spool_path)
        settings.storage.outbox_path.mkdir(parents=True, exist_ok=True)
        # Instance rows commit with synchronous=NORMAL: the fsynced spool file is the durable
        # record, and start-up recovery records files whose row a power loss dropped.
        url = settings.storage.url
        self.receive_engine = (
            make_engine(url, sqlite_synchronous="NORMAL")
            if url.startswith("sqlite") and not url.endswith(":memory:")
            else self.engine
        )
        self.audit = AuditLog(
            self.session_factory if settings.audit.database else None,
            enabled=settings.audit.enabled,
        )
        # Built once: a TLS file that cannot be loaded stops the node here, with its name.
        self.peers = {
            d.name: peer_for(d, settings.dicom.ae_title) for d in settings.export.destinations
        }
        self.resumer = DeadDeliveryResumer(
            self.session_factory,
            settings.export.destinations,
            calling_ae_title=settings.dicom.ae_title,
            interval_s=settings.export.echo_interval_s,
            peers=self.peers,
            audit=self.audit,
        )
        self.scp = StorageSCP(
            settings.dicom,
            InstanceIngest(self.spool, make_session_factory(self.receive_engine)),
            on_association_closed=self._association_closed,
            audit=self.audit,
        )
        self.receivers: ReceiverPool | None = None
        if settings.dicom.receiver_processes:
            self.receivers = ReceiverPool(
                settings,
                settings.dicom.receiver_processes,
                on_association_closed=self._association_closed,
                close_lost=self._close_lost_associations,
            )
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self.workers = WorkerPool(settings)
        self._sweep_lock = threading.Lock()
        self.started_at: datetime | None = None
        self.monitor = DestinationMonitor(
            settings.export.destinations,
            settings.dicom.ae_title,
            settings.monitoring.echo_timeout_s,
        )
        self.registry = make_registry(self.session_factory, settings, self.workers_alive)
        self.web = None
        if settings.web.enabled:
            from dicom_node.web import WebServer, create_app

            web_app = create_app(
                settings,
                self.session_factory,
                registry=self.registry,
                workers_alive=self.workers_alive,
                monitor=self.monitor,
            )
            self.web = WebServer(web_app, settings.web.host, settings.web.port)

    def _association_closed(self, association_id: int) -> None:
        """Run an extra series sweep ``release_grace_s`` after an association closed.

        A one-shot job with a fixed id: a later closure replaces it, and the
        interval sweep runs regardless, so a stream of short associations
        neither floods nor starves the sweep.
        """
        if not self.settings.series.early_completion or not self.scheduler.running:
            return
        self.scheduler.add_job(
            self.sweep,
            "date",
            id="series-sweep-released",
            run_date=utcnow() + timedelta(seconds=self.settings.series.release_grace_s + 0.05),
            replace_existing=True,
            misfire_grace_time=30,
        )

    def _close_lost_associations(self, receiver: str) -> None:
        with self.session_factory.begin() as session:
            close_lost_associations(session, receiver)

    def check_receivers(self) -> None:
        """Replace receiver processes that died (see :meth:`ReceiverPool.check`)."""
        if self.receivers is None:
            return
        try:
            self.receivers.check()
        except Exception:
            logger.exception("receiver check failed")

    def sweep(self) -> None:
        """Run one series sweep now (see :func:`sweep_series`); one at a time."""
        with self._sweep_lock:
            try:
                sweep_series(self.session_factory, self.settings, node_started_at=self.started_at)
            except Exception:  # the scheduler must keep running
                logger.exception("series sweep failed")

    def export(self) -> None:
        """Attempt the due deliveries now (see :func:`deliver_due`)."""
        try:
            deliver_due(
                self.session_factory,
                self.settings.export.destinations,
                outbox=self.settings.storage.outbox_path,
                calling_ae_title=self.settings.dicom.ae_title,
                peers=self.peers,
                audit=self.audit,
            )
        except Exception:
            logger.exception("export sweep failed")

    def resume_dead_deliveries(self) -> None:
        """C-ECHO the destinations with DEAD deliveries; requeue those of each that answers.

        See :class:`DeadDeliveryResumer`; each destination is contacted at most
        every ``export.echo_interval_s`` (PS3.7 9.1.5 C-ECHO).
        """
        try:
            self.resumer.run()
        except Exception:  # the scheduler must keep running
            logger.exception("resuming DEAD deliveries failed")

    def notify(self) -> None:
        """Send pending webhook notifications now (see :func:`send_due_notifications`)."""
        try:
            send_due_notifications(self.session_factory, self.settings)
        except Exception:
            logger.exception("notification sweep failed")

    def purge_expired(self) -> None:
        """Purge delivered files older than ``retention.max_age_days`` (see :func:`purge`)."""
        try:
            purge(self.session_factory, self.settings)
        except Exception:
            logger.exception("retention purge failed")

    def check_destinations(self) -> None:
        """C-ECHO every destination now, for the dashboard's overview."""
        try:
            self.monitor.check()
        except Exception:
            logger.exception("C-ECHO of the destinations failed")

    def _add_operations_jobs(self) -> None:
        interval_jobs = [
            (self.notify, "notify-sweep", self.settings.notifications.sweep_interval_s)
        ]
        if self.settings.retention.enabled:
            interval_jobs.append(
                (self.purge_expired, "retention-purge", self.settings.retention.interval_s)
            )
        if self.settings.export.destinations:
            interval_jobs.append(
                (self.check_destinations, "echo-check", self.settings.monitoring.echo_interval_s)
            )
            # Looks often (one query), C-ECHOs a destination at most every echo_interval_s.
            interval_jobs.append(
                (
                    self.resume_dead_deliveries,
                    "dead-delivery-resume",
                    min(self.settings.export.echo_interval_s / 2, 5.0),
                )
            )
        for function, job_id, seconds in interval_jobs:
            self.scheduler.add_job(
                function,
                "interval",
                id=job_id,
                seconds=seconds,
                max_instances=1,
                coalesce=True,
                next_run_time=utcnow(),
            )

    def start(self) -> None:
        """Recover from a previous crash, then start the SCP, the scheduler and the workers."""
        self.started_at = utcnow()
        if self.web is not None:
            self.web.start()  # first: a port in use stops the start before anything runs
        recover_at_start(self.scp.ingest, self.session_factory, host=socket.gethostname())
        with self.session_factory.begin() as session:
            close_lost_associations(session)  # none survives a restart
        if self.receivers is not None:
            self.receivers.start()
            self.scheduler.add_job(
                self.check_receivers,
                "interval",
                id="receiver-check",
                seconds=5,
                max_instances=1,
                coalesce=True,
            )
        else:
            self.scp.start()
        self.scheduler.add_job(
            self.sweep,
            "interval",
            id="series-sweep",
            seconds=self.settings.series.sweep_interval_s,
            max_instances=1,
            coalesce=True,
            next_run_time=utcnow(),
        )
        self.scheduler.add_job(
            self.export,
            "interval",
            id="export-sweep",
            seconds=self.settings.export.sweep_interval_s,
            max_instances=1,
            coalesce=True,
            next_run_time=utcnow(),
        )
        self._add_operations_jobs()
        self.scheduler.start()
        self.workers.start()
        if not self.settings.export.destinations:
            logger.warning(
                "no export destinations configured: results stay in %s",
                self.settings.storage.outbox_path,
            )

    @property
    def port(self) -> int:
        """The Storage SCP's bound TCP port."""
        return self.receivers.port if self.receivers is not None else self.scp.port

    @property
    def web_url(self) -> str | None:
        """Base URL of the dashboard, None when ``web.enabled`` is false."""
        return self.web.url if self.web is not None else None

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop accepting, stop the scheduler, let workers finish their job, then exit."""
        if self.web is not None:
            self.web.stop()
        if self.receivers is not None:
            self.receivers.stop(timeout_s)
        self.scp.stop()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        self.workers.stop(timeout_s)
        if self.receive_engine is not self.engine:
            self.receive_engine.dispose()
        self.engine.dispose()

    def workers_alive(self) -> int:
        """Number of worker processes still running."""
        return self.workers.alive()
