"""Composition root: builds every part of the node from the settings.

Only this module knows every part. :class:`Node` runs the whole node on one
machine (Storage SCP, the scheduler's sweeps, the exporter and N worker
processes); :func:`worker_process_main` is what each worker process runs;
:class:`JobExecutor` turns one job into result objects.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import __version__
from dicom_node.audit import AuditLog
from dicom_node.config import Settings
from dicom_node.db.engine import make_engine, make_session_factory
from dicom_node.db.models import (
    Delivery,
    DeliveryState,
    Instance,
    Job,
    JobState,
    ResultObject,
    Series,
    SeriesState,
    utcnow,
)
from dicom_node.db.schema import check_schema
from dicom_node.db.transitions import log_initial_state, set_state
from dicom_node.errors import ResultBuildError
from dicom_node.export.exporter import DeadDeliveryResumer, deliver_due, peer_for
from dicom_node.jobs.limits import limit_worker_memory
from dicom_node.jobs.queue import (
    cancel_superseded,
    enqueue,
    instance_set_digest,
    recover_stale_jobs,
)
from dicom_node.jobs.worker import run_worker
from dicom_node.logs import configure_logging
from dicom_node.metrics import make_registry
from dicom_node.notifications import queue_notifications, send_due_notifications
from dicom_node.receive.associations import close_lost_associations
from dicom_node.receive.ingest import InstanceIngest
from dicom_node.receive.pool import ReceiverPool
from dicom_node.receive.scp import StorageSCP
from dicom_node.receive.spool import Spool
from dicom_node.recovery import recover_at_start
from dicom_node.results.validate import check_validation_setting
from dicom_node.retention import purge
from dicom_node.series.completeness import (
    mark_proven_series_complete,
    mark_stable_series_complete,
    series_attributes,
)
from dicom_node.series.selection import select_pipeline
from dicom_node.stats import DestinationMonitor

if TYPE_CHECKING:
    from dicom_node.results.versioning import PredecessorDocument

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResultFile:
    """A result object written to the outbox by a job.

    Parameters
    ----------
    kind : str
        ``"SEG"``, ``"SR"`` or ``"SC"``.
    path : str
        Path relative to the outbox.
    sop_class_uid, sop_instance_uid, series_instance_uid, study_instance_uid : str
    size_bytes : int
    destinations : tuple of str
        Destinations whose result profile names this object (one delivery each).
    """

    kind: str
    path: str
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    size_bytes: int
    destinations: tuple[str, ...] = ()


@dataclass(frozen=True)
class ResultVersion:
    """The result version a job's run produces (see :mod:`dicom_node.results.versioning`).

    Parameters
    ----------
    version : int
        1 for the first result set of a series and pipeline.
    supersedes : int or None
        The version this one replaces.
    superseded_job_id : int or None
        The job that produced the superseded version.
    predecessors : tuple of PredecessorDocument
        That job's SR objects (the new SR's Predecessor Documents Sequence).
    """

    version: int
    supersedes: int | None = None
    superseded_job_id: int | None = None
    predecessors: tuple[PredecessorDocument, ...] = ()

    def summary(self) -> dict[str, Any]:
        """Keys stored in the job's result summary."""
        data: dict[str, Any] = {"result_version": self.version}
        if self.supersedes is not None:
            data["supersedes"] = {"version": self.supersedes, "job_id": self.superseded_job_id}
        return data


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
            self._pipelines[name] = get_pipeline(
                name, ich_model_dir=self.settings.models.ich_model_dir
            )
        return self._pipelines[name]

    def _destination_profiles(self) -> dict[str, Any]:
        """Destination name -> its result profile (see :mod:`dicom_node.results.profiles`)."""
        profiles = self.settings.results.profiles
        return {d.name: profiles[d.profile] for d in self.settings.export.destinations}

    def execute(self, job_id: int) -> JobOutput:
        """Run job ``job_id`` and write its result objects to the outbox.

        A series that fails a quality gate (:mod:`dicom_node.series.quality`)
        or cannot form a volume is not analysed: the job succeeds with the
        gate and reason in its summary (``not_analysable``) and delivers the
        "not analysable" report. Each destination receives the objects its
        result profile names.

        Raises
        ------
        SeriesLoadError, PipelineError, ResultBuildError
            Permanent: the job fails without retry.
        OSError, SpoolWriteError
            Transient: the job is retried.
        """
        from dicom_node.errors import NotAnalysableError, SeriesLoadError
        from dicom_node.results import build_not_analysable_results, build_results_for_profiles
        from dicom_node.results.equipment import EquipmentIdentity
        from dicom_node.results.versioning import mark_result_version
        from dicom_node.series.quality import (
            QualityFailure,
            check_head_coverage,
            check_series_headers,
        )
        from dicom_node.series.volume import load_ct_volume, read_datasets, source_images_for

        with self.session_factory() as session:
            job = session.get(Job, job_id)
            pipeline_name = job.pipeline
            paths = self._instance_set(session, job)
            version = self._result_version(session, job)
        # Stage marks (UTC) for the latency breakdown: pixels are read and decoded once, here.
        stages = {"started_at": utcnow()}
        datasets = read_datasets([self.spool.absolute(p) for p in paths])
        pipeline = self._pipeline(pipeline_name)
        equipment = EquipmentIdentity(
            software_versions=__version__, device_serial_number=self.settings.dicom.ae_title
        )
        profiles = self._destination_profiles()
        failure = check_series_headers(datasets, self.settings.quality)
        volume = None
        if failure is None:
            try:
                volume = load_ct_volume(datasets, pixel_limits=self.settings.pixels)
            except SeriesLoadError as err:
                failure = QualityFailure("volume", f"the series cannot form a volume: {err}")
        if volume is not None and failure is None:
            failure = check_head_coverage(volume, self.settings.quality)
        stages["loaded_at"] = utcnow()
        result = None
        if failure is None:
            assert volume is not None
            try:
                result = pipeline.run(volume)
            except NotAnalysableError as err:
                # The pipeline's own plausibility checks (input before the model,
                # output after it) refused the series: a report, never a finding.
                failure = QualityFailure(err.gate, err.reason)
            stages["inference_done_at"] = utcnow()
        if failure is not None:
            labels = getattr(pipeline, "finding_labels", None) or ("intracranial hemorrhage",)
            objects = build_not_analysable_results(
                datasets,
                pipeline=pipeline_name,
                algorithm=pipeline.algorithm,
                finding_labels=labels,
                reason=failure.reason,
                equipment=equipment,
                profiles=profiles,
            )
            stages["results_built_at"] = utcnow()
            for o in objects:
                mark_result_version(o.dataset, version.version, version.supersedes,
                                    version.predecessors)
            files = [self._store(o.kind, o.dataset, o.destinations) for o in objects]
            stages["results_written_at"] = utcnow()
            logger.info("job %d: series not analysable (%s)", job_id, failure.gate)
            algorithm = pipeline.algorithm
            summary = {
                "pipeline": pipeline_name,
                "algorithm": {"name": algorithm.name, "version": algorithm.version},
                "findings": [],
                "not_analysable": failure.as_dict(),
                "details": {},
                "result_files": [f.path for f in files],
                "stages": {name: at.isoformat() for name, at in stages.items()},
                **version.summary(),
            }
            return JobOutput(summary=summary, files=files)
        assert result is not None and volume is not None
        # Slice order; copies carrying the Frame of Reference UID when the volume derived one.
        ordered = source_images_for(volume, datasets)
        overlay = any(p.send_overlay for p in profiles.values())
        objects = build_results_for_profiles(
            ordered,
            result,
            equipment=equipment,
            profiles=profiles,
            hu=volume.hu if overlay else None,
            max_key_slices=self.settings.results.max_key_slices,
        )
        stages["results_built_at"] = utcnow()
        for o in objects:
            mark_result_version(o.dataset, version.version, version.supersedes,
                                    version.predecessors)
        files = [self._store(o.kind, o.dataset, o.destinations) for o in objects]
        stages["results_written_at"] = utcnow()  # stored in the outbox and validated
        findings = [
            {
                "label": f.label,
                "present": bool(f.present),
                "volume_ml": round(float(f.volume_ml), 3),
                # Side and site when the pipeline names them (CTA: LVO side and segment).
                **({"laterality": f.laterality} if f.laterality else {}),
                **({"finding_site": f.finding_site} if f.finding_site else {}),
            }
            for f in result.findings
        ]
        summary = {
            "pipeline": result.pipeline,
            "algorithm": {"name": result.algorithm.name, "version": result.algorithm.version},
            "findings": findings,
            "details": result.details,
            "result_files": [f.path for f in files],
            "stages": {name: at.isoformat() for name, at in stages.items()},
            **version.summary(),
        }
        return JobOutput(summary=summary, files=files)

    @staticmethod
    def _instance_set(session: Session, job: Job) -> list[str]:
        """Spool paths of exactly the instances the job's digest covers.

        Instances that arrived after the job was queued belong to the next
        job (they re-opened the series); they are left out here.
        """
        query = select(Instance.path, Instance.sop_instance_uid).where(
            Instance.series_id == job.series_id
        )
        if job.max_instance_id is not None:
            query = query.where(Instance.id <= job.max_instance_id)
        rows = session.execute(query.order_by(Instance.id)).all()
        if instance_set_digest([uid for _, uid in rows]) != job.instance_set_digest:
            logger.warning(
                "job %d: the instances found differ from the set it was queued for "
                "(rows removed by recovery or committed late); analysing %d instance(s)",
                job.id,
                len(rows),
            )
        return [path for path, _ in rows]

    @staticmethod
    def _result_version(session: Session, job: Job) -> ResultVersion:
        """The result version this run produces: 1, or one more than the newest earlier one.

        Earlier result sets are those of the series' other SUCCEEDED jobs of
        the same pipeline, and this job's own earlier run when it was requeued.
        """
        earlier = session.scalars(
            select(Job).where(
                Job.series_id == job.series_id,
                Job.pipeline == job.pipeline,
                Job.result_summary.is_not(None),
                (Job.state == JobState.SUCCEEDED) | (Job.id == job.id),
            )
        ).all()
        newest: tuple[int, int] | None = None  # (version, job id)
        for other in earlier:
            summary = other.result_summary or {}
            if not summary.get("result_files"):
                continue
            number = int(summary.get("result_version") or 1)
            if newest is None or (number, other.id) > newest:
                newest = (number, other.id)
        if newest is None:
            return ResultVersion(1)
        from dicom_node.results.versioning import PredecessorDocument

        predecessors = tuple(
            PredecessorDocument(o.study_instance_uid, o.series_instance_uid, o.sop_class_uid,
                                o.sop_instance_uid)
            for o in session.scalars(
                select(ResultObject)
                .where(ResultObject.job_id == newest[1], ResultObject.kind == "SR")
                .order_by(ResultObject.id)
            )
        )
        return ResultVersion(newest[0] + 1, supersedes=newest[0], superseded_job_id=newest[1],
                             predecessors=predecessors)

    def _store(self, kind: str, dataset, destinations: tuple[str, ...] = ()) -> ResultFile:
        buffer = BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        data = buffer.getvalue()
        relative = self.outbox.relative_path(
            dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.SOPInstanceUID
        )
        path = self.outbox.write(relative, data)
        if self.settings.results.dciodvfy_enabled():
            from dicom_node.results.validate import validate_result_file

            report = validate_result_file(path)
            if report.errors:
                raise ResultBuildError(
                    f"{kind} {path.name} fails dciodvfy: "
                    + "; ".join(m.redacted() for m in report.errors[:5])
                )
        return ResultFile(
            kind,
            str(relative),
            str(dataset.SOPClassUID),
            str(dataset.SOPInstanceUID),
            str(dataset.SeriesInstanceUID),
            str(dataset.StudyInstanceUID),
            len(data),
            tuple(destinations),
        )

    def record(self, session: Session, job: Job, output: JobOutput) -> dict[str, Any]:
        """Store result-object rows and one PENDING delivery per destination named; return summary.

        A result object gets a delivery for each destination whose profile
        names it (:attr:`ResultFile.destinations`), and only for destinations
        still configured.
        """
        now = utcnow()
        configured = {d.name for d in self.settings.export.destinations}
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
            for destination_name in result_file.destinations:
                if destination_name not in configured:
                    continue
                delivery = Delivery(
                    result_object_id=row.id,
                    destination=destination_name,
                    state=DeliveryState.PENDING,
                    next_attempt_at=now,
                    created_at=now,
                )
                session.add(delivery)
                session.flush()
                log_initial_state(session, delivery, now=now)
        queue_notifications(
            session, job, output.summary, self.settings.notifications.webhooks, now=now
        )
        return output.summary


