"""The admin dashboard, upload page, ``/metrics`` and ``/health`` (see docs/operations.md)."""

from dicom_node.web.app import create_app
from dicom_node.web.server import WebServer

__all__ = ["WebServer", "create_app"]
