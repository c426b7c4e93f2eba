"""``dicom-node series``: the received series and why each is in its state."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from dicom_node.cli.common import (
    ConfigOption,
    JsonOption,
    open_session,
    settings_or_exit,
    uid_column,
)

series_app = typer.Typer(help="Inspect received series.", no_args_is_help=True)


@series_app.command("list")
def series_list(
    config: ConfigOption = None,
    as_json: JsonOption = False,
    limit: Annotated[int, typer.Option(help="Most recent N series.")] = 50,
) -> None:
    """List received series with their state and the reason for it."""
    from dicom_node.queries import list_series, series_summary

    settings = settings_or_exit(config)
    with open_session(settings) as session:
        page, _ = list_series(session, limit=limit)
        rows = [series_summary(s) for s, _ in page]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(f"{'STATE':<13} {'MOD':<4} {'N':>4}  {'SERIES':<40} REASON")
    for r in rows:
        typer.echo(
            f"{r['state']:<13} {r['modality']:<4} {r['instances']:>4}  "
            f"{uid_column(r['series_instance_uid']):<40} {r['reason'] or ''}"
        )
