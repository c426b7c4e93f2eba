"""Access control and DICOM TLS over real loopback associations, with the audit log.

* source-address allow-list, called-AE check and calling-AE allow-list: refused
  senders store nothing and leave an audit record with the reason;
* DICOM TLS on the Storage SCP with mutual authentication: a client with a
  certificate from the trusted CA stores (pynetdicom and dcmtk ``storescu
  +tls``); an untrusted client certificate, no certificate, plain TCP and
  TLS 1.1 are refused during the handshake;
* DICOM TLS on the SCU: the exporter delivers to a TLS-only PACS that checks
  the node's client certificate, and fails (to be retried) against a PACS
  whose certificate it does not trust;
* a TLS configuration whose files are missing stops the node at start-up.

The certificates are made in the test with the ``cryptography`` package.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import time
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from sqlalchemy import func, select

from dicom_node.audit import AuditLog
from dicom_node.config import Destination, TlsSettings, load_settings
from dicom_node.db.engine import make_engine, make_session_factory
from dicom_node.db.models import (
    AuditEvent,
    Delivery,
    DeliveryState,
    Instance,
)
from dicom_node.errors import ConfigurationError
from dicom_node.export.exporter import deliver_due
from dicom_node.receive.ingest import InstanceIngest
from dicom_node.receive.scp import StorageSCP
from dicom_node.receive.spool import Spool
from tests.conftest import free_port, run_storescu
from tests.factories import add_result_with_deliveries
from tests.tls_certs import Pki, make_pki

pytestmark = pytest.mark.integration
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


class Node:
    """A Storage SCP with its spool and database."""

    def __init__(self, base_dir: Path, **dicom) -> None:
        self.settings = load_settings(
            overrides={
                "storage": {"base_dir": str(base_dir)},
                "dicom": {"port": 0, "network_timeout_s": 10.0, **dicom},
            }
        )
        self.engine = make_engine(self.settings.storage.url)
        self.factory = make_session_factory(self.engine)
        self.scp = StorageSCP(
            self.settings.dicom,
            InstanceIngest(Spool(self.settings.storage.spool_path), self.factory),
        )

    def __enter__(self) -> Node:
        self.scp.start()
        return self

    def __exit__(self, *exc) -> None:
        self.scp.stop()
        self.engine.dispose()

    def count(self) -> int:
        with self.factory() as session:
            return int(session.scalar(select(func.count(Instance.id))))

    def audit(self, expected: int) -> list[AuditEvent]:
        """The audit records, once ``expected`` are written (after the peer has gone)."""
        deadline = time.monotonic() + 10
        while True:
            with self.factory() as session:
                records = list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))
            if len(records) >= expected or time.monotonic() > deadline:
                return records
            time.sleep(0.05)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_dicom(pki: Pki, **extra) -> dict:
    return {
        "tls": {
            "enabled": True,
            "certificate": str(pki.server_cert),
            "private_key": str(pki.server_key),
            "ca_certificates": str(pki.ca),
            "require_client_certificate": True,
            **extra,
        }
    }


def client_context(
    pki: Pki, cert: Path | None, key: Path | None, *, maximum: ssl.TLSVersion | None = None
) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca))
    if maximum is not None:  # an old client: TLS 1.0/1.1 only (deprecated, on purpose)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = maximum
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    if cert is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


def store_over(
    port: int,
    dataset: pydicom.Dataset,
    *,
    tls: ssl.SSLContext | None = None,
    calling: str = "CT_SCANNER",
) -> int | None:
    """C-STORE one dataset; the status, or None when no association was established."""
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(CT_IMAGE_STORAGE, ExplicitVRLittleEndian)
    assoc = ae.associate(
        "127.0.0.1",
        port,
        ae_title="DICOM_NODE",
        tls_args=(tls, "localhost") if tls is not None else None,
    )
    if not assoc.is_established:
        return None
    try:
        status = assoc.send_c_store(dataset)
        return int(status.Status) if status else None
    finally:
        assoc.release()


def test_source_address_allow_list(tmp_path, head_ct_dir, storescu):
    file = [head_ct_dir / "03.dcm"]
    with Node(tmp_path / "a", allowed_networks=["10.0.0.0/8", "2001:db8::/32"]) as node:
        refused = run_storescu(storescu, node.scp.port, file)
        assert refused.returncode != 0
        assert node.count() == 0
        [record] = node.audit(1)
        assert (record.outcome, record.direction) == ("REFUSED", "in")
        assert "allowed_networks" in record.reason and record.peer_address.startswith("127.")
    with Node(tmp_path / "b", allowed_networks=["127.0.0.0/8"]) as node:
        assert run_storescu(storescu, node.scp.port, file).returncode == 0
        assert node.count() == 1


def test_called_and_calling_ae_titles_are_checked(tmp_path, head_ct_dir, storescu):
    file = [head_ct_dir / "04.dcm"]
    with Node(tmp_path / "n", allowed_calling_ae_titles=["CT_SCANNER"]) as node:
        wrong_called = run_storescu(
            storescu, node.scp.port, file, calling="CT_SCANNER", called="SOMEONE_ELSE"
        )
        unknown_calling = run_storescu(storescu, node.scp.port, file, calling="INTRUDER")
        assert wrong_called.returncode != 0 and unknown_calling.returncode != 0
        assert node.count() == 0
        accepted = run_storescu(storescu, node.scp.port, file, calling="CT_SCANNER")
        assert accepted.returncode == 0, accepted.stderr
        assert node.count() == 1
        records = node.audit(3)
    reasons = [(r.outcome, r.calling_ae_title, r.called_ae_title, r.reason) for r in records]
    assert reasons[0][:3] == ("REJECTED", "CT_SCANNER", "SOMEONE_ELSE")
    assert "called AE title" in reasons[0][3]
    assert reasons[1][:2] == ("REJECTED", "INTRUDER") and "calling AE title" in reasons[1][3]
    ok = records[2]
    assert (ok.outcome, ok.instances, ok.instances_refused) == ("RELEASED", 1, 0)
    assert ok.bytes > 500_000 and len(ok.series_instance_uids) == 1


def test_tls_scp_with_mutual_authentication(tmp_path, head_ct_dir, pki):
    dataset = pydicom.dcmread(head_ct_dir / "06.dcm")
    with Node(tmp_path / "n", **tls_dicom(pki)) as node:
        port = node.scp.port
        trusted = client_context(pki, pki.client_cert, pki.client_key)
        assert store_over(port, dataset, tls=trusted) == 0x0000
        assert node.count() == 1
        untrusted = client_context(pki, pki.rogue_client_cert, pki.rogue_client_key)
        assert store_over(port, dataset, tls=untrusted) is None
        assert store_over(port, dataset, tls=client_context(pki, None, None)) is None
        assert store_over(port, dataset) is None  # plain TCP to the TLS port
        old = client_context(pki, pki.client_cert, pki.client_key, maximum=ssl.TLSVersion.TLSv1_1)
        assert store_over(port, dataset, tls=old) is None
        # Still serving after the refusals.
        assert store_over(port, dataset, tls=trusted) == 0x0000
        records = node.audit(6)
    assert node.count() == 1  # the same instance twice: stored once
    accepted = [r for r in records if r.outcome == "RELEASED"]
    refused = [r for r in records if r.outcome == "REFUSED"]
    assert len(accepted) == 2 and len(refused) == 4, [(r.outcome, r.reason) for r in records]
    assert all(r.tls_version in ("TLSv1.2", "TLSv1.3") for r in accepted)
    assert "CN=CT_SCANNER" in accepted[0].peer_certificate
    assert all(r.reason.startswith("TLS handshake failed") for r in refused)
    print("\nTLS refusals: " + "; ".join(r.reason for r in refused))


def test_dcmtk_storescu_over_tls(tmp_path, head_ct_dir, pki, storescu):
    with Node(tmp_path / "n", **tls_dicom(pki)) as node:
        env = dict(os.environ, TCP_NODELAY="1")
        base = [storescu, "-aet", "CT_SCANNER", "-aec", "DICOM_NODE"]
        ok = subprocess.run(
            [
                *base,
                "+tls",
                str(pki.client_key),
                str(pki.client_cert),
                "+cf",
                str(pki.ca),
                "127.0.0.1",
                str(node.scp.port),
                str(head_ct_dir / "07.dcm"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert ok.returncode == 0, ok.stdout + ok.stderr
        rogue = subprocess.run(
            [
                *base,
                "+tls",
                str(pki.rogue_client_key),
                str(pki.rogue_client_cert),
                "+cf",
                str(pki.ca),
                "127.0.0.1",
                str(node.scp.port),
                str(head_ct_dir / "08.dcm"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert rogue.returncode != 0
        assert node.count() == 1


def test_tls_configuration_errors_stop_the_start(tmp_path):
    settings = load_settings(
        overrides={
            "storage": {"base_dir": str(tmp_path)},
            "dicom": {
                "tls": {
                    "enabled": True,
                    "certificate": str(tmp_path / "missing.crt"),
                    "private_key": str(tmp_path / "missing.key"),
                }
            },
        }
    )
    engine = make_engine(settings.storage.url)
    with pytest.raises(ConfigurationError, match="missing.crt"):
        StorageSCP(
            settings.dicom,
            InstanceIngest(Spool(settings.storage.spool_path), make_session_factory(engine)),
        )
    engine.dispose()


class TlsPacs:
    """A pynetdicom Storage SCP reachable only over TLS, checking client certificates."""

    def __init__(self, pki: Pki) -> None:
        self.received: list[str] = []
        self.port = free_port()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(pki.server_cert), str(pki.server_key))
        context.load_verify_locations(cafile=str(pki.ca))
        context.verify_mode = ssl.CERT_REQUIRED
        ae = AE(ae_title="TLSPACS")
        ae.add_supported_context(CT_IMAGE_STORAGE, ExplicitVRLittleEndian)
        self.server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            ssl_context=context,
            evt_handlers=[(evt.EVT_C_STORE, self._store)],
        )

    def _store(self, event) -> int:
        self.received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    def stop(self) -> None:
        self.server.shutdown()


def test_exporter_delivers_over_tls_and_audits(tmp_path, head_ct_dir, pki):
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    ds = pydicom.dcmread(head_ct_dir / "09.dcm")
    ds.save_as(outbox / "obj.dcm")
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    factory = make_session_factory(engine)
    with factory.begin() as session:
        add_result_with_deliveries(session, ds, ("untrusting", "pacs"), size_bytes=1000)
    pacs = TlsPacs(pki)
    audit = AuditLog(factory)
    try:
        identity = {"certificate": str(pki.client_cert), "private_key": str(pki.client_key)}
        good = Destination(
            name="pacs",
            ae_title="TLSPACS",
            host="127.0.0.1",
            port=pacs.port,
            tls=TlsSettings(
                enabled=True, ca_certificates=pki.ca, server_hostname="localhost", **identity
            ),
        )
        # Trusts only the rogue CA: the PACS certificate does not verify.
        bad = Destination(
            name="untrusting",
            ae_title="TLSPACS",
            host="127.0.0.1",
            port=pacs.port,
            tls=TlsSettings(
                enabled=True, ca_certificates=pki.rogue_ca, server_hostname="localhost", **identity
            ),
        )
        counts = deliver_due(
            factory, [good, bad], outbox=outbox, calling_ae_title="NODE", audit=audit
        )
    finally:
        pacs.stop()
    assert counts == {"SENT": 1, "RETRYING": 1}
    assert pacs.received == [str(ds.SOPInstanceUID)]
    with factory() as session:
        states = {d.destination: (d.state, d.last_error) for d in session.scalars(select(Delivery))}
        records = list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))
    assert states["pacs"][0] == DeliveryState.SENT
    assert states["untrusting"][0] == DeliveryState.RETRYING
    outcomes = {
        r.destination: (r.direction, r.outcome, r.instances, r.tls_version) for r in records
    }
    assert outcomes["pacs"] == ("out", "SENT", 1, "TLS>=TLSv1.2")
    assert outcomes["untrusting"][:3] == ("out", "FAILED", 0)
    engine.dispose()
