"""C-STORE response statuses are classified with pynetdicom's public helpers, not bit shifts."""

from __future__ import annotations

import pytest

from dicom_node.export.scu import stored_by_peer
from dicom_node.receive.scp import STATUS_SUCCESS, failure_status, status_code


@pytest.mark.parametrize("status", [0x0000, 0xB000, 0xB006, 0xB007, 0x0001, 0x0107, 0x0116])
def test_success_and_warnings_mean_stored(status):
    assert stored_by_peer(status)


@pytest.mark.parametrize(
    "status", [0xA700, 0xA900, 0xC000, 0xC210, 0x0122, 0x0211, 0xFE00, 0xFF00, 0x1234]
)
def test_failures_cancel_pending_and_unknown_mean_not_stored(status):
    assert not stored_by_peer(status)


def test_a_failure_status_carries_its_reason_within_lo():
    status = failure_status(0xC210, "Pixel Data truncated: " + "x" * 100 + " \u00e9")
    assert status_code(status) == 0xC210 and STATUS_SUCCESS == 0
    assert status.ErrorComment.startswith("Pixel Data truncated: ")
    assert len(status.ErrorComment) == 64 and str(status.ErrorComment).isascii()