def sweep_series(
    session_factory: sessionmaker[Session],
    settings: Settings,
    now: datetime | None = None,
    *,
    node_started_at: datetime | None = None,
) -> None:
    """One scheduler pass: recover stale jobs, complete proven and quiet series, select, enqueue.

    A complete series matching a selection rule gets a QUEUED job (at most one
    per series, pipeline and instance set) and becomes DISPATCHED; otherwise it
    becomes NOT_ELIGIBLE with the reason.

    Parameters
    ----------
    session_factory : sqlalchemy.orm.sessionmaker
        Sessions on the job database.
    settings : Settings
        Quiet time, heartbeat timeout, selection rules, attempts.
    now : datetime or None
        Current time (UTC).
    node_started_at : datetime or None
        When the node started. For one quiet period after a start, no series is
        completed: the node's downtime is not quiet time, and senders cut off by
        a crash need that long to resend what was not acknowledged.
    """
    now = now or utcnow()
    with session_factory.begin() as session:
        recover_stale_jobs(session, settings.workers.heartbeat_timeout_s, now=now)
        if settings.series.early_completion:
            # Proof needs no quiet period (also not after a start): associations cut by a
            # crash are LOST, not RELEASED, and prove nothing.
            mark_proven_series_complete(
                session, release_grace_s=settings.series.release_grace_s,
                across_associations=settings.series.early_completion_across_associations,
                now=now,
            )
        warmed_up = node_started_at is None or (
            (now - node_started_at).total_seconds() >= settings.series.stable_after_s
        )
        if warmed_up:
            mark_stable_series_complete(session, settings.series.stable_after_s, now=now)
    with session_factory.begin() as session:
        complete = session.scalars(
            select(Series).where(Series.state == SeriesState.COMPLETE).order_by(Series.id)
        ).all()
        eligible: dict[tuple[int, str], list[tuple[Series, Any, Any]]] = {}
        for series in complete:
            attributes = dataclasses.replace(
                series_attributes(session, series),
                convolution_kernel=series.convolution_kernel or "",
            )
            selection = select_pipeline(attributes, settings.selection.rules)
            if selection.pipeline is None:
                _not_eligible(session, series, selection.reason, now)
                continue
            eligible.setdefault((series.study_id, selection.pipeline), []).append(
                (series, selection, attributes)
            )
        for (study_id, pipeline), group in eligible.items():
            if settings.selection.preference.multiple_series == "all":
                for series, selection, _ in group:
                    _dispatch(session, series, selection, settings, now)
                continue
            _dispatch_preferred(session, study_id, pipeline, group, settings, now)


