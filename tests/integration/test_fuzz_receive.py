"""Hostile input on the receive path: mutated datasets and malformed PDUs.

* 10 000 mutated datasets from ../shared/data (hypothesis, derandomized) through
  the Storage SCP's C-STORE handler in-process (the same ``handle_store`` that
  pynetdicom calls), then 400 more over real loopback associations;
* raw sockets with malformed PDUs: unknown types, bad and oversized length
  fields, truncated PDUs, PDUs out of sequence, an endless command, a dataset
  over ``dicom.max_dataset_bytes``, and 300 random PDUs (hypothesis).

Every input is answered with a failure status (or 0x0000 for what is a valid
instance after all) or an A-ABORT / closed connection; the node keeps serving
(a good instance is stored afterwards), the process's resident memory stays
bounded, and the spool and database agree. The counts are printed.
"""

from __future__ import annotations

import logging
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContextTuple
from sqlalchemy import func, select

from dicom_node.config import load_settings
from dicom_node.db.engine import make_engine, make_session_factory
from dicom_node.db.models import AuditEvent, Instance
from dicom_node.receive.header import parse_header
from dicom_node.receive.ingest import InstanceIngest
from dicom_node.receive.pynetdicom_compat import paused_reactor
from dicom_node.receive.scp import TRANSFER_SYNTAXES, StorageSCP, status_code
from dicom_node.receive.spool import Spool
from dicom_node.training.synthetic import with_new_uids
from tests.conftest import run_storescu
from tests.dimse import encode_explicit_le
from tests.fuzzing import (
    CT_IMAGE_STORAGE,
    EXPLICIT_LE,
    SECONDARY_CAPTURE,
    Mutant,
    load_seeds,
    mutants,
    mutate,
    vm_rss_bytes,
)

pytestmark = pytest.mark.integration

IN_PROCESS_EXAMPLES = 10_000
PLAIN_EXAMPLES = 2_000
WIRE_EXAMPLES = 400
RANDOM_PDUS = 300
#: Statuses a C-STORE may get (PS3.4 B.2.3): success (a valid instance after all),
#: out of resources, dataset does not match SOP class, cannot understand.
ALLOWED_STATUSES = {0x0000, 0xA700, 0xA900, 0xC210}
DATASET_LIMIT_BYTES = 2 * 1024**2
RSS_GROWTH_LIMIT_BYTES = 200 * 1024**2


class FakeRequestor:
    ae_title = "FUZZER"
    address = "127.0.0.1"
    port = 1


class FakeAssociation:
    """What ``handle_store`` reads from ``event.assoc`` (hashable, like pynetdicom's)."""

    requestor = FakeRequestor()


class Node:
    """A Storage SCP with its spool and database (no workers, no scheduler)."""

    def __init__(self, base_dir: Path, **dicom) -> None:
        self.settings = load_settings(
            overrides={
                "storage": {"base_dir": str(base_dir)},
                "dicom": {
                    "port": 0,
                    "network_timeout_s": 5.0,
                    "max_dataset_bytes": DATASET_LIMIT_BYTES,
                    **dicom,
                },
            }
        )
        self.engine = make_engine(self.settings.storage.url)
        self.factory = make_session_factory(self.engine)
        self.spool = Spool(self.settings.storage.spool_path)
        self.scp = StorageSCP(self.settings.dicom, InstanceIngest(self.spool, self.factory))

    def count(self) -> int:
        with self.factory() as session:
            return int(session.scalar(select(func.count(Instance.id))))

    def check_spool_and_database_agree(self) -> int:
        """Every row has its file, which parses to the row's SOP Instance UID; no stray file."""
        with self.factory() as session:
            rows = {i.path: i.sop_instance_uid for i in session.scalars(select(Instance))}
        files = {
            str(p.relative_to(self.spool.root))
            for p in self.spool.root.rglob("*.dcm")
            if ".incoming" not in p.parts
        }
        assert files == set(rows), "spool files and instance rows differ"
        for path, uid in rows.items():
            assert parse_header(self.spool.absolute(path).read_bytes()).sop_instance_uid == uid
        assert not any(self.spool.incoming.iterdir()), "temporary files left behind"
        return len(rows)

    def close(self) -> None:
        self.scp.stop()
        self.engine.dispose()


class FormatAndDrop(logging.Handler):
    """Formats every record (as a stream handler would) and keeps none."""

    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)


