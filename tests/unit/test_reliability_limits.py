"""The node's own limits, piece by piece: PDU stream guard, address allow-list, free-disk
watermark, pixel caps before decoding, worker memory, result-version descriptions, settings."""

from __future__ import annotations

import copy
import struct
import subprocess
import sys

import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGLosslessSV1

from dicom_node.config import load_settings
from dicom_node.errors import ConfigurationError, SeriesLoadError
from dicom_node.receive.access import AddressAllowList
from dicom_node.receive.framing import PduStreamGuard, ReceiveLimits
from dicom_node.receive.resources import DiskWatermark
from dicom_node.results.versioning import versioned_description
from dicom_node.security.tls import client_context, server_context
from dicom_node.series.pixel_limits import (
    PixelLimits,
    check_pixel_limits,
    check_series_pixel_limits,
    codestream_size,
)

LIMITS = ReceiveLimits(max_pdu_bytes=1000, max_dataset_bytes=2500, max_command_bytes=100)


def p_data(*items: tuple[bool, bool, int]) -> bytes:
    """A P-DATA-TF PDU with PDV items (is_command, is_last, data length)."""
    body = b"".join(
        struct.pack(">LBB", length + 2, 1, (1 if command else 0) | (2 if last else 0))
        + bytes(length)
        for command, last, length in items
    )
    return struct.pack(">BBL", 0x04, 0, len(body)) + body


def feed_in_chunks(data: bytes, size: int) -> str | None:
    guard = PduStreamGuard(LIMITS)
    result = None
    for start in range(0, len(data), size):
        result = guard.feed(data[start : start + size]) or result
    return result


def test_pdu_guard_accepts_datasets_within_the_limits_whatever_the_chunking():
    stream = (
        p_data((True, True, 50))
        + p_data((False, False, 900))
        + p_data((False, False, 900))
        + p_data((False, True, 600))  # 2400 bytes
        + p_data((True, True, 50))
        + p_data((False, True, 900))
    )  # counters reset
    for size in (1, 3, 7, 64, 1000, len(stream)):
        assert feed_in_chunks(stream, size) is None


def test_pdu_guard_refuses_oversized_pdus_datasets_and_commands():
    assert "announces 4294967295 bytes" in PduStreamGuard(LIMITS).feed(b"\x01\x00\xff\xff\xff\xff")
    big = p_data((False, False, 900)) * 2 + p_data((False, True, 900))  # 2700 > 2500
    for size in (1, 5, 1000):
        assert "dataset over 2500 bytes" in feed_in_chunks(big, size)
    endless = p_data((True, False, 60)) + p_data((True, False, 60))
    assert "command set over 100 bytes" in feed_in_chunks(endless, 13)
    guard = PduStreamGuard(LIMITS)
    assert guard.feed(struct.pack(">BBL", 0x01, 0, 1001)) is not None
    assert guard.feed(b"more") == guard.violation  # stays refused


def test_address_allow_list():
    allow = AddressAllowList(["10.20.0.0/16", "192.168.1.7", "2001:db8::/32"])
    assert allow.allows("10.20.3.4") and allow.allows("192.168.1.7")
    assert allow.allows("::ffff:10.20.0.1")  # IPv4 from a dual-stack listener
    assert allow.allows("2001:db8::1") and not allow.allows("2001:db9::1")
    assert not allow.allows("10.21.0.1") and not allow.allows("not-an-address")
    assert AddressAllowList([]).allows("203.0.113.5")
    with pytest.raises(ConfigurationError):
        AddressAllowList(["10.0.0.0/33"])


def test_disk_watermark(tmp_path):
    free, total = DiskWatermark(tmp_path).free_bytes()
    assert DiskWatermark(tmp_path, 0, 0).has_room(10**15) == (True, "")
    ok, why = DiskWatermark(tmp_path, min_free_bytes=free + 10**12).has_room(1)
    assert not ok and "dicom.min_free_disk_bytes" in why
    ok, why = DiskWatermark(tmp_path, min_free_percent=100.0).has_room(1)
    assert not ok and "min_free_disk_percent" in why
    assert DiskWatermark(tmp_path, min_free_bytes=1, min_free_percent=0.001).has_room(1)[0]


@pytest.fixture
def small_ct(shared_data) -> pydicom.Dataset:
    return pydicom.dcmread(shared_data / "seg-sr-examples" / "highdicom" / "ct_image.dcm")


