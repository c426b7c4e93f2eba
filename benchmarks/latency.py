"""Latency benchmark: last instance received -> results delivered in Orthanc, stage by stage.

Usage::

    python -m benchmarks.latency [--runs 5] [--cases iia geometry quiet] [--no-orthanc-stable]

A node (``dicom-node serve``, its defaults, one worker process) sends its
results to a real Orthanc. Each run sends a fresh copy of a 28-slice head
series (new UIDs, so nothing is deduplicated) with dcmtk ``storescu``, then
reads the stage timestamps from the node's database:

last instance received (``instance.received_at``) -> complete
(``series.completed_at``) -> queued (``job.created_at``) -> started
(``job.started_at``) -> inference done and results built (the job's
``result_summary.stages``) -> delivered (``delivery.sent_at``, Orthanc's
C-STORE response, for both SEG and SR).

Cases:

* ``iia``: the real GE head (``../shared/data/head-ct-ge``) with ImagesInAcquisition
  = 28 written into each copy, as many scanners do: complete by count
  ``release_grace_s`` after the association is released.
* ``geometry``: the Philips phantom's 28 x 5 mm brain series (``S2010``): an even
  stack, complete by geometry ``release_grace_s`` after the release.
* ``quiet``: the GE head as it is: 4 mm then 7 mm steps prove nothing, so the
  quiet timer (``stable_after_s``) decides.

For reference the same GE head is sent once to Orthanc itself, and the time
until Orthanc calls the series stable (its ``StableAge``, 60 s by default) is
printed: that is when an Orthanc-based AI router would start.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pydicom
import requests

from benchmarks._common import (
    DCMTK_ENV,
    SHARED_DATA,
    BenchmarkError,
    copy_with_new_uids,
    load_average,
    median,
    print_machine,
    print_table,
    running_node,
    running_orthanc,
    storescu_command,
)

CASES = {
    "iia": (SHARED_DATA / "head-ct-ge", True),
    "geometry": (SHARED_DATA / "head-phantom-philips" / "S2010", False),
    "quiet": (SHARED_DATA / "head-ct-ge", False),
}
STAGES = ("complete", "queued", "started", "inference done", "results built", "delivered")


def _utc(text: str | None) -> datetime | None:
    if text is None:
        return None
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _stage_times(db_path: Path, series_uid: str) -> dict[str, object] | None:
    """Stage timestamps of the job of ``series_uid``, or None until both results are SENT."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        row = db.execute(
            "SELECT s.id, s.completed_at, s.completion_basis FROM series s "
            "WHERE s.series_instance_uid = ?",
            (series_uid,),
        ).fetchone()
        if row is None:
            return None
        series_id, completed_at, basis = row
        job = db.execute(
            "SELECT id, state, created_at, started_at, finished_at, result_summary, error "
            "FROM job WHERE series_id = ? ORDER BY id DESC LIMIT 1",
            (series_id,),
        ).fetchone()
        if job is None:
            return None
        job_id, state, created_at, started_at, finished_at, summary, error = job
        if state == "FAILED":
            raise BenchmarkError(f"job {job_id} failed: {error}")
        sent = db.execute(
            "SELECT d.state, d.sent_at FROM delivery d JOIN result_object r "
            "ON d.result_object_id = r.id WHERE r.job_id = ?",
            (job_id,),
        ).fetchall()
        if len(sent) < 2 or any(state != "SENT" for state, _ in sent):
            return None
        (last_instance,) = db.execute(
            "SELECT max(received_at) FROM instance WHERE series_id = ?", (series_id,)
        ).fetchone()
    stages = json.loads(summary).get("stages", {})
    return {
        "basis": basis,
        "last instance": _utc(last_instance),
        "complete": _utc(completed_at),
        "queued": _utc(created_at),
        "started": _utc(started_at),
        "inference done": _utc(stages.get("inference_done_at")),
        "results built": _utc(stages.get("results_built_at")),
        "delivered": max(_utc(at) for _, at in sent),
    }


def run_case(node, db_path: Path, source: Path, with_iia: bool, seed: str, work: Path) -> dict:
    """Send one fresh copy of ``source`` and wait for its results in Orthanc."""
    files = sorted(p for p in source.iterdir() if p.is_file())

    def add_iia(ds):
        ds.ImagesInAcquisition = len(files)

    copy = copy_with_new_uids(files, work / seed, seed, edit=add_iia if with_iia else None)
    series_uid = str(pydicom.dcmread(copy[0], stop_before_pixels=True).SeriesInstanceUID)
    load = load_average()[0]
    sent = subprocess.run(storescu_command(node, copy), env=DCMTK_ENV, capture_output=True)
    sent_at = datetime.now(UTC)
    if sent.returncode != 0:
        raise BenchmarkError(f"storescu failed: {sent.stderr.decode()[-400:]}")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        stages = _stage_times(db_path, series_uid)
        if stages is not None:
            stages["storescu done"] = sent_at
            stages["load_1min"] = load
            return stages
        time.sleep(0.2)
    raise BenchmarkError(f"no results delivered for {seed} in 180 s")


