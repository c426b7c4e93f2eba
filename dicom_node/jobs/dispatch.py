"""Series dispatch: complete series -> the pipeline that fits -> queued jobs.

:func:`sweep_series` is the scheduler's series sweep. It recovers jobs whose
worker stopped heartbeating, completes series (proven by a released
association, or quiet for ``series.stable_after_s``), applies the selection
rules (:mod:`dicom_node.series.selection`) to every COMPLETE series and
queues one job per (series, pipeline, algorithm version, instance set)
(:func:`dicom_node.jobs.queue.enqueue`). A series becomes DISPATCHED with the
job in its reason, or NOT_ELIGIBLE with the reason it was not selected.

It lives in :mod:`dicom_node.jobs` rather than :mod:`dicom_node.series`
because it writes the job queue and asks the pipelines for their algorithm
version: series/ is upstream of both (the settings, the pipelines and the
executor import it), and importing them from series/ would close cycles.

References
----------
Orthanc book, "stable" series after a quiet period.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.config import Settings
from dicom_node.db.models import Instance, Job, Series, SeriesState, utcnow
from dicom_node.db.transitions import set_state
from dicom_node.jobs.queue import (
    cancel_superseded,
    enqueue,
    instance_set_digest,
    recover_stale_jobs,
)
from dicom_node.series.completeness import (
    mark_proven_series_complete,
    mark_stable_series_complete,
    series_attributes,
)
from dicom_node.series.selection import select_pipeline

logger = logging.getLogger(__name__)


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
                session,
                release_grace_s=settings.series.release_grace_s,
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
