"""``dicom-node analyze``: one series from disk, no network or database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from dicom_node.cli.common import ConfigOption
from dicom_node.config import load_settings
from dicom_node.errors import ConfigurationError, DicomNodeError
from dicom_node.logs import configure_logging


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
        typer.Option(
            "--validate/--no-validate",
            help="dciodvfy every object, as the node does (default: results.validation).",
        ),
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
    configure_logging(
        "INFO" if verbose else "WARNING", log_library_warnings=settings.log_library_warnings
    )
    try:
        report = analyze_series(
            path,
            pipeline=pipeline,
            out_dir=out,
            series_instance_uid=series_uid,
            overlay=overlay,
            validate=validate,
            settings=settings,
        )
    except (SeriesLoadError, InvalidUIDError, ConfigurationError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    except (DicomNodeError, OSError) as err:
        typer.echo(f"error: analysis of {path} failed: {err}", err=True)
        raise typer.Exit(1) from err
    typer.echo(json.dumps(report, indent=2) if as_json else format_report(report))
