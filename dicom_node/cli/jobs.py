"""``dicom-node jobs``: list, show, requeue and cancel jobs of the job database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy import select, true
from sqlalchemy.orm import selectinload

from dicom_node.cli.common import (
    ConfigOption,
    JsonOption,
    logger,
    open_session,
    settings_or_exit,
    uid_column,
)

jobs_app = typer.Typer(help="Inspect and manage jobs in the job database.", no_args_is_help=True)


def _result_text(row: dict[str, Any]) -> str:
    """One line for a job's outcome: its error, why it was not analysable, or its findings."""
    from dicom_node.queries import finding_text

    if row["state"] == "FAILED":
        return row["error"] or ""
    if row.get("not_analysable"):
        return f"not analysable: {row['not_analysable'].get('reason', '')}"
    return finding_text(row["findings"])




@jobs_app.command("list")
def jobs_list(
    config: ConfigOption = None,
    as_json: JsonOption = False,
    state: Annotated[str | None, typer.Option(help="Only jobs in this state.")] = None,
    limit: Annotated[int, typer.Option(help="Most recent N jobs.")] = 50,
    pipeline: Annotated[str | None, typer.Option(help="Only jobs of this pipeline.")] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only jobs created since: ISO date/time (UTC) or an age like 24h, 7d."),
    ] = None,
    finding: Annotated[
        str | None,
        typer.Option(help="present (a positive finding), absent, or none (no result)."),
    ] = None,
) -> None:
    """List jobs, newest first, and the series that were not eligible (with the reason)."""
    from dicom_node.db.models import JobState, Series, SeriesState
    from dicom_node.queries import (
        FINDING_FILTERS,
        JobFilter,
        delivery_marks,
        format_study_date,
        job_summary,
        list_jobs,
        parse_since,
    )

    settings = settings_or_exit(config)
    try:
        since_at = parse_since(since)
        if state:
            JobState(state.upper())
        if finding and finding not in FINDING_FILTERS:
            raise ValueError(f"--finding must be one of {', '.join(FINDING_FILTERS)}")
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    with open_session(settings) as session:
        rows, _ = list_jobs(
            session, JobFilter(state, pipeline, since_at, finding), offset=0, limit=limit
        )
        jobs = delivery_marks(session, [job_summary(job, series) for job, series in rows])
        not_eligible = (
            []
            if state or pipeline or finding
            else [
                {
                    "series_instance_uid": s.series_instance_uid,
                    "state": str(s.state),
                    "modality": s.modality,
                    "series_description": s.series_description,
                    "reason": s.state_reason,
                }
                for s in session.scalars(
                    select(Series)
                    .where(Series.state == SeriesState.NOT_ELIGIBLE)
                    .where(Series.last_instance_at >= since_at if since_at else true())
                    .order_by(Series.id.desc())
                    .limit(limit)
                )
            ]
        )
    if as_json:
        typer.echo(json.dumps({"jobs": jobs, "not_eligible_series": not_eligible}, indent=2))
        return
    typer.echo(f"{'JOB':>5}  {'STATE':<10} {'PIPELINE':<8} {'STUDY DATE':<10} "
               f"{'ACCESSION':<16} {'SERIES':<40} RESULT")
    for row in jobs:
        result = _result_text(row)
        if row["undelivered"]:
            result += f" [{row['undelivered']}]"
        typer.echo(
            f"{row['job_id']:>5}  {row['state']:<10} {row['pipeline']:<8} "
            f"{format_study_date(row['study_date']):<10} {row['accession_number'] or '-':<16} "
            f"{uid_column(row['series_instance_uid']):<40} {result}"
        )
    for row in not_eligible:
        typer.echo(
            f"{'-':>5}  {row['state']:<10} {'-':<8} {'':<10} {'':<16} "
            f"{uid_column(row['series_instance_uid']):<40} {row['reason']}"
        )


