"""DIMSE from the command line: ``echo`` (C-ECHO) and ``send`` (C-STORE)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dicom_node.errors import DicomNodeError
from dicom_node.logs import configure_logging


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
