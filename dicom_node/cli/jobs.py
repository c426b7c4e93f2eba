"""``dicom-node jobs``: list, show, requeue and cancel jobs of the job database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dicom_node.cli.common import (
    ConfigOption,
    JsonOption,
    logger,
    open_session,
    settings_or_exit,
    uid_column,
)

if TYPE_CHECKING:
    from dicom_node.queries import TimelineEvent

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
    from dicom_node.db.models import JobState
    from dicom_node.queries import (
        FINDING_FILTERS,
        JobFilter,
        delivery_marks,
        format_study_date,
        job_summary,
        list_jobs,
        not_eligible_series,
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
            else not_eligible_series(session, since=since_at, limit=limit)
        )
    if as_json:
        typer.echo(json.dumps({"jobs": jobs, "not_eligible_series": not_eligible}, indent=2))
        return
    typer.echo(
        f"{'JOB':>5}  {'STATE':<10} {'PIPELINE':<8} {'STUDY DATE':<10} "
        f"{'ACCESSION':<16} {'SERIES':<40} RESULT"
    )
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
    """Show one job: series, timeline of state changes, findings, result objects, deliveries.

    The timeline is the dashboard's: series, job and delivery state changes,
    webhook notifications and retention. With --json, the document that the
    dashboard serves at /api/jobs/ID.
    """
    from dicom_node.queries import job_detail, job_detail_json

    settings = settings_or_exit(config)
    with open_session(settings) as session:
        detail = job_detail(session, job_id, settings.storage.outbox_path)
    if detail is None:
        typer.echo(f"error: no job {job_id}", err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps(job_detail_json(detail), indent=2))
        return
    for line in job_detail_lines(detail):
        typer.echo(line)


def job_detail_lines(detail: dict[str, Any]) -> list[str]:
    """The text of ``jobs show``: lines rendered from a :func:`~dicom_node.queries.job_detail`.

    Parameters
    ----------
    detail : dict
        What :func:`dicom_node.queries.job_detail` returns (timeline of
        :class:`~dicom_node.queries.TimelineEvent`).

    Returns
    -------
    list of str
        Header, series, findings or the reason for none, the error and the
        traceback of the last failed attempt (``jobs show`` needs access to the
        database, i.e. an admin), the timeline (one event a line, oldest
        first) and each result object with its deliveries.
    """
    from dicom_node.queries import finding_text

    lines = [
        f"job {detail['job_id']}  {detail['state']}  pipeline {detail['pipeline']} "
        f"({detail['algorithm'] or '-'})  attempts {detail['attempts']}",
        f"series {detail['series']['series_instance_uid']}  "
        f"{detail['series']['instance_count']} instances",
    ]
    if detail["findings"]:
        lines.append(f"findings: {finding_text(detail['findings'])}")
    if detail["not_analysable"]:
        lines.append(f"not analysable: {detail['not_analysable'].get('reason', '')}")
    if detail["error"]:
        lines.append(f"error: {detail['error']}")
    if detail.get("cancel_requested_at") and detail["state"] == "RUNNING":
        lines.append(f"cancel requested {detail['cancel_requested_at']}: stops at the next stage")
    if detail.get("traceback"):
        lines.append("traceback of the last failed attempt:")
        lines.extend("  " + line for line in detail["traceback"].rstrip("\n").splitlines())
    lines.append("timeline:")
    lines.extend(_timeline_line(event) for event in detail["timeline"])
    for obj in detail["result_objects"]:
        lines.append(f"{obj['kind']:<4} {obj['path']}")
        for d in obj["deliveries"]:
            lines.append(
                f"       -> {d['destination']}: {d['state']} after {d['attempts']} "
                f"attempt(s){'; ' + d['last_error'] if d['last_error'] else ''}"
            )
    return lines


def _timeline_line(event: TimelineEvent) -> str:
    """One timeline event: a state change as ``FROM -> TO  reason``, a milestone by its name."""
    head = f"  {event.at.isoformat()}  {event.entity:<8} "
    if event.to_state is None:
        return head + event.what
    note = event.reason or ""
    if event.entity == "delivery":
        note = f"{event.what}: {note}" if note else event.what
    return head + f"{event.from_state or '':<12} -> {event.to_state:<12} {note}"


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
    """Cancel a QUEUED job, or ask a RUNNING one to stop at its next stage (no results sent)."""
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
        requested = action == "cancel" and job.cancel_requested_at is not None
    logger.info("job %d: %s -> %s from the command line", job_id, before, after)
    if as_json:
        answer: dict[str, Any] = {"job_id": job_id, "from": before, "to": after}
        if requested:
            answer["cancel_requested"] = True
        typer.echo(json.dumps(answer))
    elif requested:
        typer.echo(
            f"job {job_id}: cancel requested; the worker stops it at its next stage "
            "(after loading, after inference or before export) and sends nothing"
        )
    else:
        typer.echo(f"job {job_id}: {before} -> {after}")
