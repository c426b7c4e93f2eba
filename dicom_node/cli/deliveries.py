"""``dicom-node deliveries``: list deliveries of result objects, requeue DEAD ones."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from dicom_node.cli.common import ConfigOption, JsonOption, logger, open_session, settings_or_exit

deliveries_app = typer.Typer(help="Inspect deliveries of results.", no_args_is_help=True)


@deliveries_app.command("list")
def deliveries_list(
    config: ConfigOption = None,
    as_json: JsonOption = False,
    state: Annotated[str | None, typer.Option(help="PENDING, RETRYING, SENT or DEAD.")] = None,
    destination: Annotated[str | None, typer.Option(help="Only this destination.")] = None,
    limit: Annotated[int, typer.Option(help="Most recent N deliveries.")] = 50,
) -> None:
    """List deliveries of result objects, newest first, with attempts and the last error."""
    from dicom_node.db.models import DeliveryState
    from dicom_node.queries import list_deliveries

    settings = settings_or_exit(config)
    if state and state.upper() not in {s.value for s in DeliveryState}:
        typer.echo(f"error: unknown delivery state {state!r}", err=True)
        raise typer.Exit(2)
    with open_session(settings) as session:
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
    settings = settings_or_exit(config)
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
