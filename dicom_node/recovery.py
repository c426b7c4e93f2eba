"""Start-up recovery after a crash: make spool, database and queue agree again.

Run by :class:`dicom_node.app.Node` before it starts listening. What it does:

* removes temporary files left in ``spool/.incoming`` by writes that were
  interrupted (their instances were never acknowledged: the response is sent
  only after the rename);
* records spool files that have no database row (the node died between the
  durable write and the commit; the instance may have been acknowledged);
* removes rows whose file is missing (except in series that retention
  purged on purpose), so that no job reads a file that is not there, and
  re-opens their series;
* returns RUNNING jobs of workers on this host to QUEUED: when the node
  starts, no worker of its own can be running them (one an operator asked to
  cancel is CANCELED instead). Workers on other hosts are recovered by the
  heartbeat timeout in the scheduler's sweep.

Pending and retrying deliveries need nothing: the exporter resumes them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.db.models import Instance, Job, JobState, Purge, SeriesState, utcnow
from dicom_node.db.transitions import set_state
from dicom_node.errors import InvalidInstanceError
from dicom_node.jobs.queue import mark_canceled
from dicom_node.receive.header import parse_header
from dicom_node.receive.ingest import InstanceIngest

logger = logging.getLogger(__name__)


@dataclass
class RecoveryReport:
    """What :func:`recover_at_start` found and did.

    Parameters
    ----------
    temp_files_removed : int
        Interrupted writes removed from ``spool/.incoming``.
    orphan_files_recorded : int
        Spool files without a row that were recorded now.
    orphan_files_quarantined : list of str
        Spool-relative paths of unreadable orphans moved to ``spool/.quarantine``.
    rows_without_file : list of str
        SOPInstanceUIDs whose file was missing; their rows were removed.
    jobs_requeued : list of int
        RUNNING jobs of this host returned to QUEUED.
    """

    temp_files_removed: int = 0
    orphan_files_recorded: int = 0
    orphan_files_quarantined: list[str] = field(default_factory=list)
    rows_without_file: list[str] = field(default_factory=list)
    jobs_requeued: list[int] = field(default_factory=list)


def _spool_files(root: Path) -> set[str]:
    return {
        str(path.relative_to(root))
        for path in root.glob("*/*/*.dcm")
        if not path.relative_to(root).parts[0].startswith(".")
    }


def recover_at_start(
    ingest: InstanceIngest, session_factory: sessionmaker[Session], *, host: str
) -> RecoveryReport:
    """Reconcile spool and database and requeue this host's interrupted jobs.

    Parameters
    ----------
    ingest : InstanceIngest
        The node's ingest (its spool and the recording code path of C-STORE).
    session_factory : sqlalchemy.orm.sessionmaker
        Sessions on the job database.
    host : str
        This host's name; worker ids start with ``"<host>:"``.

    Returns
    -------
    RecoveryReport
    """
    report = RecoveryReport()
    spool = ingest.spool
    for temp in spool.incoming.glob("*.part"):
        temp.unlink(missing_ok=True)
        report.temp_files_removed += 1

    on_disk = _spool_files(spool.root)
    with session_factory() as session:
        rows = dict(session.execute(select(Instance.path, Instance.sop_instance_uid)).all())
        # Retention deletes the files of purged series on purpose and keeps their rows.
        purged = set(
            session.scalars(
                select(Instance.path).join(Purge, Purge.series_id == Instance.series_id)
            )
        )
    for relative in sorted(on_disk - rows.keys()):
        path = spool.absolute(relative)
        try:
            data = path.read_bytes()
            header = parse_header(data)
            expected = spool.relative_path(
                header.study_instance_uid, header.series_instance_uid, header.sop_instance_uid
            )
            if str(expected) != relative:
                raise InvalidInstanceError(f"its UIDs give the path {expected}")
        except (OSError, InvalidInstanceError) as err:
            quarantine = spool.root / ".quarantine" / Path(relative).name
            quarantine.parent.mkdir(exist_ok=True)
            path.replace(quarantine)
            report.orphan_files_quarantined.append(relative)
            logger.error("spool file %s is unreadable (%s): moved to %s", relative, err, quarantine)
            continue
        try:
            recorded = ingest.record(header, relative, len(data), calling_ae_title="RECOVERED")
        except InvalidInstanceError as err:  # its series UID is already another study's
            quarantine = spool.root / ".quarantine" / Path(relative).name
            quarantine.parent.mkdir(exist_ok=True)
            path.replace(quarantine)
            report.orphan_files_quarantined.append(relative)
            logger.error("spool file %s refused (%s): moved to %s", relative, err, quarantine)
            continue
        if recorded:
            report.orphan_files_recorded += 1

    missing = sorted(set(rows) - on_disk - purged)
    if missing:
        with session_factory.begin() as session:
            for relative in missing:
                instance = session.scalar(select(Instance).where(Instance.path == relative))
                if instance is None:  # removed since the scan (a purge): nothing to repair
                    continue
                series = instance.series
                report.rows_without_file.append(instance.sop_instance_uid)
                logger.error(
                    "instance %s has a row but no spool file: row removed",
                    instance.sop_instance_uid,
                )
                session.delete(instance)
                series.instance_count -= 1
                if series.state != SeriesState.RECEIVING:
                    set_state(
                        session,
                        series,
                        SeriesState.RECEIVING,
                        reason="an instance file was missing at start-up",
                    )
                series.last_instance_at = utcnow()

    with session_factory.begin() as session:
        running = session.scalars(
            select(Job).where(Job.state == JobState.RUNNING, Job.worker_id.like(f"{host}:%"))
        ).all()
        for job in running:
            if job.cancel_requested_at is not None:  # an operator wanted it stopped anyway
                mark_canceled(session, job, "by the node's restart", now=utcnow())
                continue
            set_state(
                session,
                job,
                JobState.QUEUED,
                reason=f"node restarted; worker {job.worker_id} is gone",
            )
            job.worker_id = None
            job.not_before = utcnow()
            job.attempts = max(0, job.attempts - 1)  # the crash was not the job's fault
            report.jobs_requeued.append(job.id)
    if any(
        (
            report.temp_files_removed,
            report.orphan_files_recorded,
            report.orphan_files_quarantined,
            report.rows_without_file,
            report.jobs_requeued,
        )
    ):
        logger.warning("start-up recovery: %s", report)
    return report
