"""The ``dicom-node`` command line: serve, worker, demo, analyze, jobs, series, echo, send."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy import select, true
from sqlalchemy.orm import Session, selectinload

from dicom_node import __version__
from dicom_node.config import Settings, load_settings
from dicom_node.errors import ConfigurationError, DicomNodeError
from dicom_node.logs import configure_logging

app = typer.Typer(help="dicom-node: a DICOM AI node for acute neuro CT.", no_args_is_help=True)
jobs_app = typer.Typer(help="Inspect and manage jobs in the job database.", no_args_is_help=True)
series_app = typer.Typer(help="Inspect received series.", no_args_is_help=True)
deliveries_app = typer.Typer(help="Inspect deliveries of results.", no_args_is_help=True)
users_app = typer.Typer(help="Manage dashboard users.", no_args_is_help=True)
evaluate_app = typer.Typer(
    help="Evaluate pipelines on generated cases with ground truth.", no_args_is_help=True
)
app.add_typer(jobs_app, name="jobs")
app.add_typer(series_app, name="series")
app.add_typer(deliveries_app, name="deliveries")
app.add_typer(users_app, name="users")
app.add_typer(evaluate_app, name="evaluate")
train_app = typer.Typer(help="Train the node's models.", no_args_is_help=True)
app.add_typer(train_app, name="train")

logger = logging.getLogger("dicom_node.cli")

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML configuration file (else $DICOM_NODE_CONFIG).",
        exists=True,
        dir_okay=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _settings(config: Path | None, overrides: dict[str, Any] | None = None) -> Settings:
    try:
        settings = load_settings(config, overrides)
    except ConfigurationError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    configure_logging(settings.log_level, log_library_warnings=settings.log_library_warnings)
    return settings


def _session(settings: Settings) -> Session:
    from dicom_node.db.engine import make_engine, make_session_factory

    return make_session_factory(make_engine(settings.storage.url))()


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def serve(config: ConfigOption = None) -> None:
    """Run the whole node: Storage SCP, scheduler, exporter and worker processes."""
    from dicom_node.app import Node

    settings = _settings(config)
    try:
        node = Node(settings)
    except ConfigurationError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    try:
        node.start()
    except ConfigurationError as err:
        node.stop()
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    typer.echo(
        f"dicom-node {__version__}: {settings.dicom.ae_title} on "
        f"{settings.dicom.host}:{node.port}, data in {settings.storage.base_dir.resolve()}"
    )
    if node.web_url:
        typer.echo(f"dashboard on {node.web_url} (users: dicom-node users add NAME --role admin)")
    try:
        _wait_for_signal()
    finally:
        node.stop()


@app.command()
def worker(config: ConfigOption = None) -> None:
    """Run one worker process in the foreground (scale-out against a shared database)."""
    import os
    import socket

    from dicom_node.app import worker_process_main

    settings = _settings(config)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    worker_process_main(
        settings.model_dump(mode="json"), f"{socket.gethostname()}:{os.getpid()}:cli", stop
    )


def _job_row(job, series) -> dict[str, Any]:
    from dicom_node.queries import job_summary

    return job_summary(job, series)


def _uid_column(uid: str, width: int = 40) -> str:
    """A UID cut to ``width`` characters from the left, marked with "..." when cut.

    The end of a UID is what tells series of one study apart, so it is kept.
    """
    return uid if len(uid) <= width else "..." + uid[-(width - 3):]


def _result_text(row: dict[str, Any]) -> str:
    """One line for a job's outcome: its error, why it was not analysable, or its findings."""
    if row["state"] == "FAILED":
        return row["error"] or ""
    if row.get("not_analysable"):
        return f"not analysable: {row['not_analysable'].get('reason', '')}"
    return _finding_text(row["findings"])


def _finding_text(findings: list[dict[str, Any]]) -> str:
    from dicom_node.queries import finding_text

    return finding_text(findings)


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
        list_jobs,
        parse_since,
    )

    settings = _settings(config)
    try:
        since_at = parse_since(since)
        if state:
            JobState(state.upper())
        if finding and finding not in FINDING_FILTERS:
            raise ValueError(f"--finding must be one of {', '.join(FINDING_FILTERS)}")
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    with _session(settings) as session:
        rows, _ = list_jobs(
            session, JobFilter(state, pipeline, since_at, finding), offset=0, limit=limit
        )
        jobs = delivery_marks(session, [_job_row(job, series) for job, series in rows])
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
            f"{_uid_column(row['series_instance_uid']):<40} {result}"
        )
    for row in not_eligible:
        typer.echo(
            f"{'-':>5}  {row['state']:<10} {'-':<8} {'':<10} {'':<16} "
            f"{_uid_column(row['series_instance_uid']):<40} {row['reason']}"
        )