def _not_eligible(session: Session, series: Series, reason: str, now: datetime) -> None:
    """Mark a complete series NOT_ELIGIBLE with the reason."""
    set_state(session, series, SeriesState.NOT_ELIGIBLE, reason=reason, now=now)
    series.state_reason = reason
    logger.info("series %s not eligible: %s", series.series_instance_uid, reason)


def algorithm_version(pipeline: str, ich_model_dir: Path | None = None) -> str:
    """Return the algorithm (model) version of a pipeline, part of a job's identity.

    Parameters
    ----------
    pipeline : str
        Pipeline name from the selection rules.
    ich_model_dir : Path or None
        Model package of the ``ich`` pipeline (``[models] ich_model_dir``).

    Returns
    -------
    str
        ``AlgorithmIdentity.version`` of the pipeline; ``""`` for an unknown
        pipeline (its job then fails in the worker with the reason).
    """
    from dicom_node.errors import ConfigurationError, ModelPackageError
    from dicom_node.pipelines import get_pipeline

    try:
        return str(get_pipeline(pipeline, ich_model_dir=ich_model_dir).algorithm.version)
    except (ConfigurationError, ModelPackageError) as err:
        logger.error("pipeline %r: %s", pipeline, err)
        return ""


def _dispatch(session: Session, series: Series, selection, settings: Settings, now: datetime):
    """Queue a job for a selected series and mark it DISPATCHED.

    One job per (series, pipeline, algorithm version, instance set): a series
    sent twice is analysed once, a new algorithm version analyses it again.
    A job still QUEUED for an older instance set of the series is canceled:
    the new job supersedes it.
    """
    rows = session.execute(
        select(Instance.id, Instance.sop_instance_uid).where(Instance.series_id == series.id)
    ).all()
    job, created = enqueue(
        session,
        series_id=series.id,
        pipeline=selection.pipeline,
        digest=instance_set_digest([uid for _, uid in rows]),
        max_attempts=settings.workers.max_attempts,
        now=now,
        pipeline_version=algorithm_version(selection.pipeline, settings.models.ich_model_dir),
        max_instance_id=max((row_id for row_id, _ in rows), default=None),
    )
    reason = f"{selection.reason}: job {job.id} ({selection.pipeline})"
    if created:
        superseded = cancel_superseded(session, job, now=now)
        if superseded:
            reason += f", supersedes queued job {', '.join(map(str, superseded))}"
    else:
        reason += ", already analysed for this instance set"
    set_state(session, series, SeriesState.DISPATCHED, reason=reason, now=now)
    series.state_reason = reason
    logger.info("series %s dispatched: %s", series.series_instance_uid, reason)


