"""Retention: purge spool and outbox files of series that are done and old enough.

A series is purged when all of these hold:

- it is DISPATCHED or NOT_ELIGIBLE (not receiving, not waiting for selection);
- every job of the series is finished (SUCCEEDED, FAILED or CANCELED);
- every delivery of every result object of those jobs is SENT (a PENDING,
  RETRYING or DEAD delivery keeps the files, so an operator can still
  requeue it); a job without deliveries (no destinations) counts as delivered;
- its newest file (last instance received, newest result object, last
  delivery) is older than ``retention.max_age_days``.

The files go; every database row stays, and a :class:`~dicom_node.db.models.Purge`
row records when and how much. ``dicom-node retention --dry-run`` lists what
would go; the node runs :func:`purge` every ``retention.interval_s``.

A purged SOP instance that is sent again is recognised as already stored and
is not analysed again.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.config import Settings
from dicom_node.db.models import (
    Delivery,
    DeliveryState,
    Instance,
    Job,
    JobState,
    Purge,
    ResultObject,
    Series,
    SeriesState,
    utcnow,
)

logger = logging.getLogger(__name__)

_FINISHED = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED)


@dataclass
class PurgeCandidate:
    """A series whose files may go.

    Parameters
    ----------
    series_id : int
    series_instance_uid : str
    newest_at : datetime
        Newest timestamp of its files (UTC).
    spool_paths : list of str
        Spool-relative paths of its instances.
    outbox_paths : list of str
        Outbox-relative paths of its jobs' result objects.
    size_bytes : int
        Recorded sizes of those files.
    """

    series_id: int
    series_instance_uid: str
    newest_at: datetime
    spool_paths: list[str] = field(default_factory=list)
    outbox_paths: list[str] = field(default_factory=list)
    size_bytes: int = 0

    def as_json(self) -> dict:
        """JSON-ready summary (counts, not every path)."""
        return {
            "series_id": self.series_id,
            "series_instance_uid": self.series_instance_uid,
            "newest_at": self.newest_at.isoformat(),
            "spool_files": len(self.spool_paths),
            "outbox_files": len(self.outbox_paths),
            "size_bytes": self.size_bytes,
        }


def find_candidates(
    session: Session, max_age_days: float, now: datetime | None = None
) -> list[PurgeCandidate]:
    """List the series whose files :func:`purge` would delete now.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Open session on the job database.
    max_age_days : float
        Files newer than this stay.
    now : datetime or None
        Current time (UTC).

    Returns
    -------
    list of PurgeCandidate
        Oldest first.
    """
    now = now or utcnow()
    cutoff = now - timedelta(days=max_age_days)
    series_rows = session.scalars(
        select(Series)
        .where(
            Series.state.in_([SeriesState.DISPATCHED, SeriesState.NOT_ELIGIBLE]),
            Series.last_instance_at < cutoff,
            Series.id.not_in(select(Purge.series_id)),
        )
        .order_by(Series.last_instance_at)
    ).all()
    out = []
    for series in series_rows:
        jobs = session.scalars(select(Job).where(Job.series_id == series.id)).all()
        if any(job.state not in _FINISHED for job in jobs):
            continue
        job_ids = [job.id for job in jobs]
        objects = (
            session.scalars(select(ResultObject).where(ResultObject.job_id.in_(job_ids))).all()
            if job_ids
            else []
        )
        deliveries = (
            session.execute(
                select(Delivery.state, Delivery.sent_at).where(
                    Delivery.result_object_id.in_([o.id for o in objects])
                )
            ).all()
            if objects
            else []
        )
        if any(state != DeliveryState.SENT for state, _ in deliveries):
            continue
        times = [series.last_instance_at]
        times += [o.created_at for o in objects]
        times += [sent for _, sent in deliveries if sent is not None]
        times += [job.finished_at for job in jobs if job.finished_at is not None]
        newest = max(times)
        if newest >= cutoff:
            continue
        instances = session.execute(
            select(Instance.path, Instance.size_bytes).where(Instance.series_id == series.id)
        ).all()
        out.append(
            PurgeCandidate(
                series_id=series.id,
                series_instance_uid=series.series_instance_uid,
                newest_at=newest,
                spool_paths=[p for p, _ in instances],
                outbox_paths=[o.path for o in objects],
                size_bytes=sum(s for _, s in instances) + sum(o.size_bytes for o in objects),
            )
        )
    return out


def _remove(root: Path, relative: str) -> int:
    """Delete one file under ``root``; return the bytes freed (0 if it was gone)."""
    path = (root / relative).resolve()
    if root not in path.parents:
        logger.error("refusing to delete %s: outside %s", path, root)
        return 0
    try:
        size = path.stat().st_size
        path.unlink()
    except FileNotFoundError:
        return 0
    # Remove the series and study folders once empty.
    for folder in (path.parent, path.parent.parent):
        try:
            if folder != root and root in folder.parents:
                os.rmdir(folder)
        except OSError:
            break
    return size


def purge(
    session_factory: sessionmaker[Session],
    settings: Settings,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
) -> list[PurgeCandidate]:
    """Delete the files of every candidate series and record a Purge row for each.

    Parameters
    ----------
    session_factory : sqlalchemy.orm.sessionmaker
        Sessions on the job database.
    settings : Settings
        ``retention.max_age_days`` and the spool and outbox directories.
    dry_run : bool
        List only; delete and record nothing.
    now : datetime or None
        Current time (UTC).

    Returns
    -------
    list of PurgeCandidate
        What was (or, with ``dry_run``, would be) purged.
    """
    now = now or utcnow()
    with session_factory() as session:
        candidates = find_candidates(session, settings.retention.max_age_days, now=now)
    if dry_run or not candidates:
        return candidates
    spool = settings.storage.spool_path.resolve()
    outbox = settings.storage.outbox_path.resolve()
    for candidate in candidates:
        with session_factory.begin() as session:
            # Re-check under the write lock: a new instance may have re-opened the series.
            series = session.get(Series, candidate.series_id)
            if series is None:  # purged meanwhile by another process
                continue
            if series.state not in (SeriesState.DISPATCHED, SeriesState.NOT_ELIGIBLE) or (
                session.scalar(
                    select(func.count(Instance.id)).where(Instance.series_id == series.id)
                )
                != len(candidate.spool_paths)
            ):
                continue
            if session.scalar(
                select(func.count(Job.id)).where(
                    Job.series_id == series.id, Job.state.not_in(_FINISHED)
                )
            ):
                continue
            freed = sum(_remove(spool, p) for p in candidate.spool_paths)
            freed += sum(_remove(outbox, p) for p in candidate.outbox_paths)
            session.add(
                Purge(
                    series_id=candidate.series_id,
                    purged_at=utcnow(),
                    spool_files=len(candidate.spool_paths),
                    outbox_files=len(candidate.outbox_paths),
                    bytes_freed=freed,
                    reason=f"older than {settings.retention.max_age_days:g} days and delivered",
                )
            )
        logger.info(
            "retention: purged series %s (%d spool, %d outbox files, %d bytes)",
            candidate.series_instance_uid,
            len(candidate.spool_paths),
            len(candidate.outbox_paths),
            freed,
        )
    return candidates
