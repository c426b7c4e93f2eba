"""What every command of the ``dicom-node`` command line shares: options, settings, sessions."""

from __future__ import annotations

import logging
import signal
import threading
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy.orm import Session

from dicom_node.config import Settings, load_settings
from dicom_node.errors import ConfigurationError
from dicom_node.logs import configure_logging

#: The logger of every command: the name the command line has always logged under.
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


def settings_or_exit(config: Path | None, overrides: dict[str, Any] | None = None) -> Settings:
    """Load the settings and configure logging from them, or exit with status 2.

    Parameters
    ----------
    config : pathlib.Path or None
        The ``--config`` TOML file; None reads ``$DICOM_NODE_CONFIG`` (or the defaults).
    overrides : dict or None
        Values that win over the file and the environment (see :func:`load_settings`).

    Returns
    -------
    Settings

    Raises
    ------
    typer.Exit
        Status 2, with ``error: ...`` on stderr, when the settings are invalid.
    """
    try:
        settings = load_settings(config, overrides)
    except ConfigurationError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    configure_logging(settings.log_level, log_library_warnings=settings.log_library_warnings)
    return settings


def open_session(settings: Settings) -> Session:
    """A new session on the job database of ``settings.storage.url`` (the caller closes it)."""
    from dicom_node.db.engine import make_engine, make_session_factory

    return make_session_factory(make_engine(settings.storage.url))()


def wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM arrives (the foreground of ``serve``)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass


def uid_column(uid: str, width: int = 40) -> str:
    """A UID cut to ``width`` characters from the left, marked with "..." when cut.

    The end of a UID is what tells series of one study apart, so it is kept.
    """
    return uid if len(uid) <= width else "..." + uid[-(width - 3) :]


def sample_head_ct_dir() -> Path:
    """The real GE head CT shipped in the package (28 slices, see its LICENSE)."""
    return Path(str(resources.files("dicom_node").joinpath("samples/head-ct-ge")))
