"""``dicom-node train``: train and package the node's models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dicom_node.cli.common import sample_head_ct_dir
from dicom_node.errors import DicomNodeError
from dicom_node.logs import configure_logging

train_app = typer.Typer(help="Train the node's models.", no_args_is_help=True)


@train_app.command("ich")
def train_ich_command(
    base: Annotated[
        Path | None,
        typer.Option(help="Real non-contrast head CT folder (base anatomy); default: packaged."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Model package folder to write; default: dicom_node/models/ich/<version>."
        ),
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
        output_dir=out if out is not None else Path("dicom_node/models/ich") / version,
        work_dir=work_dir,
        version=version,
        train_cases=train_cases,
        validation_cases=validation_cases,
        epochs=epochs,
        steps_per_epoch=steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        processes=processes,
        downsample=downsample,
        datasets=list(dataset or []),
        mimic_fraction=mimic_fraction,
        scanner_variety=scanner_variety,
        validation_mimics=validation_mimics,
        init_from=init_from,
    )
    try:
        package = train_ich(config)
    except (ValueError, DicomNodeError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    typer.echo(f"model package: {package}")


@train_app.command("ich-package")
def train_ich_package_command(
    source: Annotated[Path, typer.Option("--from", help="Package whose weights are used.")],
    version: Annotated[str, typer.Option(help="Version of the new package.")],
    out: Annotated[
        Path | None, typer.Option(help="Package folder; default: dicom_node/models/ich/<version>.")
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
        folder = derive_region_package(
            source,
            out or Path("dicom_node/models/ich") / version,
            version,
            add_blood_rules=tuple(add_blood_rule or ()),
        )
    except (ValueError, DicomNodeError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    typer.echo(f"wrote {folder}")


@train_app.command("ich-regions")
def train_ich_regions_command(
    source: Annotated[Path, typer.Option("--from", help="Package whose weights and rules.")],
    version: Annotated[str, typer.Option(help="Version of the new package.")],
    out: Annotated[
        Path | None, typer.Option(help="Package folder; default: dicom_node/models/ich/<version>.")
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
    from dicom_node.training.region_classifier_ich import train_region_classifier

    try:
        detection = train_region_classifier(
            source,
            out or Path("dicom_node/models/ich") / version,
            version,
            base_dir=base if base is not None else sample_head_ct_dir(),
            work_dir=work_dir,
            cases=cases,
            validation_cases=validation_cases,
            l2=l2,
        )
    except (ValueError, DicomNodeError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    v = detection["validation"]
    typer.echo(
        f"wrote {out or Path('dicom_node/models/ich') / version}: threshold "
        f"{detection['any_ich_threshold']}, validation sensitivity "
        f"{v['sensitivity']:.2f}, specificity {v['specificity']:.2f}"
    )