def orthanc_stable_s(orthanc, work: Path) -> float:
    """Send the GE head to Orthanc and return the seconds until Orthanc calls it stable."""
    files = copy_with_new_uids(
        sorted((SHARED_DATA / "head-ct-ge").iterdir()), work / "orthanc-stable", "orthanc-stable"
    )
    sent = subprocess.run(storescu_command(orthanc, files), env=DCMTK_ENV, capture_output=True)
    if sent.returncode != 0:
        raise BenchmarkError(f"storescu to Orthanc failed: {sent.stderr.decode()[-400:]}")
    started = time.monotonic()
    url = f"http://127.0.0.1:{orthanc.http_port}"
    uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    found = requests.post(f"{url}/tools/lookup", data=uid, timeout=30).json()
    series_id = next(item["ID"] for item in found if item["Type"] == "Series")
    while time.monotonic() - started < 300:
        if requests.get(f"{url}/series/{series_id}", timeout=30).json().get("IsStable"):
            return time.monotonic() - started
        time.sleep(0.5)
    raise BenchmarkError("Orthanc did not call the series stable within 300 s")


def report(results: dict[str, list[dict]], stable_s: float | None) -> None:
    """Print the median stage times, measured from the last instance received."""
    rows = []
    for case, runs in results.items():
        if not runs:
            continue
        cumulative = {
            stage: median([(r[stage] - r["last instance"]).total_seconds() for r in runs])
            for stage in STAGES
        }
        totals = [(r["delivered"] - r["last instance"]).total_seconds() for r in runs]
        previous = 0.0
        cells = []
        for stage in STAGES:
            cells.append(f"{cumulative[stage]:.2f} (+{cumulative[stage] - previous:.2f})")
            previous = cumulative[stage]
        rows.append([case, len(runs), *cells, f"{min(totals):.2f}-{max(totals):.2f}"])
    print("\nmedian seconds after the last instance was received (+ stage duration):")
    print_table(["case", "runs", *STAGES, "delivered range"], rows)
    for case, runs in results.items():
        if runs:
            print(f"  {case}: completion basis: {runs[-1]['basis']}")
    loads = [r["load_1min"] for runs in results.values() for r in runs]
    if loads:
        print(f"1-min load average during the runs: min {min(loads):.2f}, "
              f"median {median(loads):.2f}, max {max(loads):.2f}")
    if stable_s is not None:
        print(f"\nreference: stock Orthanc calls the same series stable {stable_s:.1f} s after "
              "its last instance (StableAge 60 s); an Orthanc-triggered pipeline starts then.")
        for case, runs in results.items():
            if runs:
                total = median([(r["delivered"] - r["last instance"]).total_seconds()
                                for r in runs])
                print(f"  {case}: node delivered / Orthanc stable = {total / stable_s:.2f}")


def main(argv: list[str] | None = None) -> None:
    """Run the latency benchmark and print the stage table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--no-orthanc-stable", action="store_true",
                        help="skip the Orthanc stable-series reference (about 60 s)")
    parser.add_argument("--node-config", default="", help="extra TOML for the node")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    print_machine("latency: last instance -> results delivered to Orthanc")
    results: dict[str, list[dict]] = {case: [] for case in args.cases}
    stable_s = None
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        work = Path(tmp)
        with running_orthanc(work / "orthanc") as orthanc, running_node(
            work / "node", workers=1, destinations=[orthanc], extra=args.node_config
        ) as node:
            db_path = node.storage / "data" / "dicom-node.sqlite"
            # Warm-up: the worker imports its pipeline on the first job; the node ignores the
            # quiet time for one stable_after_s after its start. Not measured.
            run_case(node, db_path, CASES["iia"][0], True, "warm-up", work)
            for run in range(args.runs):
                for case in args.cases:
                    source, with_iia = CASES[case]
                    stages = run_case(node, db_path, source, with_iia, f"{case}-{run}", work)
                    total = (stages["delivered"] - stages["last instance"]).total_seconds()
                    print(f"  run {run + 1}/{args.runs} {case:9s} delivered {total:6.2f} s "
                          "after the last instance", flush=True)
                    results[case].append(stages)
            if not args.no_orthanc_stable:
                stable_s = orthanc_stable_s(orthanc, work)
    report(results, stable_s)
    if args.json:
        args.json.write_text(json.dumps(
            {case: [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items()}
                    for r in runs] for case, runs in results.items()}, indent=2))


if __name__ == "__main__":
    main()
