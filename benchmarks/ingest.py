"""Ingest benchmark: dcmtk storescu -> dcmtk storescp, Orthanc and the node, side by side.

Usage::

    python -m benchmarks.ingest [--runs 3] [--senders 1 4] [--series DIR] [--json FILE]

The 140-slice phantom (``../shared/data/head-phantom-philips/S2020``, 75 MB)
is sent on loopback by dcmtk ``storescu`` (``TCP_NODELAY=1``) with 1 and with
4 concurrent senders. With 4 senders each sender sends its own copy of the
series with new UIDs, so every peer stores 4 x 140 distinct instances (the
node answers a re-sent SOP instance without storing it again, so sending the
same files four times would flatter it). Every repetition starts each peer
fresh, with empty storage, and the order of the peers rotates between
repetitions so that background load hits each of them alike. The time is the
wall time from starting the senders to the last one exiting, i.e. until the
last C-STORE response: the node answers only after the instance is fsynced
(and Orthanc with its default ``SyncStorageArea``); ``storescp`` does not
fsync. Each peer's stored instance count is checked after the run. dcmtk
tools, Orthanc's DICOM server included, run with ``TCP_NODELAY=1``.

Peers: ``storescp`` (dcmtk, ``--fork``: one process per association),
``orthanc`` (Debian package, stock settings), ``node`` (``dicom-node serve`` with
its defaults: the Storage SCP in the node's process) and ``node-2p`` (the same
with ``dicom.receiver_processes = 2``: two receiver processes share the port),
and ``pynetdicom-noop``, a pynetdicom SCP whose handler stores nothing: the
floor of any receiver built on pynetdicom.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path

import requests

from benchmarks._common import (
    SHARED_DATA,
    BenchmarkError,
    copy_with_new_uids,
    dir_bytes,
    fresh_dir,
    load_average,
    median,
    print_machine,
    print_table,
    running_node,
    running_noop_scp,
    running_orthanc,
    running_storescp,
    send_parallel,
)

PEERS = ("storescp", "orthanc", "node", "node-2p", "pynetdicom-noop")


def _start(name: str, storage: Path):
    if name == "storescp":
        return running_storescp(storage)
    if name == "pynetdicom-noop":
        return running_noop_scp(storage)
    if name == "orthanc":
        return running_orthanc(storage)
    if name == "node-2p":  # dicom.receiver_processes = 2: one per core of the benchmark machine
        return running_node(storage, receiver_processes=2, name=name)
    return running_node(storage)


def _stored_count(name: str, peer, expected: int) -> int:
    if name == "pynetdicom-noop":
        return expected  # stores nothing by design
    if name == "storescp":
        return sum(1 for p in peer.storage.rglob("*") if p.is_file())
    if name == "orthanc":
        stats = requests.get(f"http://127.0.0.1:{peer.http_port}/statistics", timeout=30).json()
        return int(stats["CountInstances"])
    with sqlite3.connect(peer.storage / "data" / "dicom-node.sqlite") as db:
        return int(db.execute("SELECT count(*) FROM instance").fetchone()[0])


def measure(
    series_dir: Path, senders: int, runs: int, work: Path, peers: tuple[str, ...] = PEERS
) -> dict[str, object]:
    """Send ``senders`` copies of a series concurrently to each peer, ``runs`` times.

    Returns
    -------
    dict
        ``{"senders", "instances", "bytes", "times_s": {peer: [s, ...]}, "load": [...]}``.
    """
    source = sorted(p for p in series_dir.iterdir() if p.is_file())
    batches = [
        copy_with_new_uids(source, work / f"copy{k}", seed=f"ingest-{k}") for k in range(senders)
    ]
    total_bytes = sum(dir_bytes(b) for b in batches)
    expected = sum(len(b) for b in batches)
    times: dict[str, list[float]] = {name: [] for name in peers}
    loads = []
    for run in range(runs):
        order = peers[run % len(peers):] + peers[: run % len(peers)]
        for name in order:
            storage = fresh_dir(work / f"{name}-{senders}-{run}")
            with _start(name, storage) as peer:
                time.sleep(0.5)  # let the peer settle after start-up
                loads.append(load_average()[0])
                elapsed_s = send_parallel(peer, batches)
                stored = _stored_count(name, peer, expected)
            if stored != expected:
                raise BenchmarkError(f"{name} stored {stored} of {expected} instances")
            times[name].append(elapsed_s)
            print(f"  run {run + 1}/{runs} {senders} sender(s) {name:8s} {elapsed_s:6.2f} s",
                  flush=True)
    return {
        "senders": senders,
        "instances": expected,
        "bytes": total_bytes,
        "times_s": times,
        "load_1min": loads,
    }


def report(results: list[dict[str, object]]) -> None:
    """Print the median times, MB/s and the node's ratios."""
    rows = []
    for result in results:
        times = result["times_s"]
        mb = result["bytes"] / 1e6
        med = {name: median(values) for name, values in times.items()}
        for name, seconds in med.items():
            ratio_orthanc = seconds / med["orthanc"] if "orthanc" in med else float("nan")
            ratio_scp = seconds / med["storescp"] if "storescp" in med else float("nan")
            rows.append([
                f"{result['senders']} x {result['instances'] // result['senders']}",
                name,
                f"{seconds:.2f}",
                " ".join(f"{t:.2f}" for t in times[name]),
                f"{mb / seconds:.1f}",
                f"{result['instances'] / seconds:.0f}",
                f"{ratio_orthanc:.2f}",
                f"{ratio_scp:.2f}",
            ])
    print()
    print_table(
        ["senders x slices", "peer", "median s", "runs s", "MB/s", "inst/s", "/orthanc",
         "/storescp"],
        rows,
    )
    loads = [v for r in results for v in r["load_1min"]]
    print(f"\n1-min load average during the runs: min {min(loads):.2f}, "
          f"median {median(loads):.2f}, max {max(loads):.2f}")
    print("ratios are time ratios (peer time / reference time): <= 1.0 means as fast or faster")


def main(argv: list[str] | None = None) -> None:
    """Run the ingest benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--senders", type=int, nargs="+", default=[1, 4])
    parser.add_argument(
        "--series", type=Path, default=SHARED_DATA / "head-phantom-philips" / "S2020"
    )
    parser.add_argument("--peers", nargs="+", default=list(PEERS), choices=PEERS)
    parser.add_argument("--json", type=Path, default=None, help="also write the raw figures")
    args = parser.parse_args(argv)
    print_machine("ingest: storescu -> storescp | Orthanc | dicom-node (loopback)")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        for senders in args.senders:
            results.append(measure(args.series, senders, args.runs, Path(tmp), tuple(args.peers)))
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
