"""Serve the dashboard with uvicorn in a thread of the node's process."""

from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

from dicom_node.errors import ConfigurationError

logger = logging.getLogger(__name__)


class WebServer:
    """uvicorn running one application on a socket bound at :meth:`start`.

    Parameters
    ----------
    app : fastapi.FastAPI
    host : str
        Address to listen on (``127.0.0.1`` by default in the settings).
    port : int
        TCP port; 0 picks a free one (see :attr:`port`).
    """

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.requested_port = port
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._bound_port: int | None = None

    @property
    def port(self) -> int:
        """The bound TCP port (after :meth:`start`; the requested one before)."""
        return self._bound_port if self._bound_port is not None else self.requested_port

    @property
    def url(self) -> str:
        """Base URL of the dashboard."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout_s: float = 15.0) -> None:
        """Bind the socket and serve in a daemon thread; return once serving.

        Raises
        ------
        ConfigurationError
            If the address cannot be bound (in use, not local) or the server
            does not start within ``timeout_s``.
        """
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.requested_port))
        except OSError as err:
            sock.close()
            raise ConfigurationError(
                f"the dashboard cannot listen on {self.host}:{self.requested_port}: {err} "
                "(set web.port, or web.enabled = false)"
            ) from err
        sock.listen(128)
        sock.set_inheritable(False)
        self._socket = sock
        self._bound_port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self.app,
            log_config=None,  # the node configured logging already
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="dicom-node-web", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigurationError(f"the dashboard did not start on {self.url}")
            time.sleep(0.02)
        logger.info("dashboard on %s", self.url)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask uvicorn to exit and wait for its thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                logger.warning("the dashboard did not stop within %.0f s", timeout_s)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None
