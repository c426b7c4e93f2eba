"""Composition root: builds every part of the node from the settings.

Only this module knows every part. :class:`Node` runs the whole node on one
machine (Storage SCP, the scheduler's sweeps, the exporter and N worker
processes); :func:`worker_process_main` is what each worker process runs;
:class:`JobExecutor` turns one job into result objects.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
from dataclasses import dataclass, field
from datetime import datetime
from io import BytesIO
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import __version__
from dicom_node.config import Settings
from dicom_node.db.engine import make_engine, make_session_factory
from dicom_node.db.models import (
    Delivery,
    DeliveryState,
    Instance,
    Job,
    ResultObject,
    Series,
    SeriesState,
    utcnow,
)
from dicom_node.db.transitions import log_initial_state, set_state
from dicom_node.errors import ResultBuildError
from dicom_node.export.exporter import deliver_due
from dicom_node.jobs.queue import enqueue, instance_set_digest, recover_stale_jobs
from dicom_node.jobs.worker import run_worker
from dicom_node.logs import configure_logging
from dicom_node.receive.ingest import InstanceIngest
from dicom_node.receive.scp import StorageSCP
from dicom_node.receive.spool import Spool
from dicom_node.recovery import recover_at_start
from dicom_node.series.completeness import mark_stable_series_complete, series_attributes
from dicom_node.series.selection import select_pipeline

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResultFile:
    """A result object written to the outbox by a job.

    Parameters
    ----------
    kind : str
        ``"SEG"`` or ``"SR"``.
    path : str
        Path relative to the outbox.
    sop_class_uid, sop_instance_uid, series_instance_uid, study_instance_uid : str
    size_bytes : int
    """

    kind: str
    path: str
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    size_bytes: int


@dataclass
class JobOutput:
    """What :meth:`JobExecutor.execute` hands to :meth:`JobExecutor.record`."""

    summary: dict[str, Any]
    files: list[ResultFile] = field(default_factory=list)


class JobExecutor:
    """Runs one job: load the series, run the pipeline, build, validate and store results.

    Pipelines are created once per process and reused (a learned model is
    loaded once, not per job).

    Parameters
    ----------
    settings : Settings
    session_factory : sqlalchemy.orm.sessionmaker
    """

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session]) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.spool = Spool(settings.storage.spool_path)
        self.outbox = Spool(settings.storage.outbox_path)
        self._pipelines: dict[str, Any] = {}

    def _pipeline(self, name: str):
        from dicom_node.pipelines import get_pipeline

        if name not in self._pipelines:
            self._pipelines[name] = get_pipeline(name)
        return self._pipelines[name]

    def execute(self, job_id: int) -> JobOutput:
        """Run job ``job_id`` and write its result objects to the outbox.

        Raises
        ------
        SeriesLoadError, PipelineError, ResultBuildError
            Permanent: the job fails without retry.
        OSError, SpoolWriteError
            Transient: the job is retried.
        """
        from dicom_node.results import build_results
        from dicom_node.results.equipment import EquipmentIdentity
        from dicom_node.series.volume import load_ct_volume, read_datasets

        with self.session_factory() as session:
            job = session.get(Job, job_id)
            pipeline_name = job.pipeline
            paths = session.scalars(
                select(Instance.path).where(Instance.series_id == job.series_id)
            ).all()
        datasets = read_datasets([self.spool.absolute(p) for p in paths])
        volume = load_ct_volume(datasets)
        pipeline = self._pipeline(pipeline_name)
        result = pipeline.run(volume)
        by_uid = {str(ds.SOPInstanceUID): ds for ds in datasets}
        ordered = [by_uid[uid] for uid in volume.sop_instance_uids]
        equipment = EquipmentIdentity(
            software_versions=__version__, device_serial_number=self.settings.dicom.ae_title
        )
        seg, sr = build_results(ordered, result, equipment=equipment)
        files = [self._store("SEG", seg), self._store("SR", sr)]
        findings = [
            {
                "label": f.label,
                "present": bool(f.present),
                "volume_ml": round(float(f.volume_ml), 3),
            }
            for f in result.findings
        ]
        summary = {
            "pipeline": result.pipeline,
            "algorithm": {"name": result.algorithm.name, "version": result.algorithm.version},
            "findings": findings,
            "details": result.details,
            "result_files": [f.path for f in files],
        }
        return JobOutput(summary=summary, files=files)

    def _store(self, kind: str, dataset) -> ResultFile:
        buffer = BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        data = buffer.getvalue()
        relative = self.outbox.relative_path(
            dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.SOPInstanceUID
        )
        path = self.outbox.write(relative, data)
        if self.settings.results.validate_with_dciodvfy:
            from dicom_node.results.validate import run_dciodvfy

            report = run_dciodvfy(path)
            if report.errors:
                raise ResultBuildError(
                    f"{kind} {path.name} fails dciodvfy: " + "; ".join(report.errors[:5])
                )
        return ResultFile(
            kind,
            str(relative),
            str(dataset.SOPClassUID),
            str(dataset.SOPInstanceUID),
            str(dataset.SeriesInstanceUID),
            str(dataset.StudyInstanceUID),
            len(data),
        )

    def record(self, session: Session, job: Job, output: JobOutput) -> dict[str, Any]:
        """Store result-object rows and one PENDING delivery per destination; return the summary."""
        now = utcnow()
        for result_file in output.files:
            row = ResultObject(
                job_id=job.id,
                kind=result_file.kind,
                sop_class_uid=result_file.sop_class_uid,
                sop_instance_uid=result_file.sop_instance_uid,
                series_instance_uid=result_file.series_instance_uid,
                study_instance_uid=result_file.study_instance_uid,
                path=result_file.path,
                size_bytes=result_file.size_bytes,
                created_at=now,
            )
            session.add(row)
            session.flush()
            for destination in self.settings.export.destinations:
                delivery = Delivery(
                    result_object_id=row.id,
                    destination=destination.name,
                    state=DeliveryState.PENDING,
                    next_attempt_at=now,
                    created_at=now,
                )
                session.add(delivery)
                session.flush()
                log_initial_state(session, delivery, now=now)
        return output.summary


def sweep_series(
    session_factory: sessionmaker[Session], settings: Settings, now: datetime | None = None
) -> None:
    """One scheduler pass: recover stale jobs, complete quiet series, select and enqueue.

    A complete series matching a selection rule gets a QUEUED job (at most one
    per series, pipeline and instance set) and becomes DISPATCHED; otherwise it
    becomes NOT_ELIGIBLE with the reason.
    """
    now = now or utcnow()
    with session_factory.begin() as session:
        recover_stale_jobs(session, settings.workers.heartbeat_timeout_s, now=now)
        mark_stable_series_complete(session, settings.series.stable_after_s, now=now)
    with session_factory.begin() as session:
        complete = session.scalars(
            select(Series).where(Series.state == SeriesState.COMPLETE).order_by(Series.id)
        ).all()
        for series in complete:
            selection = select_pipeline(
                series_attributes(session, series), settings.selection.rules
            )
            if selection.pipeline is None:
                set_state(
                    session, series, SeriesState.NOT_ELIGIBLE, reason=selection.reason, now=now
                )
                series.state_reason = selection.reason
                logger.info(
                    "series %s not eligible: %s", series.series_instance_uid, selection.reason
                )
                continue
            uids = session.scalars(
                select(Instance.sop_instance_uid).where(Instance.series_id == series.id)
            ).all()
            job, created = enqueue(
                session,
                series_id=series.id,
                pipeline=selection.pipeline,
                digest=instance_set_digest(list(uids)),
                max_attempts=settings.workers.max_attempts,
                now=now,
            )
            reason = f"{selection.reason}: job {job.id} ({selection.pipeline})"
            if not created:
                reason += ", already analysed for this instance set"
            set_state(session, series, SeriesState.DISPATCHED, reason=reason, now=now)
            series.state_reason = reason
            logger.info("series %s dispatched: %s", series.series_instance_uid, reason)


def worker_process_main(settings_data: dict[str, Any], worker_id: str, stop) -> None:
    """Entry point of a worker process (spawned by :class:`Node` or ``dicom-node worker``).

    Parameters
    ----------
    settings_data : dict
        ``Settings.model_dump(mode="json")`` of the parent.
    worker_id : str
        Identifies the worker in job rows and logs (host:pid:index).
    stop : multiprocessing.Event
        Set by the parent to stop the worker after its current job.
    """
    settings = Settings.model_validate(settings_data)
    configure_logging(settings.log_level, log_library_warnings=settings.log_library_warnings)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    engine = make_engine(settings.storage.url)
    session_factory = make_session_factory(engine)
    executor = JobExecutor(settings, session_factory)
    run_worker(
        session_factory,
        executor.execute,
        executor.record,
        worker_id=worker_id,
        settings=settings.workers,
        stop=stop,
    )
    engine.dispose()


class Node:
    """The whole node on one machine: SCP, scheduler sweeps, exporter and worker processes.

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
        settings.storage.base_dir.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(settings.storage.url)
        self.session_factory = make_session_factory(self.engine)
        self.spool = Spool(settings.storage.spool_path)
        settings.storage.outbox_path.mkdir(parents=True, exist_ok=True)
        self.scp = StorageSCP(settings.dicom, InstanceIngest(self.spool, self.session_factory))
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self._context = multiprocessing.get_context("spawn")
        self._stop = self._context.Event()
        self._workers: list[multiprocessing.process.BaseProcess] = []

    def sweep(self) -> None:
        """Run one series sweep now (see :func:`sweep_series`)."""
        try:
            sweep_series(self.session_factory, self.settings)
        except Exception:  # noqa: BLE001 - the scheduler must keep running
            logger.exception("series sweep failed")

    def export(self) -> None:
        """Attempt the due deliveries now (see :func:`deliver_due`)."""
        try:
            deliver_due(
                self.session_factory,
                self.settings.export.destinations,
                outbox=self.settings.storage.outbox_path,
                calling_ae_title=self.settings.dicom.ae_title,
            )
        except Exception:  # noqa: BLE001
            logger.exception("export sweep failed")

    def start(self) -> None:
        """Recover from a previous crash, then start the SCP, the scheduler and the workers."""
        recover_at_start(self.scp.ingest, self.session_factory, host=socket.gethostname())
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
        self.scheduler.start()
        data = self.settings.model_dump(mode="json")
        host = socket.gethostname()
        for index in range(self.settings.workers.processes):
            worker_id = f"{host}:{os.getpid()}:w{index}"
            process = self._context.Process(
                target=worker_process_main,
                args=(data, worker_id, self._stop),
                name=f"dicom-node-worker-{index}",
                daemon=True,
            )
            process.start()
            self._workers.append(process)
        if not self.settings.export.destinations:
            logger.warning(
                "no export destinations configured: results stay in %s",
                self.settings.storage.outbox_path,
            )

    @property
    def port(self) -> int:
        """The Storage SCP's bound TCP port."""
        return self.scp.port

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop accepting, stop the scheduler, let workers finish their job, then exit."""
        self.scp.stop()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        self._stop.set()
        for process in self._workers:
            process.join(timeout_s)
            if process.is_alive():
                logger.warning(
                    "worker %s did not stop in %.0f s, terminating", process.name, timeout_s
                )
                process.terminate()
                process.join(5)
        self._workers.clear()
        self.engine.dispose()

    def workers_alive(self) -> int:
        """Number of worker processes still running."""
        return sum(p.is_alive() for p in self._workers)

