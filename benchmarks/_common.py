"""Shared parts of the benchmarks: the machine, the peers (dcmtk, Orthanc, the node), UIDs.

Every benchmark measures the node side by side with Orthanc and dcmtk in the
same run, on the same files, on loopback, and prints figures and ratios. The
peers are real: dcmtk ``storescu``/``storescp`` and the Debian ``Orthanc``
package, each started here with private ports and temporary storage.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO_ROOT / ".." / "shared" / "data").resolve()
STORESCU = "/usr/bin/storescu"
STORESCP = "/usr/bin/storescp"
ECHOSCU = "/usr/bin/echoscu"
ORTHANC = "/usr/sbin/Orthanc"

#: dcmtk tools stall 40 ms per PDU on delayed ACKs without this (see dcmtk's docs on TCP_NODELAY).
DCMTK_ENV = dict(os.environ, TCP_NODELAY="1")


class BenchmarkError(RuntimeError):
    """A peer did not start or a transfer failed; the message says which."""


def require(path: str, package: str) -> str:
    """Return ``path`` if executable, else raise naming the Debian package to install."""
    if os.access(path, os.X_OK):
        return path
    raise BenchmarkError(f"{path} not found: install the Debian package {package}")


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages (``uptime``)."""
    return os.getloadavg()


def machine() -> dict[str, object]:
    """Describe the machine: cores, CPU model, RAM, load average, versions."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return {
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": model,
        "ram_gib": round(ram_gib, 1),
        "load_average": tuple(round(v, 2) for v in load_average()),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def print_machine(title: str) -> None:
    """Print the benchmark title and the machine it runs on."""
    info = machine()
    print(f"== {title}")
    print(
        f"machine: {info['nproc']} cores, {info['cpu']}, {info['ram_gib']} GiB RAM, "
        f"Python {info['python']}, {info['date_utc']}"
    )
    print(f"load average at start: {' '.join(str(v) for v in info['load_average'])}")


def median(values: Sequence[float]) -> float:
    """Median of ``values`` (NaN when empty)."""
    return statistics.median(values) if values else float("nan")


def print_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print a plain-text table with right-aligned columns."""
    text = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in text) for i in range(len(header))]
    for n, row in enumerate(text):
        cells = zip(row, widths, strict=True)
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(cells)))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def wait_for_echo(port: int, called: str, timeout_s: float = 60.0) -> None:
    """Wait until a DICOM peer on 127.0.0.1:``port`` answers C-ECHO.

    Raises
    ------
    BenchmarkError
        If it does not answer within ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = subprocess.run(
            [ECHOSCU, "-aec", called, "127.0.0.1", str(port)],
            capture_output=True,
            env=DCMTK_ENV,
            check=False,
        )
        if done.returncode == 0:
            return
        time.sleep(0.2)
    raise BenchmarkError(f"no C-ECHO answer from {called} on port {port} in {timeout_s} s")


@dataclass
class Peer:
    """A running Storage SCP: its name, AE title and port."""

    name: str
    ae_title: str
    port: int
    storage: Path
    http_port: int = 0


@contextmanager
def running_storescp(storage: Path) -> Iterator[Peer]:
    """Run dcmtk ``storescp`` (one process per association) writing into ``storage``."""
    exe = require(STORESCP, "dcmtk")
    storage.mkdir(parents=True, exist_ok=True)
    peer = Peer("storescp", "STORESCP", free_port(), storage)
    process = subprocess.Popen(
        [exe, "--fork", "-aet", peer.ae_title, "-od", str(storage), str(peer.port)],
        env=DCMTK_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_echo(peer.port, peer.ae_title)
        yield peer
    finally:
        process.terminate()
        process.wait(15)


@contextmanager
def running_orthanc(storage: Path) -> Iterator[Peer]:
    """Run the Debian Orthanc with a temporary configuration and storage.

    Orthanc's defaults are kept except for the ports, the storage folders,
    no plugins and no storage compression, so the timing is that of a stock
    Orthanc as a PACS administrator installs it.
    """
    exe = require(ORTHANC, "orthanc")
    storage.mkdir(parents=True, exist_ok=True)
    peer = Peer("orthanc", "ORTHANC", free_port(), storage, http_port=free_port())
    config = {
        "Name": "benchmark-pacs",
        "StorageDirectory": str(storage / "db"),
        "IndexDirectory": str(storage / "db"),
        "DicomAet": peer.ae_title,
        "DicomPort": peer.port,
        "HttpPort": peer.http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "Plugins": [],
        "StorageCompression": False,
    }
    (storage / "orthanc.json").write_text(json.dumps(config))
    with open(storage / "orthanc.log", "w") as log:
        process = subprocess.Popen(
            [exe, str(storage / "orthanc.json")],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=DCMTK_ENV,  # Orthanc's DICOM server is dcmtk's: same delayed-ACK stalls
        )
        try:
            wait_for_echo(peer.port, peer.ae_title)
            yield peer
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


@contextmanager
def running_noop_scp(storage: Path) -> Iterator[Peer]:
    """Run :mod:`benchmarks._noop_scp`: pynetdicom answering 0x0000 without storing anything."""
    storage.mkdir(parents=True, exist_ok=True)
    peer = Peer("pynetdicom-noop", "NOOP", free_port(), storage)
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._noop_scp", str(peer.port)],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_echo(peer.port, peer.ae_title)
        yield peer
    finally:
        process.kill()
        process.wait(15)


def node_config(
    base_dir: Path,
    port: int,
    *,
    workers: int = 0,
    destinations: Sequence[Peer] = (),
    extra: str = "",
    receiver_processes: int = 0,
) -> str:
    """TOML configuration of a node for a benchmark (log level WARNING, no dashboard).

    ``extra`` is appended after the ``[workers]`` table: start it with a table
    header (``[series]``) to set other sections.
    """
    text = f"""
