"""The node itself: ``version``, ``serve``, ``worker`` and ``demo``."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from dicom_node import __version__
from dicom_node.cli.common import (
    ConfigOption,
    open_session,
    sample_head_ct_dir,
    settings_or_exit,
    wait_for_signal,
)
from dicom_node.errors import ConfigurationError


def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def serve(config: ConfigOption = None) -> None:
    """Run the whole node: Storage SCP, scheduler, exporter and worker processes."""
    from dicom_node.app import Node

    settings = settings_or_exit(config)
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
        wait_for_signal()
    finally:
        node.stop()


def worker(config: ConfigOption = None) -> None:
    """Run one worker process in the foreground (scale-out against a shared database)."""
    import os
    import socket

    from dicom_node.app import worker_process_main

    settings = settings_or_exit(config)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    worker_process_main(
        settings.model_dump(mode="json"), f"{socket.gethostname()}:{os.getpid()}:cli", stop
    )


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
    from dicom_node import demo as cases
    from dicom_node.app import Node
    from dicom_node.db.models import Job, JobState
    from dicom_node.export.scu import Peer, send_files
    from dicom_node.queries import finding_text, result_objects_of_job

    try:
        cases.prepare_workdir(workdir)
    except ConfigurationError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    settings = settings_or_exit(config, cases.settings_overrides(workdir))
    typer.echo("preparing the sample head CT and a copy with a synthetic 10 mL acute bleed ...")
    source = sorted(p for p in sample_head_ct_dir().glob("*.dcm"))
    bleed_dir = workdir / "input" / "synthetic-bleed"
    original, bleed = cases.write_synthetic_bleed(source, bleed_dir)
    node = Node(settings)
    node.start()
    try:
        peer = Peer("127.0.0.1", node.port, settings.dicom.ae_title, "DEMO_SCU")
        sent = {
            "sample head CT": (str(original[0].SeriesInstanceUID), source),
            "synthetic bleed": (
                str(bleed.datasets[0].SeriesInstanceUID),
                sorted(bleed_dir.glob("*.dcm")),
            ),
        }
        for name, (_, files) in sent.items():
            send_files(peer, files)
            typer.echo(
                f"sent {name}: {len(files)} instances to {peer.ae_title}@127.0.0.1:{node.port}"
            )
        done = cases.wait_for_finished_jobs(
            node.session_factory, {name: uid for name, (uid, _) in sent.items()}, timeout_s
        )
        if len(done) < len(sent):
            typer.echo(f"error: results not ready after {timeout_s:.0f} s", err=True)
            raise typer.Exit(1)
        if settings.export.destinations:
            time.sleep(2 * settings.export.sweep_interval_s)
    finally:
        node.stop()
    typer.echo(f"synthetic bleed inserted: {bleed.inserted_volume_ml:.2f} mL at 65 HU")
    failed = False
    with open_session(settings) as session:
        for name, job_id in done.items():
            job = session.get(Job, job_id)
            if job is None:
                typer.echo(f"\n== {name}: error: job {job_id} is no longer recorded", err=True)
                failed = True
                continue
            typer.echo(f"\n== {name} (job {job_id}, {job.state})")
            if job.state == JobState.FAILED:
                typer.echo(f"error: {job.error}")
                failed = True
                continue
            summary = job.result_summary or {}
            typer.echo(f"finding: {finding_text(summary.get('findings', []))}")
            for obj in result_objects_of_job(session, job_id):
                typer.echo(f"{obj.kind:<4} {settings.storage.outbox_path / obj.path}")
    typer.echo(f"\ninspect with: DICOM_NODE_STORAGE__BASE_DIR={workdir} dicom-node jobs list")
    if failed:
        raise typer.Exit(1)