def _dispatch_preferred(
    session: Session,
    study_id: int,
    pipeline: str,
    group: list[tuple[Series, Any, Any]],
    settings: Settings,
    now: datetime,
) -> None:
    """Analyse only the preferred one of a study's eligible series for one pipeline.

    The choice waits while another series of the study is still RECEIVING (it
    may be the better one). A series of the study already analysed by the
    pipeline earlier keeps that role; the others are NOT_ELIGIBLE, with the
    preferred series and the deciding criterion in the reason.
    """
    from dicom_node.series.selection import Candidate, rank_candidates

    ids = [series.id for series, _, _ in group]
    receiving = session.scalar(
        select(Series.id).where(
            Series.study_id == study_id,
            Series.state == SeriesState.RECEIVING,
            Series.id.not_in(ids),
        )
    )
    if receiving is not None:
        logger.debug("study %d: waiting for series still receiving before choosing", study_id)
        return
    earlier = session.scalar(
        select(Series)
        .join(Job, Job.series_id == Series.id)
        .where(Series.study_id == study_id, Job.pipeline == pipeline, Series.id.not_in(ids))
        .order_by(Job.id)
    )
    if earlier is not None:
        for series, selection, _ in group:
            _not_eligible(
                session,
                series,
                f"{selection.reason}, but series {earlier.series_instance_uid} of the same "
                f"study was analysed by {pipeline!r} before (selection.preference."
                "multiple_series = 'best')",
                now,
            )
        return
    candidates = [Candidate(s.series_instance_uid, attributes, s.id) for s, _, attributes in group]
    ranked = rank_candidates(candidates, settings.selection.preference)
    by_uid = {series.series_instance_uid: (series, selection) for series, selection, _ in group}
    for candidate, why_not in ranked:
        series, selection = by_uid[candidate.series_instance_uid]
        if not why_not:
            _dispatch(session, series, selection, settings, now)
        else:
            _not_eligible(session, series, f"{selection.reason}, but {why_not}", now)