log_level = "WARNING"
[dicom]
ae_title = "DICOM_NODE"
port = {port}
receiver_processes = {receiver_processes}
[web]
enabled = false
[storage]
base_dir = "{base_dir}"
[workers]
processes = {workers}
{extra}
"""
    for peer in destinations:
        text += f"""
[[export.destinations]]
name = "{peer.name}"
ae_title = "{peer.ae_title}"
host = "127.0.0.1"
port = {peer.port}
"""
    return text


@contextmanager
def running_node(
    base_dir: Path,
    *,
    workers: int = 0,
    destinations: Sequence[Peer] = (),
    extra: str = "",
    receiver_processes: int = 0,
    name: str = "node",
) -> Iterator[Peer]:
    """Run ``dicom-node serve`` as its own process, as an administrator would."""
    base_dir.mkdir(parents=True, exist_ok=True)
    peer = Peer(name, "DICOM_NODE", free_port(), base_dir)
    config = base_dir / "node.toml"
    config.write_text(
        node_config(
            base_dir / "data",
            peer.port,
            workers=workers,
            destinations=destinations,
            extra=extra,
            receiver_processes=receiver_processes,
        )
    )
    with open(base_dir / "node.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", "from dicom_node.cli import app; app()", "serve", "--config",
             str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
        try:
            try:
                wait_for_echo(peer.port, peer.ae_title)
            except BenchmarkError as err:
                log.flush()
                tail = (base_dir / "node.log").read_text(errors="replace")[-2000:]
                raise BenchmarkError(f"{err}; node log:\n{tail}") from err
            yield peer
        finally:
            process.terminate()
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()


def storescu_command(peer: Peer, files: Sequence[Path], calling: str = "STORESCU") -> list[str]:
    """The dcmtk ``storescu`` command line that sends ``files`` to ``peer`` in one association."""
    return [
        require(STORESCU, "dcmtk"),
        "-aet",
        calling,
        "-aec",
        peer.ae_title,
        "127.0.0.1",
        str(peer.port),
        *map(str, files),
    ]


def send_parallel(peer: Peer, batches: Sequence[Sequence[Path]]) -> float:
    """Send each batch with its own ``storescu`` process, all at once; return the wall time (s).

    Raises
    ------
    BenchmarkError
        If any sender fails.
    """
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            storescu_command(peer, batch, calling=f"SENDER{i}"),
            env=DCMTK_ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for i, batch in enumerate(batches)
    ]
    errors = []
    for process in processes:
        _, err = process.communicate(timeout=600)
        if process.returncode != 0:
            errors.append(err.decode(errors="replace")[-500:])
    elapsed_s = time.perf_counter() - started
    if errors:
        raise BenchmarkError(f"storescu to {peer.name} failed: {errors[0]}")
    return elapsed_s


def copy_with_new_uids(
    files: Sequence[Path],
    out_dir: Path,
    seed: str,
    *,
    edit=None,
) -> list[Path]:
    """Write a copy of a series with new Study, Series, SOP Instance and Frame of Reference UIDs.

    Parameters
    ----------
    files : sequence of pathlib.Path
        The source series (Part 10 files).
    out_dir : pathlib.Path
        Folder for the copy (created).
    seed : str
        The new UIDs derive from the old ones and ``seed``: one seed, one copy.
    edit : callable or None
        ``edit(dataset)`` applied to each dataset before it is written.

    Returns
    -------
    list of pathlib.Path
        The written files, in the order of ``files``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in files:
        ds = pydicom.dcmread(path)
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                        "FrameOfReferenceUID"):
            if keyword in ds:
                setattr(ds, keyword, generate_uid(entropy_srcs=[str(ds[keyword].value), seed]))
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if edit is not None:
            edit(ds)
        target = out_dir / path.name
        ds.save_as(target, enforce_file_format=True)
        written.append(target)
    return written


def dir_bytes(files: Sequence[Path]) -> int:
    """Total size of ``files`` in bytes."""
    return sum(p.stat().st_size for p in files)


def fresh_dir(path: Path) -> Path:
    """Remove ``path`` if it exists and create it empty."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
