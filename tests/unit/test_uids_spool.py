"""UID validation and the durable spool: only validated UIDs form paths."""

from __future__ import annotations

import pytest

from dicom_node.errors import InvalidUIDError, SpoolWriteError
from dicom_node.receive.spool import Spool
from dicom_node.uids import validate_uid


@pytest.mark.parametrize("uid", ["1.2", "1.2.840.10008.5.1.4.1.1.2", "2.25.0", "0.0"])
def test_valid_uids_pass(uid):
    assert validate_uid(uid) == uid


@pytest.mark.parametrize(
    "uid",
    [
        "",
        None,
        "../../x",
        "1.2/3",
        "1..2",
        "1.02",
        "1",
        ".1.2",
        "1.2.",
        "1.2.a",
        "1.2\x00",
        "1." + "1" * 63,
        "1.2 ",
    ],
)
def test_invalid_uids_are_refused(uid):
    with pytest.raises(InvalidUIDError):
        validate_uid(uid, keyword="SOPInstanceUID")


def test_spool_path_is_built_from_uids_only(tmp_path):
    spool = Spool(tmp_path / "spool")
    rel = spool.relative_path("1.2.3", "1.2.3.4", "1.2.3.4.5")
    assert str(rel) == "1.2.3/1.2.3.4/1.2.3.4.5.dcm"
    with pytest.raises(InvalidUIDError):
        spool.relative_path("1.2.3", "1.2.3.4", "../../x")
    with pytest.raises(InvalidUIDError):
        spool.relative_path("..", "1.2.3.4", "1.2.3.4.5")


def test_spool_write_is_complete_and_leaves_no_temp_files(tmp_path):
    spool = Spool(tmp_path / "spool")
    rel = spool.relative_path("1.2.3", "1.2.3.4", "1.2.3.4.5")
    path = spool.write(rel, b"DICM" * 1000)
    assert path.read_bytes() == b"DICM" * 1000
    assert list(spool.incoming.iterdir()) == []
    # A second write replaces atomically.
    spool.write(rel, b"x")
    assert path.read_bytes() == b"x"


def test_spool_write_failure_is_a_spool_write_error(tmp_path):
    spool = Spool(tmp_path / "spool")
    blocker = spool.root / "1.2.3"
    blocker.write_text("a file where a directory must go")
    with pytest.raises(SpoolWriteError, match="cannot write"):
        spool.write(spool.relative_path("1.2.3", "1.2.3.4", "1.2.3.4.5"), b"data")
    assert list(spool.incoming.iterdir()) == []