def _exit_when_orphaned(parent_pid: int, interval_s: float = 1.0) -> None:
    """Exit this process as soon as its parent has died (checked every ``interval_s``).

    A worker whose node was killed (SIGKILL, OOM killer) must not go on
    claiming jobs; the job it was running stays RUNNING and is requeued by the
    restarted node's start-up recovery.
    """
    while True:
        time.sleep(interval_s)
        if os.getppid() != parent_pid:
            logger.error("node process %d is gone: worker exits", parent_pid)
            os._exit(3)


def worker_process_main(
    settings_data: dict[str, Any], worker_id: str, stop, parent_pid: int | None = None
) -> None:
    """Entry point of a worker process (spawned by :class:`Node` or ``dicom-node worker``).

    Parameters
    ----------
    settings_data : dict
        ``Settings.model_dump(mode="json")`` of the parent.
    worker_id : str
        Identifies the worker in job rows and logs (host:pid:index).
    stop : multiprocessing.Event
        Set by the parent to stop the worker after its current job.
    parent_pid : int or None
        The node's process id; when given, the worker exits if that process dies.
    """
    if parent_pid is not None:
        threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), daemon=True).start()
    settings = Settings.model_validate(settings_data)
    configure_logging(settings.log_level, log_library_warnings=settings.log_library_warnings)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    limit_worker_memory(settings.workers.max_memory_bytes)
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
        self._context = multiprocessing.get_context("spawn")
        self._stop = self._context.Event()
        self._workers: list[multiprocessing.process.BaseProcess] = []
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
        except Exception:  # noqa: BLE001
            logger.exception("receiver check failed")

    def sweep(self) -> None:
        """Run one series sweep now (see :func:`sweep_series`); one at a time."""
        with self._sweep_lock:
            try:
                sweep_series(self.session_factory, self.settings, node_started_at=self.started_at)
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
                peers=self.peers,
                audit=self.audit,
            )
        except Exception:  # noqa: BLE001
            logger.exception("export sweep failed")

    def resume_dead_deliveries(self) -> None:
        """C-ECHO the destinations with DEAD deliveries; requeue those of each that answers.

        See :class:`DeadDeliveryResumer`; each destination is contacted at most
        every ``export.echo_interval_s`` (PS3.7 9.1.5 C-ECHO).
        """
        try:
            self.resumer.run()
        except Exception:  # noqa: BLE001 - the scheduler must keep running
            logger.exception("resuming DEAD deliveries failed")

    def notify(self) -> None:
        """Send pending webhook notifications now (see :func:`send_due_notifications`)."""
        try:
            send_due_notifications(self.session_factory, self.settings)
        except Exception:  # noqa: BLE001
            logger.exception("notification sweep failed")

    def purge_expired(self) -> None:
        """Purge delivered files older than ``retention.max_age_days`` (see :func:`purge`)."""
        try:
            purge(self.session_factory, self.settings)
        except Exception:  # noqa: BLE001
            logger.exception("retention purge failed")

    def check_destinations(self) -> None:
        """C-ECHO every destination now, for the dashboard's overview."""
        try:
            self.monitor.check()
        except Exception:  # noqa: BLE001
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
                self.check_receivers, "interval", id="receiver-check", seconds=5,
                max_instances=1, coalesce=True,
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
        data = self.settings.model_dump(mode="json")
        host = socket.gethostname()
        for index in range(self.settings.workers.processes):
            worker_id = f"{host}:{os.getpid()}:w{index}"
            process = self._context.Process(
                target=worker_process_main,
                args=(data, worker_id, self._stop, os.getpid()),
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
        if self.receive_engine is not self.engine:
            self.receive_engine.dispose()
        self.engine.dispose()

    def workers_alive(self) -> int:
        """Number of worker processes still running."""
        return sum(p.is_alive() for p in self._workers)