def test_pixel_caps_are_checked_before_decoding(small_ct):
    assert check_pixel_limits(small_ct, PixelLimits()) == 128 * 128 * 2
    with pytest.raises(SeriesLoadError, match="exceed the limit 64 x 64"):
        check_pixel_limits(small_ct, PixelLimits(max_rows=64, max_columns=64))
    with pytest.raises(SeriesLoadError, match="max_instance_bytes"):
        check_pixel_limits(small_ct, PixelLimits(max_instance_bytes=1000))
    with pytest.raises(SeriesLoadError, match="max_series_bytes"):
        check_series_pixel_limits([small_ct] * 3, PixelLimits(max_series_bytes=80_000))
    lying = copy.deepcopy(small_ct)
    lying.Rows = 4000  # the header promises far more pixels than the data hold
    with pytest.raises(SeriesLoadError, match="native pixel data hold"):
        check_pixel_limits(lying, PixelLimits())


@pytest.mark.parametrize("kind", ["jpeg2000", "jpeg-lossless"])
def test_a_codestream_larger_than_its_header_is_a_decompression_bomb(small_ct, shared_data, kind):
    if kind == "jpeg2000":
        compressed = copy.deepcopy(small_ct)
        compressed.compress(JPEG2000Lossless)
    else:  # a real JPEG Lossless CT (no encoder is installed)
        compressed = pydicom.dcmread(
            sorted((shared_data / "chest-ct" / "jpeg-lossless-40").iterdir())[0]
        )
        assert compressed.file_meta.TransferSyntaxUID == JPEGLosslessSV1
    rows, columns = int(compressed.Rows), int(compressed.Columns)
    assert check_pixel_limits(compressed, PixelLimits()) == rows * columns * 2
    bomb = copy.deepcopy(compressed)
    bomb.Rows, bomb.Columns = 16, 16  # a small header around a large codestream
    with pytest.raises(
        SeriesLoadError, match=f"codestream is {rows} x {columns}, the header says 16 x 16"
    ):
        check_pixel_limits(bomb, PixelLimits())
    assert codestream_size(b"not a codestream") is None


def test_worker_address_space_limit_turns_a_huge_allocation_into_memory_error():
    code = (
        "from dicom_node.jobs.limits import limit_worker_memory\n"
        "assert limit_worker_memory(1024**3) == 1024**3\n"
        "try:\n"
        "    bytearray(2 * 1024**3)\n"
        "except MemoryError:\n"
        "    print('MemoryError')\n"
        "print(len(bytearray(10 * 1024**2)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["MemoryError", str(10 * 1024**2)]


@pytest.mark.parametrize(
    "description, version, supersedes, expected",
    [
        (
            "AI intracranial hemorrhage SEG (not for diagnostic use)",
            1,
            None,
            "AI intracranial hemorrhage SEG (not for diagnostic use)",
        ),
        (
            "AI intracranial hemorrhage SEG (not for diagnostic use)",
            2,
            1,
            "AI ICH SEG v2, supersedes v1 (not for diagnostic use)",
        ),
        (
            "AI ICH report (not for diagnostic use)",
            13,
            12,
            "AI ICH report v13, supersedes v12 (not for diagnostic use)",
        ),
    ],
)
def test_versioned_series_descriptions_fit_lo(description, version, supersedes, expected):
    text = versioned_description(description, version, supersedes)
    assert text == expected and len(text) <= 64
    assert len(versioned_description("x" * 80, 3, 2)) == 64


def test_settings_validate_networks_pdu_limits_and_tls(tmp_path):
    with pytest.raises(ConfigurationError, match="allowed_networks"):
        load_settings(overrides={"dicom": {"allowed_networks": ["10.0.0.0/40"]}})
    with pytest.raises(ConfigurationError, match="max_accepted_pdu_bytes"):
        load_settings(
            overrides={"dicom": {"max_pdu_bytes": 1048576, "max_accepted_pdu_bytes": 65536}}
        )
    settings = load_settings(overrides={"dicom": {"allowed_networks": [" 10.1.2.3 "]}})
    assert settings.dicom.allowed_networks == ["10.1.2.3/32"]
    assert settings.dicom.tls.certificate is None  # "" in the defaults means unset
    tls = settings.dicom.tls.model_copy(update={"enabled": True})
    with pytest.raises(ConfigurationError, match="no certificate"):
        server_context(tls)
    with pytest.raises(ConfigurationError, match="does not exist"):
        client_context(tls.model_copy(update={"ca_certificates": tmp_path / "none.pem"}))
