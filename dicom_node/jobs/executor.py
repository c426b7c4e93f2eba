"""The job executor: one job in, result objects in the outbox and rows in the database.

:class:`JobExecutor` is what a worker process runs for each job it claims
(:func:`dicom_node.jobs.worker.run_worker`): :meth:`JobExecutor.execute` loads
the job's instance set from the spool, applies the quality gates, runs the
pipeline, builds, versions, validates (dciodvfy) and writes the result
objects; :meth:`JobExecutor.record` stores their rows and one PENDING delivery
per destination whose result profile names them, and queues the webhook
notifications. The job's state transitions (RUNNING -> SUCCEEDED, retry or
FAILED) are the worker loop's, driven by the exception classes raised here.

References
----------
DICOM PS3.3 A.51 Segmentation IOD; PS3.16 TID 1500 Measurement Report;
IHE Radiology AI Results (AIR).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import __version__
from dicom_node.config import Settings
from dicom_node.db.models import (
    Delivery,
    DeliveryState,
    Instance,
    Job,
    JobState,
    ResultObject,
    utcnow,
)
from dicom_node.db.transitions import log_initial_state
from dicom_node.errors import JobCanceledError, ResultBuildError
from dicom_node.jobs.queue import cancel_requested, instance_set_digest
from dicom_node.notifications import queue_notifications
from dicom_node.receive.spool import Spool

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

    An operator's cancel of the running job (:func:`dicom_node.jobs.queue.cancel`)
    is checked at the stage boundaries: after the series is loaded, after
    inference, and after the results are written (which are then removed from
    the outbox); :meth:`execute` raises :class:`~dicom_node.errors.JobCanceledError`.

    Parameters
    ----------
    settings : Settings
    session_factory : sqlalchemy.orm.sessionmaker
    pipelines : mapping of str to Pipeline or None
        Pipeline objects by name to use instead of
        :func:`dicom_node.pipelines.get_pipeline` (tests, embedding).
    """

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        pipelines: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.spool = Spool(settings.storage.spool_path)
        self.outbox = Spool(settings.storage.outbox_path)
        self._pipelines: dict[str, Any] = dict(pipelines or {})

    def _stop_if_canceled(
        self, job_id: int, stage: str, written: Sequence[ResultFile] = ()
    ) -> None:
        """Raise JobCanceledError if an operator canceled the job; remove ``written`` first."""
        if not cancel_requested(self.session_factory, job_id):
            return
        for result_file in written:
            self.outbox.absolute(result_file.path).unlink(missing_ok=True)
        logger.info("job %d: canceled by an operator, stopping %s", job_id, stage)
        raise JobCanceledError(job_id, stage)

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
        JobCanceledError
            An operator canceled the job; checked after loading, after
            inference and after writing the results (removed again).
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
            job = session.get_one(Job, job_id)  # claimed just now; NoResultFound fails the attempt
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
        self._stop_if_canceled(job_id, "after loading the series")
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
            self._stop_if_canceled(job_id, "after inference")
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
                mark_result_version(
                    o.dataset, version.version, version.supersedes, version.predecessors
                )
            files = [self._store(o.kind, o.dataset, o.destinations) for o in objects]
            stages["results_written_at"] = utcnow()
            self._stop_if_canceled(job_id, "before export", files)
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
            mark_result_version(
                o.dataset, version.version, version.supersedes, version.predecessors
            )
        files = [self._store(o.kind, o.dataset, o.destinations) for o in objects]
        stages["results_written_at"] = utcnow()  # stored in the outbox and validated
        self._stop_if_canceled(job_id, "before export", files)
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
            PredecessorDocument(
                o.study_instance_uid, o.series_instance_uid, o.sop_class_uid, o.sop_instance_uid
            )
            for o in session.scalars(
                select(ResultObject)
                .where(ResultObject.job_id == newest[1], ResultObject.kind == "SR")
                .order_by(ResultObject.id)
            )
        )
        return ResultVersion(
            newest[0] + 1,
            supersedes=newest[0],
            superseded_job_id=newest[1],
            predecessors=predecessors,
        )

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