@jobs_app.command("show")
def jobs_show(
    job_id: Annotated[int, typer.Argument(help="Job id from 'dicom-node jobs list'.")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one job: series, timeline of state changes, findings, result objects, deliveries."""
    from dicom_node.db.models import Job, ResultObject, Series, StateChange
    from dicom_node.queries import finding_text, job_summary

    settings = settings_or_exit(config)
    with open_session(settings) as session:
        job = session.get(Job, job_id)
        if job is None:
            typer.echo(f"error: no job {job_id}", err=True)
            raise typer.Exit(1)
        series = session.get(Series, job.series_id)
        events = session.scalars(
            select(StateChange)
            .where(
                ((StateChange.entity == "job") & (StateChange.entity_id == job.id))
                | ((StateChange.entity == "series") & (StateChange.entity_id == series.id))
            )
            .order_by(StateChange.at, StateChange.id)
        ).all()
        objects = session.scalars(
            select(ResultObject)
            .options(selectinload(ResultObject.deliveries))
            .where(ResultObject.job_id == job.id)
        ).all()
        data = job_summary(job, series)
        data["series"] = {
            "series_instance_uid": series.series_instance_uid,
            "modality": series.modality,
            "instance_count": series.instance_count,
            "first_instance_at": series.first_instance_at.isoformat(),
            "last_instance_at": series.last_instance_at.isoformat(),
            "completion_basis": series.completion_basis,
        }
        data["timeline"] = [
            {
                "at": e.at.isoformat(),
                "entity": e.entity,
                "from": e.from_state,
                "to": e.to_state,
                "reason": e.reason,
            }
            for e in events
        ]
        from dicom_node.queries import rounded

        data["details"] = rounded((job.result_summary or {}).get("details"))
        data["result_objects"] = [
            {
                "kind": o.kind,
                "sop_instance_uid": o.sop_instance_uid,
                "path": str(settings.storage.outbox_path / o.path),
                "size_bytes": o.size_bytes,
                "deliveries": [
                    {
                        "destination": d.destination,
                        "state": str(d.state),
                        "attempts": d.attempts,
                        "last_error": d.last_error,
                        "sent_at": d.sent_at.isoformat() if d.sent_at else None,
                    }
                    for d in o.deliveries
                ],
            }
            for o in objects
        ]
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    typer.echo(
        f"job {data['job_id']}  {data['state']}  pipeline {data['pipeline']} "
        f"({data['algorithm'] or '-'})  attempts {data['attempts']}"
    )
    typer.echo(
        f"series {data['series']['series_instance_uid']}  "
        f"{data['series']['instance_count']} instances"
    )
    if data["findings"]:
        typer.echo(f"findings: {finding_text(data['findings'])}")
    if data["not_analysable"]:
        typer.echo(f"not analysable: {data['not_analysable'].get('reason', '')}")
    if data["error"]:
        typer.echo(f"error: {data['error']}")
    typer.echo("timeline:")
    for event in data["timeline"]:
        typer.echo(
            f"  {event['at']}  {event['entity']:<8} {event['from'] or '':<12} -> "
            f"{event['to']:<12} {event['reason'] or ''}"
        )
    for obj in data["result_objects"]:
        typer.echo(f"{obj['kind']:<4} {obj['path']}")
        for d in obj["deliveries"]:
            typer.echo(
                f"       -> {d['destination']}: {d['state']} after {d['attempts']} "
                f"attempt(s){'; ' + d['last_error'] if d['last_error'] else ''}"
            )


@jobs_app.command("requeue")
def jobs_requeue(
    job_id: Annotated[int, typer.Argument(help="Job id from 'dicom-node jobs list'.")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Put a SUCCEEDED, FAILED or CANCELED job back in the queue with fresh attempts."""
    _change_job(job_id, "requeue", config, as_json)


@jobs_app.command("cancel")
def jobs_cancel(
    job_id: Annotated[int, typer.Argument(help="Job id from 'dicom-node jobs list'.")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel a QUEUED or RUNNING job (a running worker drops its output)."""
    _change_job(job_id, "cancel", config, as_json)


def _change_job(job_id: int, action: str, config: Path | None, as_json: bool) -> None:
    from dicom_node.db.engine import make_engine, make_session_factory
    from dicom_node.db.models import Job
    from dicom_node.errors import IllegalTransitionError, SeriesPurgedError
    from dicom_node.jobs import queue

    settings = settings_or_exit(config)
    session_factory = make_session_factory(make_engine(settings.storage.url))
    with session_factory.begin() as session:
        job = session.get(Job, job_id)
        if job is None:
            typer.echo(f"error: no job {job_id}", err=True)
            raise typer.Exit(1)
        before = str(job.state)
        try:
            (queue.requeue if action == "requeue" else queue.cancel)(session, job)
        except SeriesPurgedError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(1) from err
        except IllegalTransitionError as err:
            word = "requeued" if action == "requeue" else "canceled"
            typer.echo(f"error: a {before} job cannot be {word}", err=True)
            raise typer.Exit(1) from err
        after = str(job.state)
    logger.info("job %d: %s -> %s from the command line", job_id, before, after)
    if as_json:
        typer.echo(json.dumps({"job_id": job_id, "from": before, "to": after}))
    else:
        typer.echo(f"job {job_id}: {before} -> {after}")
