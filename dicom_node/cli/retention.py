"""``dicom-node retention``: purge the files of delivered series past their age."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from dicom_node.cli.common import ConfigOption, JsonOption, settings_or_exit


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

    settings = settings_or_exit(config)
    session_factory = make_session_factory(make_engine(settings.storage.url))
    candidates = purge(session_factory, settings, dry_run=dry_run)
    if as_json:
        typer.echo(
            json.dumps({"dry_run": dry_run, "series": [c.as_json() for c in candidates]}, indent=2)
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
