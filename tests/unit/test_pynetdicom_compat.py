"""The node names the pynetdicom releases it supports and refuses the others (no fallback)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pynetdicom
import pytest

from dicom_node.errors import ConfigurationError
from dicom_node.receive import reactor
from dicom_node.receive.pynetdicom_compat import (
    check_pynetdicom_version,
    pynetdicom_is_supported,
)


@pytest.mark.parametrize("version", ["2.1.1", "3.1.0", "4.0.0", "dev"])
def test_an_unsupported_pynetdicom_stops_the_node(version):
    with pytest.raises(ConfigurationError, match=f"pynetdicom {version} is not supported"):
        check_pynetdicom_version(version)


def test_the_installed_pynetdicom_is_supported_and_the_reactor_is_on():
    check_pynetdicom_version()  # what CI installs from pyproject.toml
    assert pynetdicom_is_supported("3.0.0") and pynetdicom_is_supported("3.0.4")
    assert reactor.SUPPORTED, pynetdicom.__version__


def test_pyproject_pins_the_same_range():
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    pins = [d for d in pyproject["project"]["dependencies"] if d.startswith("pynetdicom")]
    assert pins == ["pynetdicom>=3.0,<3.1"], pins


def test_standard_event_logging_follows_the_pynetdicom_logger(monkeypatch):
    from pynetdicom import _config

    from dicom_node.receive.pynetdicom_compat import log_standard_events

    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "standard")
    log_standard_events(False)
    assert _config.LOG_HANDLER_LEVEL == "none"
    log_standard_events(True)
    assert _config.LOG_HANDLER_LEVEL == "standard"


def test_forget_server_removes_only_a_listed_server():
    from types import SimpleNamespace

    from dicom_node.receive.pynetdicom_compat import forget_server

    listed, other = object(), object()
    ae = SimpleNamespace(_servers=[listed])
    forget_server(ae, other)
    assert ae._servers == [listed]
    forget_server(ae, listed)
    assert ae._servers == []
    forget_server(SimpleNamespace(), listed)  # an AE without the list: nothing to do
