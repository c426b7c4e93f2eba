"""Inference benchmark: ms per slice and s per series for each pipeline, and a job's stages.

Usage::

    python -m benchmarks.inference [--runs 5] [--series DIR ...]

For each pipeline (:data:`dicom_node.pipelines.PIPELINE_NAMES`) and the series it
is for (``ich``: the 28-slice GE head, the 28 x 5 mm and 140 x 1 mm Philips
phantom series, which the input checks refuse, and the 238 x 0.625 mm CQ500 head
with hemorrhage, JPEG Lossless, read on 5 mm slabs, issue 12 target < 15 s end to
end; ``cta``: a synthetic CT angiogram drawn on the GE head, as there
is no real one in the shared data):

* ``read``: parsing the Part 10 bytes (pixel data included; from memory, so the
  disk cache does not decide);
* ``decode``: :func:`load_ct_volume`, which decodes every frame once and applies
  the rescale to HU;
* ``pipeline``: ``pipeline.run(volume)`` with the pipeline object created once
  and reused (as a worker process does; the first run, which builds it, is not
  counted).

Then one whole job per pipeline and series runs through
:class:`dicom_node.jobs.executor.JobExecutor` (read, decode, pipeline, result objects,
outbox write and dciodvfy validation, from the job's stage marks) with the pixel
decoder instrumented, to show that each frame is decoded exactly once per job.
As a reference for the decode, dcmtk's ``dcmdjpeg`` decompresses each
compressed series (one process per file, as a shell loop would) in the same run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from io import BytesIO
from pathlib import Path

import pydicom

from benchmarks._common import SHARED_DATA, median, print_machine, print_table

DEFAULT_SERIES = (
    SHARED_DATA / "head-ct-ge",
    SHARED_DATA / "head-phantom-philips" / "S2010",
    SHARED_DATA / "head-phantom-philips" / "S2020",
    SHARED_DATA / "head-ct-cq500-ich",
)


def time_dcmdjpeg(series_dirs: list[Path], work: Path) -> list[list[object]]:
    """Seconds dcmtk ``dcmdjpeg`` takes to decompress each JPEG-compressed series (reference)."""
    import shutil
    import subprocess

    from dicom_node.analyze import SIDECAR_SUFFIXES

    tool = shutil.which("dcmdjpeg")
    rows = []
    for d in series_dirs:
        files = sorted(p for p in d.iterdir()
                       if p.is_file() and p.suffix.lower() not in SIDECAR_SUFFIXES)
        syntax = str(pydicom.dcmread(files[0], stop_before_pixels=True).file_meta
                     .TransferSyntaxUID)
        if tool is None or not syntax.startswith("1.2.840.10008.1.2.4."):
            continue
        started = time.perf_counter()
        for n, path in enumerate(files):
            subprocess.run([tool, str(path), str(work / f"{n}.dcm")], check=True)
        seconds = time.perf_counter() - started
        rows.append([f"{d.parent.name}/{d.name}", len(files), f"{seconds:.2f}"])
    return rows


def load_inputs(series_dirs: list[Path]) -> dict[str, list[tuple[str, list[pydicom.Dataset]]]]:
    """The series each pipeline is for: pipeline name -> [(label, datasets)].

    ``ich`` runs on the real head series; ``cta`` on a synthetic CT angiogram
    drawn on the GE head (seed 1, left M1 occlusion), as its tests do, because
    the shared data has no real angiogram.
    """
    from dicom_node.analyze import read_dicom_folder
    from dicom_node.pipelines import PIPELINE_NAMES
    from dicom_node.series.volume import read_datasets

    heads = [
        (f"{d.parent.name}/{d.name}", read_dicom_folder(d).datasets)
        for d in series_dirs
    ]
    inputs: dict[str, list[tuple[str, list[pydicom.Dataset]]]] = {}
    for name in PIPELINE_NAMES:
        if name == "cta":
            from dicom_node.training.synthetic_cta import generate_synthetic_cta

            ge = read_datasets(sorted((SHARED_DATA / "head-ct-ge").glob("*.dcm")))
            cta = generate_synthetic_cta(ge, seed=1, occlusion="M1", side="left")
            inputs[name] = [("synthetic CTA on head-ct-ge", cta.datasets)]
        else:
            inputs[name] = heads
    return inputs


def time_pipelines(inputs: dict, runs: int) -> list[list[object]]:
    """Median read, decode and pipeline times per pipeline and series."""
    from dicom_node.errors import PipelineError
    from dicom_node.pipelines import get_pipeline
    from dicom_node.series.volume import load_ct_volume

    rows = []
    for name, series in inputs.items():
        pipeline = get_pipeline(name)  # once per process, as a worker does
        for label, datasets in series:
            buffers = []
            for ds in datasets:
                buffer = BytesIO()
                ds.save_as(buffer, enforce_file_format=True)
                buffers.append(buffer.getvalue())
            read_s, decode_s = [], []
            for _ in range(runs):
                started = time.perf_counter()
                fresh = [pydicom.dcmread(BytesIO(data)) for data in buffers]
                read_s.append(time.perf_counter() - started)
                started = time.perf_counter()
                volume = load_ct_volume(fresh)
                decode_s.append(time.perf_counter() - started)
            slices = volume.shape[0]
            try:
                pipeline.run(volume)  # warm-up: imports, caches
            except PipelineError as err:
                rows.append([label, slices, name, "-", "-", "-", "-", f"n/a: {err}"[:60]])
                continue
            run_s = []
            for _ in range(runs):
                started = time.perf_counter()
                pipeline.run(volume)
                run_s.append(time.perf_counter() - started)
            total = median(read_s) + median(decode_s) + median(run_s)
            rows.append([
                label,
                f"{slices} x {volume.shape[1]}x{volume.shape[2]}",
                name,
                f"{median(read_s) * 1000 / slices:.1f}",
                f"{median(decode_s) * 1000 / slices:.1f}",
                f"{median(run_s) * 1000 / slices:.1f}",
                f"{median(run_s):.2f}",
                f"{total:.2f}",
            ])
            print(f"  {label}: {name} {median(run_s):.2f} s", flush=True)
    return rows


def time_jobs(inputs: dict, work: Path) -> list[list[object]]:
    """Run one whole job per pipeline and series through JobExecutor; count decodes per frame."""
    from datetime import datetime

    from dicom_node.config import load_settings
    from dicom_node.db.engine import make_engine, make_session_factory
    from dicom_node.db.models import Job, JobState, Series, utcnow
    from dicom_node.jobs.executor import JobExecutor
    from dicom_node.jobs.queue import instance_set_digest
    from dicom_node.receive.header import parse_header
    from dicom_node.receive.ingest import InstanceIngest
    from dicom_node.receive.spool import Spool
    from dicom_node.training.synthetic import with_new_uids

    settings = load_settings(overrides={"storage": {"base_dir": str(work)}, "log_level": "WARNING"})
    engine = make_engine(settings.storage.url)
    factory = make_session_factory(engine)
    ingest = InstanceIngest(Spool(settings.storage.spool_path), factory)
    executor = JobExecutor(settings, factory)

    decodes = {"count": 0}
    original = pydicom.Dataset.convert_pixel_data

    def counting(self, *args, **kwargs):
        decodes["count"] += 1
        return original(self, *args, **kwargs)

    rows = []
    pydicom.Dataset.convert_pixel_data = counting
    try:
        n = 0
        for name, series in inputs.items():
            for label, datasets in series:
                n += 1
                copies = with_new_uids(datasets, seed=1000 + n)  # one series row per job
                for ds in copies:
                    buffer = BytesIO()
                    ds.save_as(buffer, enforce_file_format=True)
                    data = buffer.getvalue()
                    ingest.store(parse_header(data), data, "BENCH")
                uid = str(copies[0].SeriesInstanceUID)
                with factory.begin() as session:
                    row = session.query(Series).filter_by(series_instance_uid=uid).one()
                    digest = instance_set_digest([str(ds.SOPInstanceUID) for ds in copies])
                    job = Job(series_id=row.id, pipeline=name, instance_set_digest=digest,
                              state=JobState.RUNNING, created_at=utcnow(), not_before=utcnow())
                    session.add(job)
                    session.flush()
                    job_id = job.id
                decodes["count"] = 0
                started = time.perf_counter()
                output = executor.execute(job_id)
                total_s = time.perf_counter() - started
                at = {k: datetime.fromisoformat(v) for k, v in output.summary["stages"].items()}
                rows.append([
                    label,
                    name,
                    len(copies),
                    f"{(at['loaded_at'] - at['started_at']).total_seconds():.2f}",
                    f"{(at['inference_done_at'] - at['loaded_at']).total_seconds():.2f}",
                    f"{(at['results_built_at'] - at['inference_done_at']).total_seconds():.2f}",
                    f"{(at['results_written_at'] - at['results_built_at']).total_seconds():.2f}",
                    f"{total_s:.2f}",
                    f"{decodes['count'] / len(copies):.2f}",
                ])
    finally:
        pydicom.Dataset.convert_pixel_data = original
        engine.dispose()
    return rows


def main(argv: list[str] | None = None) -> None:
    """Run the inference benchmark and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--series", type=Path, nargs="+", default=list(DEFAULT_SERIES))
    args = parser.parse_args(argv)
    print_machine("inference: pipelines on CPU, one process")
    with warnings.catch_warnings():
        # highdicom's person-name warnings quote the source's Patient's Name: not printed.
        warnings.simplefilter("ignore")
        inputs = load_inputs(args.series)
        rows = time_pipelines(inputs, args.runs)
    print("\nmedian of", args.runs, "runs; ms per slice and s per series")
    print_table(
        ["series", "slices", "pipeline", "read ms/sl", "decode ms/sl", "pipeline ms/sl",
         "pipeline s", "read+decode+pipeline s"],
        rows,
    )
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        job_rows = time_jobs(inputs, Path(tmp))
    print("\none whole job per series (JobExecutor.execute: what a worker runs), seconds:")
    print_table(
        ["series", "pipeline", "slices", "read+decode", "pipeline", "results build",
         "write+dciodvfy", "total", "decodes/frame"],
        job_rows,
    )
    with tempfile.TemporaryDirectory(prefix="bench-dcmdjpeg-") as tmp:
        reference = time_dcmdjpeg(args.series, Path(tmp))
    if reference:
        print("\nreference: dcmtk dcmdjpeg, one process per file, whole series, seconds:")
        print_table(["series", "files", "dcmdjpeg s"], reference)


if __name__ == "__main__":
    main()