@contextmanager
def logs_formatted_not_kept() -> Iterator[None]:
    """Route the libraries' and the node's logs past pytest's capture, which keeps every
    record (and the arguments it holds) and would make the memory figures meaningless."""
    handler = FormatAndDrop()
    loggers = [logging.getLogger(name) for name in ("dicom_node", "pynetdicom", "pydicom")]
    saved = [(lg.propagate, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.propagate = False
    try:
        yield
    finally:
        for lg, (propagate, level) in zip(loggers, saved, strict=True):
            lg.removeHandler(handler)
            lg.propagate, lg.level = propagate, level


@pytest.fixture
def node(tmp_path):
    instance = Node(tmp_path / "node")
    yield instance
    instance.close()


@pytest.fixture(scope="module")
def seeds(shared_data):
    return load_seeds(shared_data)


def store_event(mutant: Mutant, assoc: FakeAssociation) -> Event:
    """The EVT_C_STORE event pynetdicom would build for this request."""
    request = C_STORE()
    request.MessageID = 1
    request.AffectedSOPClassUID = mutant.sop_class_uid
    request.AffectedSOPInstanceUID = mutant.sop_instance_uid
    request.Priority = 2
    request.DataSet = BytesIO(mutant.dataset)
    context = PresentationContextTuple(1, mutant.sop_class_uid, mutant.transfer_syntax_uid)
    return Event(assoc, evt.EVT_C_STORE, {"request": request, "context": context})


def fresh_good_instance(shared_data: Path, seed: int) -> pydicom.Dataset:
    return with_new_uids([pydicom.dcmread(shared_data / "head-ct-ge" / "05.dcm")], seed=seed)[0]


@pytest.mark.slow
def test_store_handler_survives_10000_mutated_datasets(node, seeds, shared_data):
    assoc = FakeAssociation()
    statuses: Counter[int] = Counter()
    by_seed: Counter[str] = Counter()
    run_count = [0]
    rss_samples: list[int] = []

    @settings(
        max_examples=IN_PROCESS_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(mutants(seeds))
    def fuzz(mutant: Mutant) -> None:
        status = status_code(node.scp.handle_store(store_event(mutant, assoc)))  # no raise
        assert status in ALLOWED_STATUSES, (hex(status), mutant.seed, mutant.operations)
        statuses[status] += 1
        by_seed[mutant.seed] += 1
        run_count[0] += 1
        if run_count[0] % 2500 == 0:
            rss_samples.append(vm_rss_bytes() // 2**20)

    # Warm up (imports, caches, SQLite pages) before the memory baseline.
    for seed in seeds:
        node.scp.handle_store(
            store_event(
                Mutant(
                    seed.name,
                    (),
                    seed.sop_class_uid,
                    seed.sop_instance_uid,
                    seed.transfer_syntax_uid,
                    seed.dataset,
                ),
                assoc,
            )
        )
    with logs_formatted_not_kept():
        rss_before = vm_rss_bytes()
        started = time.monotonic()
        fuzz()
        elapsed_s = time.monotonic() - started
        rss_after = vm_rss_bytes()
        # Hypothesis keeps a record of what it generated; without it, the node's own
        # memory over more mutated datasets must be flat.
        plain_before = vm_rss_bytes()
        for number in range(PLAIN_EXAMPLES):
            rng = random.Random(number)
            mutant = mutate(seeds[rng.randrange(len(seeds))], rng, rng.randint(1, 4))
            assert status_code(node.scp.handle_store(store_event(mutant, assoc))) in (
                ALLOWED_STATUSES
            )
        plain_after = vm_rss_bytes()

    good = fresh_good_instance(shared_data, seed=7001)
    event = store_event(
        Mutant(
            "good",
            (),
            CT_IMAGE_STORAGE,
            str(good.SOPInstanceUID),
            EXPLICIT_LE,
            encode_explicit_le(good),
        ),
        assoc,
    )
    assert status_code(node.scp.handle_store(event)) == 0x0000
    rows = node.check_spool_and_database_agree()
    print(
        f"\nin-process fuzz: {run_count[0]} mutated datasets in {elapsed_s:.1f} s; statuses "
        + ", ".join(f"0x{s:04X}: {n}" for s, n in sorted(statuses.items()))
        + f"; instances stored: {rows}; RSS {rss_before / 2**20:.0f} -> "
        f"{rss_after / 2**20:.0f} MiB (every 2500: {rss_samples} MiB); seeds {dict(by_seed)}; "
        f"{PLAIN_EXAMPLES} more without hypothesis: RSS {plain_before / 2**20:.0f} -> "
        f"{plain_after / 2**20:.0f} MiB"
    )
    assert run_count[0] >= IN_PROCESS_EXAMPLES
    assert statuses[0xC210] > 0 and statuses[0x0000] > 0  # both paths were exercised
    assert rss_after - rss_before < RSS_GROWTH_LIMIT_BYTES
    assert plain_after - plain_before < 16 * 1024**2


def send_c_store(assoc, mutant: Mutant) -> int | str:
    """Send a mutated dataset as a C-STORE; return the status, or "aborted"."""
    contexts = [
        cx
        for cx in assoc.accepted_contexts
        if cx.abstract_syntax == mutant.sop_class_uid
        and cx.transfer_syntax[0] == mutant.transfer_syntax_uid
    ]
    if not contexts:
        contexts = [
            cx for cx in assoc.accepted_contexts if cx.abstract_syntax == mutant.sop_class_uid
        ]
    request = C_STORE()
    request.MessageID = 1
    request.AffectedSOPClassUID = mutant.sop_class_uid
    request.AffectedSOPInstanceUID = mutant.sop_instance_uid
    request.Priority = 2
    request.DataSet = BytesIO(mutant.dataset)
    response = None
    with paused_reactor(assoc):
        assoc.dimse.send_msg(request, contexts[0].context_id)
        deadline = time.monotonic() + 10
        while response is None and time.monotonic() < deadline:
            _, response = assoc.dimse.get_msg(block=False)
            if response is None:
                # The association thread is paused: the upper layer's state tells an abort.
                if assoc.dul.state_machine.current_state in ("Sta1", "Sta13"):
                    break
                time.sleep(0.002)
    if response is None:
        return "aborted"
    return int(response.Status)


def associate(port: int, ae_title: str = "FUZZER"):
    ae = AE(ae_title=ae_title)
    ae.dimse_timeout = ae.acse_timeout = ae.network_timeout = 10
    for sop_class in (CT_IMAGE_STORAGE, SECONDARY_CAPTURE):
        for syntax in TRANSFER_SYNTAXES[:2] + ("1.2.840.10008.1.2.4.70",):
            ae.add_requested_context(sop_class, syntax)
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOM_NODE")
    assert assoc.is_established
    return assoc


def test_mutated_datasets_over_real_associations(node, seeds, shared_data, storescu):
    node.scp.start()
    outcomes: Counter[str] = Counter()
    aborted_by: list[tuple[str, ...]] = []
    holder = {"assoc": associate(node.scp.port)}

    @settings(
        max_examples=WIRE_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(mutants([s for s in seeds if s.sop_class_uid in (CT_IMAGE_STORAGE, SECONDARY_CAPTURE)]))
    def fuzz(mutant: Mutant) -> None:
        assoc = holder["assoc"]
        if not assoc.is_established or assoc.dul.state_machine.current_state != "Sta6":
            if assoc.is_established:
                assoc.abort()
            holder["assoc"] = assoc = associate(node.scp.port)
        try:
            result = send_c_store(assoc, mutant)
        except Exception as err:  # noqa: BLE001 - our side refused to encode the request
            outcomes[f"not sent ({err.__class__.__name__})"] += 1
            return
        if result == "aborted":
            aborted_by.append(mutant.operations)
        assert result == "aborted" or result in ALLOWED_STATUSES, hex(result)
        outcomes[result if isinstance(result, str) else f"0x{result:04X}"] += 1

    with logs_formatted_not_kept():
        rss_before = vm_rss_bytes()
        started = time.monotonic()
        fuzz()
        elapsed_s = time.monotonic() - started
    if holder["assoc"].is_established:
        holder["assoc"].release()
    good = fresh_good_instance(shared_data, seed=7002)
    path = node.spool.root.parent / "good.dcm"
    good.save_as(path, enforce_file_format=True)
    before = node.count()
    assert run_storescu(storescu, node.scp.port, [path]).returncode == 0
    assert node.count() == before + 1
    rows = node.check_spool_and_database_agree()
    rss_after = vm_rss_bytes()
    print(
        f"\nwire fuzz: {sum(outcomes.values())} mutated C-STOREs in {elapsed_s:.1f} s: "
        f"{dict(sorted(outcomes.items()))}; instances stored: {rows}; "
        f"RSS {rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB; aborted after: "
        f"{Counter(op for ops in aborted_by for op in ops).most_common(4)}"
    )
    assert sum(outcomes.values()) >= WIRE_EXAMPLES
    assert rss_after - rss_before < RSS_GROWTH_LIMIT_BYTES


# ------------------------------------------------------------------------- raw PDUs
def pdu(pdu_type: int, body: bytes, length: int | None = None) -> bytes:
    """A PDU: type, reserved, 32-bit big-endian length, body (PS3.8 9.3.1)."""
    return struct.pack(">BBL", pdu_type, 0, len(body) if length is None else length) + body


def exchange(
    port: int, data: bytes, *, timeout_s: float = 15.0, stream_after: int = 0
) -> tuple[str, int]:
    """Send ``data`` (then optionally ``stream_after`` junk bytes), half-close, read the answer.

    Returns the answer's kind ("A-ABORT", "A-ASSOCIATE-RJ", "A-ASSOCIATE-AC",
    "closed") and how many junk bytes could be sent before the node shut the
    connection.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    sent_junk = 0
    try:
        sock.sendall(data)
        chunk = bytes(65536)
        try:
            while sent_junk < stream_after:
                sock.sendall(chunk)
                sent_junk += len(chunk)
        except OSError:
            pass
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        answer = bytearray()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                part = sock.recv(65536)
            except ConnectionResetError:
                break
            except TimeoutError as err:
                raise AssertionError("the node neither answered nor closed") from err
            if not part:
                break
            answer += part
        else:
            raise AssertionError("the node neither answered nor closed")
    finally:
        sock.close()
    kinds = {0x07: "A-ABORT", 0x03: "A-ASSOCIATE-RJ", 0x02: "A-ASSOCIATE-AC"}
    kind = kinds.get(answer[0], f"PDU 0x{answer[0]:02X}") if answer else "closed"
    if answer and answer[0] == 0x02 and b"\x07\x00" in answer[6:]:
        kind = "A-ASSOCIATE-AC then A-ABORT"
    return kind, sent_junk


@pytest.fixture(scope="module")
def association_request() -> bytes:
    """The A-ASSOCIATE-RQ PDU pynetdicom sends (captured by a socket that never answers)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    captured = bytearray()

    def capture() -> None:
        connection, _ = listener.accept()
        connection.settimeout(5)
        header = connection.recv(6, socket.MSG_WAITALL)
        length = struct.unpack(">L", header[2:6])[0]
        captured.extend(header + connection.recv(length, socket.MSG_WAITALL))
        connection.close()

    thread = threading.Thread(target=capture)
    thread.start()
    ae = AE(ae_title="FUZZER")
    ae.acse_timeout = ae.network_timeout = 2
    ae.add_requested_context(CT_IMAGE_STORAGE, EXPLICIT_LE)
    ae.associate("127.0.0.1", listener.getsockname()[1], ae_title="DICOM_NODE")
    thread.join(10)
    listener.close()
    assert captured[:1] == b"\x01"
    return bytes(captured)


def test_malformed_pdus_are_aborted_and_the_node_stays_up(
    node, association_request, shared_data, storescu
):
    node.scp.start()
    port = node.scp.port
    rq = association_request
    body = rq[6:]
    cases = {
        "unknown PDU type 0x00": pdu(0x00, b"\x00" * 8),
        "unknown PDU type 0x08": pdu(0x08, b"\x00" * 8),
        "unknown PDU type 0xFF": pdu(0xFF, b"junk"),
        "A-ASSOCIATE-RQ with zero length": pdu(0x01, b""),
        "A-ASSOCIATE-RQ with a garbage body": pdu(0x01, b"\xde\xad\xbe\xef" * 16),
        "A-ASSOCIATE-RQ length 0xFFFFFFFF": pdu(0x01, body, length=0xFFFFFFFF),
        "A-ASSOCIATE-RQ length over the cap": pdu(0x01, body, length=64 * 1024**2),
        "A-ASSOCIATE-RQ truncated (length > data)": pdu(0x01, body[:40], length=len(body)),
        "A-ASSOCIATE-RQ length shorter than its items": pdu(0x01, body, length=20)[:26],
        "A-ASSOCIATE-RQ with a corrupted item length": pdu(
            0x01, body[:68] + b"\xff\xff" + body[70:]
        ),
        "A-ASSOCIATE-RQ with protocol version 0": pdu(0x01, b"\x00\x00" + body[2:]),
        "half a PDU header": rq[:3],
        "P-DATA-TF before an association": pdu(0x04, b"\x00\x00\x00\x04\x01\x03\x00\x00"),
        "A-RELEASE-RQ before an association": pdu(0x05, b"\x00" * 4),
        "A-ASSOCIATE-AC sent to the acceptor": pdu(0x02, body),
        "A-ABORT as the first PDU": pdu(0x07, b"\x00\x00\x00\x00"),
        "two A-ASSOCIATE-RQ in a row": rq + rq,
        "A-ASSOCIATE-RQ then P-DATA length 0xFFFFFFF0": rq + pdu(0x04, b"", length=0xFFFFFFF0),
        "A-ASSOCIATE-RQ then a P-DATA item longer than its PDU": rq
        + pdu(0x04, b"\x00\x10\x00\x00\x01\x03" + b"\x00" * 8),
        "A-ASSOCIATE-RQ then an endless command (never last)": rq
        + b"".join(pdu(0x04, struct.pack(">LBB", 16002, 1, 0x01) + bytes(16000)) for _ in range(6)),
        "A-ASSOCIATE-RQ then a dataset over max_dataset_bytes": rq
        + b"".join(
            pdu(0x04, struct.pack(">LBB", 200002, 1, 0x00) + bytes(200000))
            for _ in range(DATASET_LIMIT_BYTES // 200000 + 2)
        ),
    }
    outcomes: dict[str, str] = {}
    with logs_formatted_not_kept():
        rss_before = vm_rss_bytes()
        started = time.monotonic()
        for name, data in cases.items():
            streams = 32 * 1024**2 if "0xFFFFFFFF" in name or "over the cap" in name else 0
            kind, sent = exchange(port, data, stream_after=streams)
            for _retry in range(2):
                # A reset can overtake the A-ABORT on loopback when the socket closes while
                # the peer's bytes are in flight (the node lingers after an abort to make
                # that rare: transport.linger_after_abort); the node's answer is judged on
                # the best of three tries, every try must still end the connection.
                if kind != "closed":
                    break
                kind, sent = exchange(port, data, stream_after=streams)
            outcomes[name] = kind + (f" after {sent / 2**20:.1f} MiB streamed" if streams else "")
            assert kind in ("A-ABORT", "closed", "A-ASSOCIATE-RJ", "A-ASSOCIATE-AC then A-ABORT"), (
                name,
                kind,
            )
        # The node's own limits answer with an A-ABORT (pynetdicom would buffer instead).
        for name in ("A-ASSOCIATE-RQ length 0xFFFFFFFF", "A-ASSOCIATE-RQ length over the cap"):
            assert outcomes[name].startswith("A-ABORT"), outcomes[name]
        for name in (
            "A-ASSOCIATE-RQ then P-DATA length 0xFFFFFFF0",
            "A-ASSOCIATE-RQ then an endless command (never last)",
            "A-ASSOCIATE-RQ then a dataset over max_dataset_bytes",
        ):
            # The guard may abort before the association thread has sent its A-ASSOCIATE-AC.
            assert outcomes[name] in ("A-ABORT", "A-ASSOCIATE-AC then A-ABORT"), (
                name,
                outcomes[name],
            )

        random_kinds: Counter[str] = Counter()

        @settings(
            max_examples=RANDOM_PDUS,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(
            st.integers(0, 255),
            st.binary(max_size=512),
            st.one_of(st.none(), st.integers(0, 2**32 - 1)),
            st.booleans(),
        )
        def random_pdu(pdu_type: int, payload: bytes, length: int | None, after_rq: bool) -> None:
            data = (rq if after_rq else b"") + pdu(pdu_type, payload, length)
            kind, _ = exchange(port, data)
            random_kinds[kind] += 1

        random_pdu()
        elapsed_s = time.monotonic() - started
        rss_after = vm_rss_bytes()
    # Still serving: a good instance is stored.
    good = fresh_good_instance(shared_data, seed=7003)
    path = node.spool.root.parent / "good.dcm"
    good.save_as(path, enforce_file_format=True)
    assert run_storescu(storescu, port, [path]).returncode == 0
    assert node.count() == 1
    with node.factory() as session:
        aborted = session.scalar(
            select(func.count(AuditEvent.id)).where(AuditEvent.reason.like("node aborted:%"))
        )
    width = max(map(len, outcomes))
    print("\nmalformed PDUs:\n" + "\n".join(f"  {k:<{width}}  {v}" for k, v in outcomes.items()))
    print(
        f"random PDUs ({RANDOM_PDUS}): {dict(random_kinds)}; {len(cases) + RANDOM_PDUS} "
        f"connections in {elapsed_s:.1f} s; audited node aborts: {aborted}; "
        f"RSS {rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB"
    )
    assert sum(random_kinds.values()) == RANDOM_PDUS
    assert rss_after - rss_before < 100 * 1024**2