@jobs_app.command("show")
def jobs_show(
    job_id: Annotated[int, typer.Argument(help="Job id from 'dicom-node jobs list'.")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one job: series, timeline of state changes, findings, result objects, deliveries."""
    from dicom_node.db.models import Job, ResultObject, Series, StateChange

    settings = _settings(config)
    with _session(settings) as session:
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
        data = _job_row(job, series)
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
        typer.echo(f"findings: {_finding_text(data['findings'])}")
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


@series_app.command("list")
def series_list(
    config: ConfigOption = None,
    as_json: JsonOption = False,
    limit: Annotated[int, typer.Option(help="Most recent N series.")] = 50,
) -> None:
    """List received series with their state and the reason for it."""
    from dicom_node.db.models import Series

    settings = _settings(config)
    with _session(settings) as session:
        rows = [
            {
                "series_instance_uid": s.series_instance_uid,
                "state": str(s.state),
                "modality": s.modality,
                "instances": s.instance_count,
                "series_description": s.series_description,
                "reason": s.state_reason,
                "last_instance_at": s.last_instance_at.isoformat(),
            }
            for s in session.scalars(select(Series).order_by(Series.id.desc()).limit(limit))
        ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(f"{'STATE':<13} {'MOD':<4} {'N':>4}  {'SERIES':<40} REASON")
    for r in rows:
        typer.echo(
            f"{r['state']:<13} {r['modality']:<4} {r['instances']:>4}  "
            f"{_uid_column(r['series_instance_uid']):<40} {r['reason'] or ''}"
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

    settings = _settings(config)
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


@deliveries_app.command("list")
def deliveries_list(
    config: ConfigOption = None,
    as_json: JsonOption = False,
    state: Annotated[
        str | None, typer.Option(help="PENDING, RETRYING, SENT or DEAD.")
    ] = None,
    destination: Annotated[str | None, typer.Option(help="Only this destination.")] = None,
    limit: Annotated[int, typer.Option(help="Most recent N deliveries.")] = 50,
) -> None:
    """List deliveries of result objects, newest first, with attempts and the last error."""
    from dicom_node.db.models import DeliveryState
    from dicom_node.queries import list_deliveries

    settings = _settings(config)
    if state and state.upper() not in {s.value for s in DeliveryState}:
        typer.echo(f"error: unknown delivery state {state!r}", err=True)
        raise typer.Exit(2)
    with _session(settings) as session:
        rows, total = list_deliveries(session, state=state, destination=destination, limit=limit)
    if as_json:
        typer.echo(json.dumps({"total": total, "deliveries": rows}, indent=2))
        return
    typer.echo(
        f"{'ID':>5} {'JOB':>5}  {'KIND':<4} {'DESTINATION':<16} {'STATE':<9} {'ATT':>3}  LAST"
    )
    for r in rows:
        when = r["sent_at"] or r["next_attempt_at"] or ""
        typer.echo(
            f"{r['delivery_id']:>5} {r['job_id']:>5}  {r['kind']:<4} {r['destination'][:16]:<16} "
            f"{r['state']:<9} {r['attempts']:>3}  {when[:19]} {r['last_error'] or ''}"
        )


@deliveries_app.command("requeue")
def deliveries_requeue(
    delivery_id: Annotated[
        int | None, typer.Argument(help="Delivery id from 'deliveries list'.")
    ] = None,
    all_dead: Annotated[
        bool,
        typer.Option("--all-dead", help="Every DEAD delivery (of --destination, or all)."),
    ] = False,
    destination: Annotated[
        str | None, typer.Option(help="With --all-dead: only this destination's.")
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Put a DEAD delivery (or, with --all-dead, every one) back to PENDING with fresh attempts.

    The exporter sends them again at its next sweep. After an outage the node
    also does this by itself once the destination answers C-ECHO
    (``export.echo_interval_s``); refused deliveries are left to this command.
    """
    from dicom_node.db.engine import make_engine, make_session_factory
    from dicom_node.db.models import Delivery
    from dicom_node.errors import IllegalTransitionError
    from dicom_node.export.exporter import requeue_dead, requeue_delivery

    if (delivery_id is None) == (not all_dead) or (destination and not all_dead):
        typer.echo("error: give a DELIVERY_ID, or --all-dead [--destination NAME]", err=True)
        raise typer.Exit(2)
    settings = _settings(config)
    engine = make_engine(settings.storage.url)
    try:
        with make_session_factory(engine).begin() as session:
            if all_dead:
                ids = requeue_dead(session, destination=destination)
            else:
                delivery = session.get(Delivery, delivery_id)
                if delivery is None:
                    typer.echo(f"error: no delivery {delivery_id}", err=True)
                    raise typer.Exit(1)
                before = str(delivery.state)
                try:
                    requeue_delivery(session, delivery)
                except IllegalTransitionError as err:
                    typer.echo(
                        f"error: a {before} delivery cannot be requeued (only DEAD ones)", err=True
                    )
                    raise typer.Exit(1) from err
                after = str(delivery.state)
    finally:
        engine.dispose()
    if all_dead:
        where = f" to {destination}" if destination else ""
        logger.info("%d DEAD deliveries%s requeued from the command line", len(ids), where)
        if as_json:
            typer.echo(json.dumps({"requeued": ids, "destination": destination}))
        else:
            typer.echo(f"{len(ids)} DEAD deliveries{where} -> PENDING" +
                       (f": {', '.join(map(str, ids))}" if ids else ""))  # fmt: skip
        return
    logger.info("delivery %d: %s -> %s from the command line", delivery_id, before, after)
    if as_json:
        typer.echo(json.dumps({"delivery_id": delivery_id, "from": before, "to": after}))
    else:
        typer.echo(f"delivery {delivery_id}: {before} -> {after}")


@app.command()
def stats(
    config: ConfigOption = None,
    as_json: JsonOption = False,
    echo_destinations: Annotated[
        bool, typer.Option("--echo/--no-echo", help="C-ECHO each destination.")
    ] = True,
) -> None:
    """Print the dashboard overview's figures: queue, jobs, time to result, deliveries, disk."""
    from dicom_node.stats import STAGES, DestinationMonitor, overview

    settings = _settings(config)
    echo_results = None
    if echo_destinations and settings.export.destinations:
        echo_results = DestinationMonitor(
            settings.export.destinations,
            settings.dicom.ae_title,
            settings.monitoring.echo_timeout_s,
        ).check()
    with _session(settings) as session:
        data = overview(session, settings, echo_results=echo_results)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} s"

    latency = data["latency"]
    hours = data["window_s"] / 3600
    typer.echo(
        f"queue depth     {data['queue_depth']} ({data['jobs_by_state']['RUNNING']} running)"
    )
    typer.echo(
        "jobs            "
        + " ".join(f"{k} {v}" for k, v in data["jobs_by_state"].items())
        + f"   (last {hours:g} h: "
        + " ".join(f"{k} {v}" for k, v in data["jobs_by_state_window"].items() if v)
        + ")"
    )
    verdict = {True: "within target", False: "OVER TARGET", None: "no data"}
    typer.echo(
        f"time to result  last instance -> delivered, last {hours:g} h: "
        f"p50 {seconds(latency['p50_s'])}, p95 {seconds(latency['p95_s'])} "
        f"({latency['n']} jobs; target {latency['target_s']:g} s: "
        f"{verdict[latency['within_target']]})"
    )
    for stage in STAGES:
        figures = data["stages"][stage]
        typer.echo(
            f"  {stage:<13} p50 {seconds(figures['p50_s']):>9}  "
            f"p95 {seconds(figures['p95_s']):>9}  n {figures['n']}"
        )
    echoes = {e["name"]: e for e in data["destinations"]}
    for d in data["deliveries"]:
        e = echoes.get(d["destination"])
        reach = (
            "not checked"
            if e is None
            else ("C-ECHO ok" if e["reachable"] else f"C-ECHO FAILED ({e['error']})")
        )
        states = " ".join(f"{k} {v}" for k, v in d["by_state"].items())
        typer.echo(f"destination     {d['destination']}: {states}; {reach}")
        if d["failing"] and d["last_error"]:
            typer.echo(f"                last error: {d['last_error']}")
    disk = data["disk"]
    typer.echo(
        f"spool           {disk['spool_bytes'] / 2**20:.1f} MiB in {disk['spool_instances']} "
        f"instances; outbox {disk['outbox_bytes'] / 2**20:.1f} MiB; disk free "
        f"{disk['fs_free_bytes'] / 2**30:.1f} GiB of {disk['fs_total_bytes'] / 2**30:.1f} GiB"
        + ("" if disk["ok"] else " (BELOW THE WATERMARK)")
    )
    if data["notifications"]:
        typer.echo(
            "notifications   " + " ".join(f"{k} {v}" for k, v in data["notifications"].items())
        )


@app.command()
def retention(
    config: ConfigOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be purged; delete nothing.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Purge spool and outbox files of delivered series older than retention.max_age_days."""
    from dicom_node.db.engine import make_engine, make_session_factory
    from dicom_node.retention import purge

    settings = _settings(config)
    session_factory = make_session_factory(make_engine(settings.storage.url))
    candidates = purge(session_factory, settings, dry_run=dry_run)
    if as_json:
        typer.echo(
            json.dumps(
                {"dry_run": dry_run, "series": [c.as_json() for c in candidates]}, indent=2
            )
        )
        return
    verb = "would purge" if dry_run else "purged"
    for c in candidates:
        typer.echo(
            f"{verb} series {c.series_instance_uid}: {len(c.spool_paths)} spool + "
            f"{len(c.outbox_paths)} outbox files, {c.size_bytes / 2**20:.1f} MiB "
            f"(newest {c.newest_at:%Y-%m-%d %H:%M} UTC)"
        )
    total = sum(c.size_bytes for c in candidates)
    typer.echo(
        f"{len(candidates)} series, {total / 2**20:.1f} MiB "
        f"(older than {settings.retention.max_age_days:g} days and delivered)"
    )


PasswordStdinOption = Annotated[
    bool,
    typer.Option("--password-stdin", help="Read the password from the first line of stdin."),
]


def _read_password(password_stdin: bool) -> str:
    import sys

    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


@users_app.command("add")
def users_add(
    username: Annotated[str, typer.Argument(help="User name (letters, digits, . _ @ -).")],
    role: Annotated[str, typer.Option(help="admin (requeue, cancel, configuration) or viewer.")],
    config: ConfigOption = None,
    password_stdin: PasswordStdinOption = False,
) -> None:
    """Create a dashboard user; the password is prompted for (or read from stdin), hashed."""
    from dicom_node.db.engine import make_engine, make_session_factory
    from dicom_node.users import UserError, create_user

    settings = _settings(config)
    password = _read_password(password_stdin)
    session_factory = make_session_factory(make_engine(settings.storage.url))
    try:
        with session_factory.begin() as session:
            create_user(session, username, password, role)
    except UserError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from err
    typer.echo(f"user {username} added ({role})")


@users_app.command("set-password")
def users_set_password(
    username: Annotated[str, typer.Argument(help="An existing user.")],
    config: ConfigOption = None,
    password_stdin: PasswordStdinOption = False,
) -> None:
    """Set a new password for a dashboard user."""
    from dicom_node.db.engine import make_engine, make_session_factory
    from dicom_node.users import UserError, set_password

    settings = _settings(config)
    password = _read_password(password_stdin)
    session_factory = make_session_factory(make_engine(settings.storage.url))
    try:
        with session_factory.begin() as session:
            set_password(session, username, password)
    except UserError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from err
    typer.echo(f"password of {username} changed")


@users_app.command("remove")
def users_remove(
    username: Annotated[str, typer.Argument(help="An existing user.")],
    config: ConfigOption = None,
) -> None:
    """Delete a dashboard user (their sessions end at their next request)."""
    from dicom_node.db.engine import make_engine, make_session_factory
    from dicom_node.users import UserError, delete_user

    settings = _settings(config)
    session_factory = make_session_factory(make_engine(settings.storage.url))
    try:
        with session_factory.begin() as session:
            delete_user(session, username)
    except UserError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from err
    typer.echo(f"user {username} removed")


@users_app.command("unlock")
def users_unlock(
    username: Annotated[
        str, typer.Argument(help="The user name whose login lockout to lift (known or not).")
    ],
    address: Annotated[
        str | None, typer.Option(help="Also lift the lockout of this client address.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Lift a login lockout (too many failed logins) now and forget the failures; audited."""
    import getpass

    from dicom_node import login_throttle
    from dicom_node.db.engine import make_engine, make_session_factory

    settings = _settings(config)
    try:
        by = f"{getpass.getuser()} (dicom-node users unlock)"
    except (KeyError, OSError):
        by = "dicom-node users unlock"
    session_factory = make_session_factory(make_engine(settings.storage.url))
    with session_factory.begin() as session:
        lifted = login_throttle.unlock(session, login_throttle.USER, username, by=by)
        typer.echo(f"login lockout of {username} {'lifted' if lifted else 'was not in place'}")
        if address:
            lifted = login_throttle.unlock(session, login_throttle.ADDRESS, address, by=by)
            typer.echo(f"login lockout of address {address} "
                       f"{'lifted' if lifted else 'was not in place'}")  # fmt: skip


@users_app.command("list")
def users_list(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """List dashboard users with their role and last login."""
    from dicom_node.db.models import User

    settings = _settings(config)
    with _session(settings) as session:
        rows = [
            {
                "username": u.username,
                "role": u.role.value,
                "created_at": u.created_at.isoformat(),
                "last_login_at": u.last_login_at.isoformat() if u.last_login_at else None,
            }
            for u in session.scalars(select(User).order_by(User.username))
        ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(f"{'USER':<24} {'ROLE':<7} LAST LOGIN")
    for r in rows:
        typer.echo(f"{r['username']:<24} {r['role']:<7} {r['last_login_at'] or '-'}")


@app.command()
def echo(
    host: Annotated[str, typer.Argument(help="Peer host name or address.")],
    port: Annotated[int, typer.Argument(help="Peer TCP port.")],
    ae_title: Annotated[str, typer.Option("--aet", help="Called AE title.")] = "ANY-SCP",
    calling_ae_title: Annotated[str, typer.Option("--calling-aet")] = "DICOM_NODE",
) -> None:
    """Send a C-ECHO (Verification) to a DICOM peer; exit 0 on success."""
    from dicom_node.export.scu import Peer
    from dicom_node.export.scu import echo as c_echo

    configure_logging("WARNING")
    try:
        status = c_echo(Peer(host, port, ae_title, calling_ae_title, timeout_s=10.0))
    except DicomNodeError as err:
        typer.echo(f"C-ECHO to {ae_title}@{host}:{port} failed: {err}", err=True)
        raise typer.Exit(1) from err
    typer.echo(f"C-ECHO to {ae_title}@{host}:{port}: status 0x{status:04X}")
    raise typer.Exit(0 if status == 0 else 1)


@app.command()
def send(
    host: Annotated[str, typer.Argument(help="Peer host.")],
    port: Annotated[int, typer.Argument(help="Peer port.")],
    paths: Annotated[list[Path], typer.Argument(help="DICOM files or folders.", exists=True)],
    ae_title: Annotated[str, typer.Option("--aet", help="Called AE title.")] = "DICOM_NODE",
    calling_ae_title: Annotated[str, typer.Option("--calling-aet")] = "DICOM_NODE_SCU",
) -> None:
    """Send DICOM files (or every file in folders) with C-STORE over one association."""
    from dicom_node.export.scu import Peer, send_files

    configure_logging("WARNING")
    files = sorted(f for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())
    try:
        statuses = send_files(Peer(host, port, ae_title, calling_ae_title), files)
    except DicomNodeError as err:
        typer.echo(f"sending to {ae_title}@{host}:{port} failed: {err}", err=True)
        raise typer.Exit(1) from err
    typer.echo(f"sent {len(statuses)} instance(s) to {ae_title}@{host}:{port}")


@app.command()
def analyze(
    path: Annotated[
        Path, typer.Argument(help="DICOM folder of one series, or a NIfTI file (.nii, .nii.gz).")
    ],
    pipeline: Annotated[str, typer.Option(help="Pipeline: ich, ich-baseline or cta.")] = "ich",
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for the results; default ./dicom-node-analyze/<SeriesUID>/."),
    ] = None,
    series_uid: Annotated[
        str | None,
        typer.Option("--series-uid", help="Series Instance UID, when the folder holds several."),
    ] = None,
    overlay: Annotated[
        bool, typer.Option("--overlay", help="Also write the Secondary Capture overlay series.")
    ] = False,
    validate: Annotated[
        bool | None,
        typer.Option("--validate/--no-validate", help="dciodvfy every object, as the node does "
                     "(default: results.validation)."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Log at INFO on stderr.")] = False,
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Analyse one series from disk, without network or database; write SEG and SR.

    Runs the node's quality gates, the pipeline and the result builders on a
    DICOM folder or a NIfTI file (converted to CT images with new UIDs), and
    prints the findings or the reason it is not analysable, the pipeline's
    details, timings and the files written. Exit status 0 for analysed and
    not analysable; 2 when the input cannot be read; 1 when analysis fails.
    """
    from dicom_node.analyze import analyze as analyze_series
    from dicom_node.analyze import format_report
    from dicom_node.errors import InvalidUIDError, SeriesLoadError

    try:
        settings = load_settings(config)
    except ConfigurationError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    configure_logging("INFO" if verbose else "WARNING",
                      log_library_warnings=settings.log_library_warnings)
    try:
        report = analyze_series(
            path, pipeline=pipeline, out_dir=out, series_instance_uid=series_uid,
            overlay=overlay, validate=validate, settings=settings,
        )
    except (SeriesLoadError, InvalidUIDError, ConfigurationError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    except (DicomNodeError, OSError) as err:
        typer.echo(f"error: analysis of {path} failed: {err}", err=True)
        raise typer.Exit(1) from err
    typer.echo(json.dumps(report, indent=2) if as_json else format_report(report))


def sample_head_ct_dir() -> Path:
    """The real GE head CT shipped in the package (28 slices, see its LICENSE)."""
    return Path(str(resources.files("dicom_node").joinpath("samples/head-ct-ge")))


@app.command()
def demo(
    workdir: Annotated[
        Path,
        typer.Option(help="Folder for the demo's database, spool and results (emptied first)."),
    ] = Path("dicom-node-demo"),
    config: ConfigOption = None,
    timeout_s: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 600.0,
) -> None:
    """Start the node, send it the sample head CT and a copy with a synthetic bleed, show results.

    The node runs on its embedded defaults with a free port and a short quiet
    time; destinations from --config, if any, receive the results.
    """
    from dicom_node.app import Node
    from dicom_node.db.models import Job, JobState, ResultObject, Series
    from dicom_node.export.scu import Peer, send_files
    from dicom_node.series.volume import read_datasets
    from dicom_node.training.synthetic import insert_ellipsoid_hemorrhage, with_new_uids

    marker = workdir / ".dicom-node-demo"
    if workdir.exists() and any(workdir.iterdir()) and not marker.exists():
        typer.echo(f"error: {workdir} exists and is not a demo folder; choose --workdir", err=True)
        raise typer.Exit(2)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    marker.touch()
    settings = _settings(
        config,
        {
            "log_level": "WARNING",
            "storage": {"base_dir": str(workdir.resolve())},
            "dicom": {"port": 0},
            "series": {"stable_after_s": 2.0, "sweep_interval_s": 0.5},
            "workers": {"poll_interval_s": 0.5},
            "export": {"sweep_interval_s": 1.0},
            "web": {"enabled": False},
        },
    )
    typer.echo("preparing the sample head CT and a copy with a synthetic 10 mL acute bleed ...")
    source = sorted(p for p in sample_head_ct_dir().glob("*.dcm"))
    original = read_datasets(source)
    bleed = insert_ellipsoid_hemorrhage(
        with_new_uids(original, seed=2),
        center_mm=None,
        semi_axes_mm=(16.0, 12.0, 12.5),
        hu=65.0,
        seed=2,
    )
    bleed_dir = workdir / "input" / "synthetic-bleed"
    bleed_dir.mkdir(parents=True)
    for ds in bleed.datasets:
        ds.save_as(bleed_dir / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    node = Node(settings)
    node.start()
    try:
        peer = Peer("127.0.0.1", node.port, settings.dicom.ae_title, "DEMO_SCU")
        cases = {
            "sample head CT": (str(original[0].SeriesInstanceUID), source),
            "synthetic bleed": (
                str(bleed.datasets[0].SeriesInstanceUID),
                sorted(bleed_dir.glob("*.dcm")),
            ),
        }
        for name, (_, files) in cases.items():
            send_files(peer, files)
            typer.echo(
                f"sent {name}: {len(files)} instances to {peer.ae_title}@127.0.0.1:{node.port}"
            )
        deadline = time.monotonic() + timeout_s
        done: dict[str, Any] = {}
        while len(done) < len(cases) and time.monotonic() < deadline:
            time.sleep(0.5)
            with node.session_factory() as session:
                for name, (uid, _) in cases.items():
                    job = session.scalar(
                        select(Job)
                        .join(Series)
                        .where(Series.series_instance_uid == uid)
                        .order_by(Job.id.desc())
                    )
                    if job is not None and job.state in (JobState.SUCCEEDED, JobState.FAILED):
                        done[name] = job.id
        if len(done) < len(cases):
            typer.echo(f"error: results not ready after {timeout_s:.0f} s", err=True)
            raise typer.Exit(1)
        if settings.export.destinations:
            time.sleep(2 * settings.export.sweep_interval_s)
    finally:
        node.stop()
    typer.echo(f"synthetic bleed inserted: {bleed.inserted_volume_ml:.2f} mL at 65 HU")
    failed = False
    with _session(settings) as session:
        for name, job_id in done.items():
            job = session.get(Job, job_id)
            typer.echo(f"\n== {name} (job {job_id}, {job.state})")
            if job.state == JobState.FAILED:
                typer.echo(f"error: {job.error}")
                failed = True
                continue
            typer.echo(f"finding: {_finding_text(job.result_summary['findings'])}")
            for obj in session.scalars(select(ResultObject).where(ResultObject.job_id == job_id)):
                typer.echo(f"{obj.kind:<4} {settings.storage.outbox_path / obj.path}")
    typer.echo(f"\ninspect with: DICOM_NODE_STORAGE__BASE_DIR={workdir} dicom-node jobs list")
    if failed:
        raise typer.Exit(1)


@evaluate_app.command("cta")
def evaluate_cta_command(
    cases: Annotated[int, typer.Option(help="Number of generated angiograms (>= 60).")] = 72,
    seed_start: Annotated[
        int, typer.Option(help="First generator seed (100-219 were used for tuning).")
    ] = 1000,
    base: Annotated[
        Path | None,
        typer.Option(help="Non-contrast head CT folder to draw into; default: the packaged head."),
    ] = None,
    json_path: Annotated[
        Path, typer.Option("--json", help="Where to write the JSON report.")
    ] = Path("docs/cta-evaluation.json"),
    markdown_path: Annotated[
        Path, typer.Option("--markdown", help="Where to write the Markdown report.")
    ] = Path("docs/cta-evaluation.md"),
) -> None:
    """Evaluate the cta pipeline (vessels, LVO) on generated CT angiograms.

    Draws ``--cases`` synthetic angiograms (normal, ICA-T, M1 and M2
    occlusions, left and right) into a real head CT, runs the pipeline on
    each, and writes vessel Dice, LVO sensitivity/specificity, side accuracy
    and location error as JSON and Markdown. Figures on synthetic data, not
    clinical accuracy (see docs/cta.md).
    """
    from dicom_node.training.evaluate_cta import evaluate_cta, write_reports

    configure_logging("WARNING")
    folder = base if base is not None else sample_head_ct_dir()

    def progress(case) -> None:
        truth = f"{case.truth_segment} {case.truth_side}" if case.truth_segment else "normal"
        found = (
            f"LVO {case.predicted_segment} {case.predicted_side}" if case.suspected else "no LVO"
        )
        ratio = "refused" if case.asymmetry_ratio is None else f"{case.asymmetry_ratio:.2f}"
        typer.echo(
            f"seed {case.seed:>4}  {truth:<12} -> {found:<16} ratio {ratio}  "
            f"Dice {case.dice_intracranial:.3f}  {case.runtime_s:.1f} s"
        )

    try:
        evaluation = evaluate_cta(folder, count=cases, seed_start=seed_start, progress=progress)
    except (ValueError, DicomNodeError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    write_reports(evaluation, json_path, markdown_path)
    summary = evaluation["summary"]
    sensitivity = summary["sensitivity"]
    typer.echo(
        f"\n{summary['n_cases']} cases: sensitivity ICA-T+M1 {sensitivity['ICA-T+M1']['value']}, "
        f"M2 {sensitivity['M2']['value']}, specificity {summary['specificity']['value']}, "
        f"side accuracy {summary['side_accuracy']['of_detected']['value']}, "
        f"vessel Dice (intracranial, median) {summary['vessel_dice_intracranial']['median']}"
    )
    typer.echo(f"reports: {json_path} {markdown_path}")


@train_app.command("ich")
def train_ich_command(
    base: Annotated[
        Path | None,
        typer.Option(help="Real non-contrast head CT folder (base anatomy); default: packaged."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Model package folder to write; default: models/ich/<version>."),
    ] = None,
    work_dir: Annotated[
        Path, typer.Option(help="Cache of generated cases and per-epoch checkpoints.")
    ] = Path(".ich-work"),
    version: Annotated[str, typer.Option(help="Model version for the manifest.")] = "1.0.0",
    train_cases: Annotated[int, typer.Option(help="Synthetic training series.")] = 400,
    validation_cases: Annotated[int, typer.Option(help="Series for the threshold.")] = 60,
    epochs: Annotated[int, typer.Option(help="Epochs.")] = 14,
    steps: Annotated[int, typer.Option(help="Batches per epoch.")] = 120,
    batch_size: Annotated[int, typer.Option(help="Slices per batch.")] = 12,
    learning_rate: Annotated[float, typer.Option(help="Initial Adam learning rate.")] = 2e-3,
    seed: Annotated[int, typer.Option(help="Seed of initialisation and sampling.")] = 0,
    downsample: Annotated[
        int, typer.Option(help="In-plane block-averaging of the base before lesions (1 = none).")
    ] = 2,
    processes: Annotated[int, typer.Option(help="Processes generating cases.")] = 2,
    dataset: Annotated[
        list[str] | None,
        typer.Option(help="Extra voxel-labelled data, physionet:PATH or bhsd:PATH (repeatable)."),
    ] = None,
    mimic_fraction: Annotated[
        float, typer.Option(help="Share of training cases with hard mimics of hemorrhage.")
    ] = 0.0,
    scanner_variety: Annotated[
        bool, typer.Option(help="Vary kernel, noise and field of view of training cases.")
    ] = False,
    validation_mimics: Annotated[
        bool, typer.Option(help="Hard mimics in every validation case (threshold choice).")
    ] = False,
    init_from: Annotated[
        Path | None, typer.Option(help="Package whose weights start the training (fine-tune).")
    ] = None,
) -> None:
    """Train the ICH ResUNet on synthetic hemorrhages and write a model package.

    Generates seeded synthetic cases on the real head (cached in --work-dir),
    trains with a progress line per epoch and a checkpoint per epoch (a rerun
    resumes), chooses the any-ICH threshold on validation cases and writes
    model.keras, manifest.json and MODEL_CARD.md to --out.
    """
    from dicom_node.training.train_ich import IchTrainingConfig, train_ich

    configure_logging("INFO")
    config = IchTrainingConfig(
        base_dir=base if base is not None else sample_head_ct_dir(),
        output_dir=out if out is not None else Path("models/ich") / version,
        work_dir=work_dir, version=version, train_cases=train_cases,
        validation_cases=validation_cases, epochs=epochs, steps_per_epoch=steps,
        batch_size=batch_size, learning_rate=learning_rate, seed=seed, processes=processes,
        downsample=downsample,
        datasets=list(dataset or []),
        mimic_fraction=mimic_fraction, scanner_variety=scanner_variety,
        validation_mimics=validation_mimics, init_from=init_from,
    )
    try:
        package = train_ich(config)
    except (ValueError, DicomNodeError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    typer.echo(f"model package: {package}")


@evaluate_app.command("ich-rules")
def evaluate_ich_rules_command(
    model: Annotated[
        Path | None, typer.Option(help="Model package folder; default: newest shipped.")
    ] = None,
    base: Annotated[
        Path | None, typer.Option(help="Real head CT folder (lesion base); default: packaged.")
    ] = None,
    cases: Annotated[int, typer.Option(help="Synthetic series.")] = 60,
    seed_start: Annotated[
        int, typer.Option(help="First seed: 200000 validation, 900000 held out.")
    ] = 200_000,
    mimics: Annotated[bool, typer.Option(help="Hard mimics in every case.")] = True,
    min_specificity: Annotated[float, typer.Option(help="Target of the operating point.")] = 0.95,
    min_sensitivity: Annotated[
        float, typer.Option(help="Sensitivity floor of the operating point.")
    ] = 0.90,
    set_threshold: Annotated[
        bool, typer.Option(help="Store the operating point in the package (validation seeds).")
    ] = False,
    processes: Annotated[int, typer.Option(help="Processes generating cases.")] = 1,
    report: Annotated[
        Path, typer.Option(help="Report path without suffix (.json and .md are written).")
    ] = Path("docs/ich-rules"),
    series: Annotated[
        list[Path] | None,
        typer.Option(help="Real series folders instead: each rule set on each (repeatable)."),
    ] = None,
) -> None:
    """Ablate the ICH blood rules one at a time and find the operating point.

    With --series, the rule sets run on real series instead (no labels): the
    score, findings and volume each rule removed, printed as a table.

    Each case is predicted once and judged with no rule, each rule alone and
    all rules: AUC, sensitivity, specificity, false alarms removed, true
    bleeds lost, subtype Dice and spurious subdural/epidural calls.
    """
    from dicom_node.pipelines.ich import default_model_dir
    from dicom_node.training.ablation_ich import (
        evaluate_blood_rules,
        markdown_table,
        set_operating_point,
        write_report,
    )

    configure_logging("WARNING")
    if series:
        from dicom_node.training.ablation_ich import evaluate_rules_on_series, real_series_table

        try:
            found = evaluate_rules_on_series(model or default_model_dir(), series)
        except (ValueError, DicomNodeError) as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from err
        typer.echo(real_series_table(found))
        return
    try:
        folder = model if model is not None else default_model_dir()
        result = evaluate_blood_rules(
            folder, base if base is not None else sample_head_ct_dir(), cases=cases,
            seed_start=seed_start, mimics=mimics, processes=processes,
            min_specificity=min_specificity, min_sensitivity=min_sensitivity)
        if set_threshold:
            set_operating_point(folder, result)
    except (ValueError, DicomNodeError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    write_report(result, report)
    typer.echo(markdown_table(result))
    typer.echo(f"reports: {report}.json {report}.md")


@train_app.command("ich-package")
def train_ich_package_command(
    source: Annotated[Path, typer.Option("--from", help="Package whose weights are used.")],
    version: Annotated[str, typer.Option(help="Version of the new package.")],
    out: Annotated[
        Path | None, typer.Option(help="Package folder; default: models/ich/<version>.")
    ] = None,
    add_blood_rule: Annotated[
        list[str] | None,
        typer.Option(help="Enable this blood rule too (repeatable), e.g. dural_band."),
    ] = None,
) -> None:
    """Write a package with existing weights and the region rule, slabs and blood rules.

    No training: the weights file is copied (same sha256). Set its threshold
    next with ``dicom-node evaluate ich-rules --set-threshold``.
    """
    from dicom_node.training.ablation_ich import derive_region_package

    try:
        folder = derive_region_package(source, out or Path("models/ich") / version, version,
                                       add_blood_rules=tuple(add_blood_rule or ()))
    except (ValueError, DicomNodeError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    typer.echo(f"wrote {folder}")


@train_app.command("ich-regions")
def train_ich_regions_command(
    source: Annotated[Path, typer.Option("--from", help="Package whose weights and rules.")],
    version: Annotated[str, typer.Option(help="Version of the new package.")],
    out: Annotated[
        Path | None, typer.Option(help="Package folder; default: models/ich/<version>.")
    ] = None,
    base: Annotated[
        Path | None, typer.Option(help="Real head CT folder (lesion base); default: packaged.")
    ] = None,
    work_dir: Annotated[
        Path, typer.Option(help="Cache of the measured regions (.npz), reused when present.")
    ] = Path(".dicom-node-training/ich-regions"),
    cases: Annotated[int, typer.Option(help="Synthetic series to fit on (seeds 100000..).")] = 200,
    validation_cases: Annotated[
        int, typer.Option(help="Validation series with hard mimics for the threshold (200000..).")
    ] = 60,
    l2: Annotated[float, typer.Option(help="L2 penalty of the logistic regression.")] = 1.0,
) -> None:
    """Fit the region classifier (false-positive reduction) of an ICH package and package it.

    Runs the package's network and blood rules on synthetic cases (75 % with
    hard mimics), measures every candidate blood region, fits a logistic
    regression P(blood | region figures), and chooses the threshold on the
    validation cases with hard mimics. The weights are copied unchanged.
    """
    from dicom_node.imaging.region_features import fit_region_classifier
    from dicom_node.training.region_classifier_ich import (
        REGION_SEED_START,
        load_or_collect,
        region_labels,
        write_classifier_package,
    )

    base_dir = base if base is not None else sample_head_ct_dir()
    common = {"model_dir": source, "base_dir": base_dir}
    try:
        train = load_or_collect(work_dir / f"train-{REGION_SEED_START}-{cases}.npz", **common,
                                cases=cases, seed_start=REGION_SEED_START, mimic_share=0.75,
                                negative_fraction=0.4)
        validation = load_or_collect(
            work_dir / f"validation-200000-{validation_cases}.npz", **common,
            cases=validation_cases, seed_start=200_000, mimic_share=1.0, negative_fraction=0.25)
        classifier = fit_region_classifier(
            train["features"], region_labels(train), l2=l2,
            fitted_on=(f"{len(train['features'])} candidate regions of {cases} synthetic cases "
                       f"(seeds {REGION_SEED_START}-{REGION_SEED_START + cases - 1}, 75 % with "
                       "hard mimics, 40 % without blood) on the real base head"))
        detection = write_classifier_package(source, out or Path("models/ich") / version,
                                             version, classifier, validation, l2=l2)
    except (ValueError, DicomNodeError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    v = detection["validation"]
    typer.echo(f"wrote {out or Path('models/ich') / version}: threshold "
               f"{detection['any_ich_threshold']}, validation sensitivity "
               f"{v['sensitivity']:.2f}, specificity {v['specificity']:.2f}")


@evaluate_app.command("ich")
def evaluate_ich_command(
    model: Annotated[
        Path | None, typer.Option(help="Model package folder; default: newest shipped.")
    ] = None,
    base: Annotated[
        Path | None,
        typer.Option(help="Real head CT folder (lesion base, evaluated as is); default: packaged."),
    ] = None,
    cases: Annotated[int, typer.Option(help="Held-out synthetic series (>= 100).")] = 120,
    seed_start: Annotated[int, typer.Option(help="First held-out seed.")] = 900_000,
    processes: Annotated[int, typer.Option(help="Processes generating cases.")] = 2,
    report: Annotated[
        Path, typer.Option(help="Report path without suffix (.json and .md are written).")
    ] = Path("docs/ich-evaluation"),
    dataset: Annotated[
        str | None,
        typer.Option(help="Evaluate on a labelled public dataset instead: physionet:PATH, "
                     "bhsd:PATH or rsna:PATH (writes <report>.json only)."),
    ] = None,
    mimics: Annotated[
        bool, typer.Option(help="Hard mimics in every case (written to evaluation-mimics.json).")
    ] = False,
    scanner_variety: Annotated[
        bool, typer.Option(help="Vary kernel, noise and field of view of every case.")
    ] = False,
) -> None:
    """Evaluate the ICH model on held-out synthetic series and the real head.

    Writes Dice per subtype, any-ICH AUC, sensitivity and specificity at the
    manifest threshold, slice-level AUC and volume error, into the package
    (evaluation.json, MODEL_CARD.md) and to --report. Synthetic data: not a
    measure of clinical accuracy. With --dataset, the same figures on your own
    labelled data (series and slice AUC; Dice where voxel labels exist).
    """
    import json
    import shlex
    import sys

    from dicom_node.pipelines.ich import default_model_dir
    from dicom_node.training.evaluate_ich import evaluate_ich

    configure_logging("WARNING")
    if dataset is not None:
        from dicom_node.training.ich_real import evaluate_dataset

        try:
            folder = model if model is not None else default_model_dir()
            result = evaluate_dataset(folder, dataset)
        except (ValueError, DicomNodeError) as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from err
        report.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        s = result["summary"]
        typer.echo(
            f"{s['series']} series ({s['positive_series']} positive): series AUC "
            f"{s['series_auc']}, sensitivity {s['sensitivity']}, specificity "
            f"{s['specificity']}, slice AUC {s['slice_auc']}"
        )
        typer.echo(f"report: {report.with_suffix('.json')}")
        return
    try:
        folder = model if model is not None else default_model_dir()
        result = evaluate_ich(
            folder, base if base is not None else sample_head_ct_dir(), cases=cases,
            seed_start=seed_start, processes=processes, report_path=report,
            mimics=mimics, scanner=scanner_variety,
            command="dicom-node " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        )
    except (ValueError, DicomNodeError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    s = result["summary"]
    typer.echo(
        f"{s['cases']} cases: AUC {s['any_ich_auc']}, sensitivity {s['sensitivity']}, "
        f"specificity {s['specificity']}, mean subtype Dice {s['mean_subtype_dice']}; "
        f"real head called {'positive' if result['real_head']['positive'] else 'negative'}"
    )
    typer.echo(f"reports: {report}.json {report}.md")


if __name__ == "__main__":
    app()
