"""``dicom-node stats``: the dashboard overview's figures on the terminal."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from dicom_node.cli.common import ConfigOption, JsonOption, open_session, settings_or_exit


def stats(
    config: ConfigOption = None,
    as_json: JsonOption = False,
    echo_destinations: Annotated[
        bool, typer.Option("--echo/--no-echo", help="C-ECHO each destination.")
    ] = True,
) -> None:
    """Print the dashboard overview's figures: queue, jobs, time to result, deliveries, disk."""
    from dicom_node.stats import STAGES, DestinationMonitor, overview

    settings = settings_or_exit(config)
    echo_results = None
    if echo_destinations and settings.export.destinations:
        echo_results = DestinationMonitor(
            settings.export.destinations,
            settings.dicom.ae_title,
            settings.monitoring.echo_timeout_s,
        ).check()
    with open_session(settings) as session:
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
