"""Analyse one series from disk, without the network or the job database.

``dicom-node analyze PATH`` runs the steps a worker runs for a job
(:meth:`dicom_node.jobs.executor.JobExecutor.execute`) on a DICOM folder or a NIfTI
file: the header quality gates, :func:`~dicom_node.series.volume.load_ct_volume`,
the field-of-view gate, the pipeline (whose own plausibility checks may
refuse the series with :class:`~dicom_node.errors.NotAnalysableError`), then
the SEG and TID 1500 SR (and, when asked, the SC overlay series), each
written to a folder and checked with dciodvfy as the node checks what it
sends. A series that fails a gate is not an error: the "not analysable"
report is written and the reason returned, as the node does.

Input:

* **a DICOM folder**, searched recursively (hidden files and folders are
  skipped, and so are files whose suffix marks them as documents or
  pictures, such as ``reads.csv``; they are listed as ignored). Every other
  file must be a DICOM Part 10 file; the first that is not is named in the
  error. When the folder holds several series, ``series_instance_uid``
  chooses one; without it the error lists them.
* **a NIfTI-1/2 file** (``.nii`` or ``.nii.gz``), read with nibabel. Its
  voxel values, after ``scl_slope`` and ``scl_inter``, are taken as HU and
  rounded to 1 HU. Its affine (RAS+) is converted to DICOM patient
  coordinates (LPS) and its voxel axes are only permuted and flipped (never
  resampled) so that rows run towards posterior, columns towards the
  patient's left and slices towards superior. Each slice becomes an
  in-memory CT Image with new Study, Series, Frame of Reference and SOP
  Instance UIDs and empty patient attributes, so the results reference those
  converted instances, not any original DICOM series; the report says so.

Files are named only after validated UIDs (:func:`dicom_node.uids.validate_uid`).

Reading the input is :mod:`dicom_node.analyze_input`; its names are importable
from here too.

References
----------
PS3.3 A.3 CT Image IOD, C.7.6.2 Image Plane Module (Image Position and
Orientation (Patient) in LPS); PS3.10 section 7 (DICOM File Format);
NIfTI-1 data format (nifti1.h: qform/sform, scl_slope, scl_inter, RAS+).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dicom_node import __version__
from dicom_node.analyze_input import (
    MEDIA_STORAGE_DIRECTORY_STORAGE,
    NIFTI_SERIES_DESCRIPTION,
    NON_FINITE_HU,
    SIDECAR_SUFFIXES,
    SeriesInput,
    is_nifti_path,
    read_dicom_folder,
    read_input,
    read_nifti,
)
from dicom_node.config import Settings, load_settings
from dicom_node.errors import NotAnalysableError, ResultBuildError, SeriesLoadError
from dicom_node.uids import validate_uid

#: The names importable from this module: its own and those of
#: :mod:`dicom_node.analyze_input` (reading the input), split out of it.
__all__ = [
    "DEFAULT_OUT_DIR",
    "MEDIA_STORAGE_DIRECTORY_STORAGE",
    "NIFTI_SERIES_DESCRIPTION",
    "NON_FINITE_HU",
    "SIDECAR_SUFFIXES",
    "SeriesInput",
    "analyze",
    "format_report",
    "is_nifti_path",
    "read_dicom_folder",
    "read_input",
    "read_nifti",
]

logger = logging.getLogger(__name__)

#: Default folder of the written objects (a subfolder per Series Instance UID).
DEFAULT_OUT_DIR = Path("dicom-node-analyze")


def _finding_row(finding) -> dict[str, Any]:
    row: dict[str, Any] = {
        "label": finding.label,
        "present": bool(finding.present),
        "volume_ml": round(float(finding.volume_ml), 3),
        "laterality": finding.laterality,
        "probability": (
            None if finding.probability is None else round(float(finding.probability), 4)
        ),
    }
    if finding.finding_site:
        row["finding_site"] = finding.finding_site
    return row


def _jsonable(value: Any) -> Any:
    """``value`` with numpy scalars and arrays made plain for JSON."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def analyze(
    path: Path,
    *,
    pipeline: str = "ich",
    out_dir: Path | None = None,
    series_instance_uid: str | None = None,
    overlay: bool = False,
    validate: bool | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Analyse one series from disk and write its SEG, SR (and SC) to a folder.

    Runs what a worker runs for a job, in the same order and with the same
    "not analysable" path: :func:`~dicom_node.series.quality.check_series_headers`,
    :func:`~dicom_node.series.volume.load_ct_volume` (a series that cannot
    form a volume is not analysable, gate ``volume``),
    :func:`~dicom_node.series.quality.check_head_coverage`, the pipeline
    (:class:`~dicom_node.errors.NotAnalysableError` becomes a not-analysable
    result), then :func:`~dicom_node.results.build_results_for_profiles` or
    :func:`~dicom_node.results.build_not_analysable_results` and, when
    validation is on, :func:`~dicom_node.results.validate_result_file` on
    every file written.

    Parameters
    ----------
    path : pathlib.Path
        A DICOM folder or a NIfTI file (see the module docstring).
    pipeline : str
        Pipeline name (:data:`dicom_node.pipelines.PIPELINE_NAMES`).
    out_dir : pathlib.Path or None
        Folder for the objects; ``./dicom-node-analyze/<SeriesInstanceUID>``
        when None. Created if needed.
    series_instance_uid : str or None
        The series to analyse when a folder holds several.
    overlay : bool
        Also build the Secondary Capture overlay series.
    validate : bool or None
        Check every file with dciodvfy; None follows
        ``results.validation`` (``if-available``: when dciodvfy is installed).
    settings : Settings or None
        Quality gates, pixel caps, model folder and AE title (the device
        serial number of the results); :func:`~dicom_node.config.load_settings`
        when None.

    Returns
    -------
    dict
        JSON-serialisable: ``input`` (path, kind, UIDs, instance count,
        ignored files, the NIfTI conversion), ``frame_of_reference`` (UID
        and whether it was derived), ``pipeline``, ``algorithm``, ``status``
        (``"analysed"`` or ``"not_analysable"``), ``not_analysable`` (gate
        and reason, or None), ``findings`` (label, present, volume_ml,
        laterality, probability), ``details`` (what the pipeline returned),
        ``timings_s`` (setup: the pipeline and its model; load: reading,
        gates and the volume; inference; build; write: files and dciodvfy;
        seconds; no inference when not analysable) and ``files``
        (kind, path, SOP Instance UID, dciodvfy error and warning counts).

    Raises
    ------
    SeriesLoadError
        If the input cannot be read (the file and the rule are named).
    dicom_node.errors.ConfigurationError
        If the pipeline name is unknown.
    dicom_node.errors.ModelPackageError
        If the model package is missing or fails its sha256 check.
    dicom_node.errors.PipelineError
        If the pipeline fails for another reason than implausible input.
    dicom_node.errors.ResultBuildError
        If an object cannot be built, dciodvfy is missing, or a written
        object fails dciodvfy (the files stay for inspection).
    dicom_node.errors.InvalidUIDError
        If a UID that names the folder or a file is not valid.

    References
    ----------
    PS3.3 A.51 Segmentation IOD, A.35.13 Comprehensive 3D SR IOD, A.8.1
    Secondary Capture Image IOD; PS3.16 TID 1500.
    """
    from dicom_node.pipelines import get_pipeline
    from dicom_node.results import build_not_analysable_results, build_results_for_profiles
    from dicom_node.results.equipment import EquipmentIdentity
    from dicom_node.results.profiles import ResultProfile
    from dicom_node.results.validate import validate_result_file
    from dicom_node.series.quality import (
        QualityFailure,
        check_head_coverage,
        check_series_headers,
    )
    from dicom_node.series.volume import load_ct_volume, source_images_for

    settings = settings if settings is not None else load_settings()
    if validate is None:
        validate = settings.results.dciodvfy_enabled()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    runner = get_pipeline(pipeline, ich_model_dir=settings.models.ich_model_dir)
    timings["setup"] = time.perf_counter() - started  # the pipeline object (and its checks)
    started = time.perf_counter()
    series = read_input(path, series_instance_uid=series_instance_uid, settings=settings)
    failure = check_series_headers(series.datasets, settings.quality)
    volume = None
    if failure is None:
        try:
            volume = load_ct_volume(series.datasets, pixel_limits=settings.pixels)
        except SeriesLoadError as err:
            failure = QualityFailure("volume", f"the series cannot form a volume: {err}")
    if volume is not None and failure is None:
        failure = check_head_coverage(volume, settings.quality)
    timings["load"] = time.perf_counter() - started

    result = None
    if failure is None:
        assert volume is not None
        started = time.perf_counter()
        try:
            result = runner.run(volume)
        except NotAnalysableError as err:
            failure = QualityFailure(err.gate, err.reason)
        timings["inference"] = time.perf_counter() - started

    equipment = EquipmentIdentity(
        software_versions=__version__, device_serial_number=settings.dicom.ae_title
    )
    profiles = {"analyze": ResultProfile(send_overlay=True)} if overlay else {}
    started = time.perf_counter()
    if failure is not None or result is None:
        assert failure is not None
        labels = getattr(runner, "finding_labels", None) or ("intracranial hemorrhage",)
        objects = build_not_analysable_results(
            series.datasets,
            pipeline=pipeline,
            algorithm=runner.algorithm,
            finding_labels=labels,
            reason=failure.reason,
            equipment=equipment,
            profiles=profiles,
        )
    else:
        assert volume is not None
        objects = build_results_for_profiles(
            source_images_for(volume, series.datasets),
            result,
            equipment=equipment,
            profiles=profiles,
            hu=volume.hu if overlay else None,
            max_key_slices=settings.results.max_key_slices,
        )
    timings["build"] = time.perf_counter() - started

    started = time.perf_counter()
    folder = (
        out_dir
        if out_dir is not None
        else DEFAULT_OUT_DIR / validate_uid(series.series_instance_uid, keyword="SeriesInstanceUID")
    )
    folder.mkdir(parents=True, exist_ok=True)
    files: list[dict[str, Any]] = []
    failed: list[str] = []
    for built in objects:
        uid = validate_uid(built.dataset.SOPInstanceUID, keyword="SOPInstanceUID")
        target = folder / f"{built.kind}-{uid}.dcm"
        built.dataset.save_as(target, enforce_file_format=True)
        entry: dict[str, Any] = {
            "kind": built.kind,
            "path": str(target.resolve()),
            "sop_instance_uid": uid,
        }
        if validate:
            report = validate_result_file(target)
            entry["dciodvfy"] = {"errors": len(report.errors), "warnings": len(report.warnings)}
            if report.errors:
                failed.append(
                    f"{built.kind} {target.name} fails dciodvfy: "
                    + "; ".join(m.redacted() for m in report.errors[:5])
                )
        files.append(entry)
    timings["write"] = time.perf_counter() - started
    if failed:
        raise ResultBuildError(" | ".join(failed))

    algorithm = result.algorithm if result is not None else runner.algorithm
    return {
        "input": {
            "path": str(series.path),
            "kind": series.kind,
            "study_instance_uid": series.study_instance_uid,
            "series_instance_uid": series.series_instance_uid,
            "instances": len(series.datasets),
            "ignored_files": series.ignored_files,
            "other_series": series.other_series,
            "nifti_conversion": series.conversion,
        },
        "frame_of_reference": None
        if volume is None
        else {"uid": volume.frame_of_reference_uid, "derived": volume.frame_of_reference_derived},
        "pipeline": pipeline,
        "algorithm": {"name": algorithm.name, "version": algorithm.version},
        "status": "analysed" if failure is None else "not_analysable",
        "not_analysable": None if failure is None else failure.as_dict(),
        "findings": [] if result is None else [_finding_row(f) for f in result.findings],
        "details": {} if result is None else _jsonable(result.details),
        "timings_s": {name: round(value, 3) for name, value in timings.items()},
        "files": files,
    }


def format_report(report: Mapping[str, Any]) -> str:
    """Return the text ``dicom-node analyze`` prints for a report of :func:`analyze`.

    Details are shown when they are single values (numbers, text, flags);
    lists and tables are only in the JSON output.
    """
    source = report["input"]
    lines = [
        f"input     {source['path']} ({'NIfTI' if source['kind'] == 'nifti' else 'DICOM'}, "
        f"{source['instances']} instance(s))",
        f"series    {source['series_instance_uid']} (study {source['study_instance_uid']})",
    ]
    if source.get("nifti_conversion"):
        lines.append(
            f"          NIfTI conversion: {source['nifti_conversion']['note']}; "
            f"{source['nifti_conversion']['hu']}"
        )
    if source.get("ignored_files"):
        lines.append(f"ignored   {', '.join(source['ignored_files'])}")
    frame = report.get("frame_of_reference")
    if frame is not None:
        lines.append(
            f"frame of reference {frame['uid']}"
            + (
                " (derived from the Series Instance UID: the source has none)"
                if frame["derived"]
                else ""
            )
        )
    algorithm = report["algorithm"]
    lines.append(f"pipeline  {report['pipeline']} ({algorithm['name']} {algorithm['version']})")
    failure = report.get("not_analysable")
    if failure:
        lines.append(f"NOT ANALYSABLE ({failure['gate']}): {failure['reason']}")
    for finding in report["findings"]:
        parts = ["present" if finding["present"] else "absent"]
        if finding.get("laterality"):
            parts.append(str(finding["laterality"]))
        if finding.get("finding_site"):
            parts.append(str(finding["finding_site"]))
        parts.append(f"{finding['volume_ml']:.2f} mL")
        if finding.get("probability") is not None:
            parts.append(f"probability {finding['probability']:.3f}")
        lines.append(f"finding   {finding['label']}: {', '.join(parts)}")
    details = report.get("details") or {}
    simple = {k: v for k, v in details.items() if isinstance(v, str | int | float | bool)}
    for key, value in simple.items():
        lines.append(f"detail    {key}: {value}")
    if len(simple) < len(details):
        lines.append(f"          ({len(details) - len(simple)} more detail(s) in --json)")
    lines.append("timings   " + ", ".join(f"{k} {v:.2f} s" for k, v in report["timings_s"].items()))
    for entry in report["files"]:
        check = entry.get("dciodvfy")
        verdict = (
            ""
            if check is None
            else f"  (dciodvfy: {check['errors']} error(s), {check['warnings']} warning(s))"
        )
        lines.append(f"{entry['kind']:<4}      {entry['path']}{verdict}")
    return "\n".join(lines)
