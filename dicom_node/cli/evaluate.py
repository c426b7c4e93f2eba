"""``dicom-node evaluate``: pipelines on generated cases with ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dicom_node.cli.common import sample_head_ct_dir
from dicom_node.errors import DicomNodeError
from dicom_node.logs import configure_logging

evaluate_app = typer.Typer(
    help="Evaluate pipelines on generated cases with ground truth.", no_args_is_help=True
)


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
            folder,
            base if base is not None else sample_head_ct_dir(),
            cases=cases,
            seed_start=seed_start,
            mimics=mimics,
            processes=processes,
            min_specificity=min_specificity,
            min_sensitivity=min_sensitivity,
        )
        if set_threshold:
            set_operating_point(folder, result)
    except (ValueError, DicomNodeError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    write_report(result, report)
    typer.echo(markdown_table(result))
    typer.echo(f"reports: {report}.json {report}.md")


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
        typer.Option(
            help="Evaluate on a labelled public dataset instead: physionet:PATH, "
            "bhsd:PATH or rsna:PATH (writes <report>.json only)."
        ),
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
            folder,
            base if base is not None else sample_head_ct_dir(),
            cases=cases,
            seed_start=seed_start,
            processes=processes,
            report_path=report,
            mimics=mimics,
            scanner=scanner_variety,
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
