"""Several Storage SCP processes on one port, for senders in parallel.

pynetdicom runs each association in Python threads of one process, so
parallel associations share one interpreter lock: with four senders the
receiving process, not the disk, sets the pace (docs/performance.md). A
:class:`ReceiverPool` starts ``dicom.receiver_processes`` processes that each
listen on the same address with ``SO_REUSEPORT``; Linux spreads incoming
connections over them, and each association stays in the process that
accepted it. The processes share the spool and the database; association
closures are passed to the node over one pipe per receiver (for the early
series sweep). Nothing else is shared: no lock of the node can be left held by
a receiver that is killed.

The pool binds the port itself first (without listening) so that a
configured port 0 resolves to one port for every process, and it keeps that
socket until it stops, so no other program can take the port in between. A
receiver that dies is replaced by :meth:`ReceiverPool.check`; the associations
it had open are closed as LOST in the association log.

References
----------
Linux socket(7), ``SO_REUSEPORT``; DICOM PS3.8 (one association per TCP connection).
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any, cast

from dicom_node.config import Settings
from dicom_node.errors import ConfigurationError

logger = logging.getLogger(__name__)

#: Seconds a receiver process may take to start listening.
START_TIMEOUT_S = 120.0


def receiver_process_main(settings_data: dict[str, Any], port: int, control) -> None:
    """Entry point of one receiver process: a Storage SCP on the shared port.

    The process talks to the node over one pipe and shares no lock with it, so
    that a receiver killed at any moment cannot block the node: it sends
    ``"ready"`` once it listens, then the association-log id of each closed
    association that stored instances; it stops when the node sends ``"stop"``
    or when the pipe closes (the node is gone).

    Parameters
    ----------
    settings_data : dict
        ``Settings.model_dump(mode="json")`` of the node.
    port : int
        The port every receiver listens on (already resolved, never 0).
    control : multiprocessing.connection.Connection
        This receiver's end of its pipe to the node.
    """
    from dicom_node.audit import AuditLog
    from dicom_node.db.engine import make_engine, make_session_factory
    from dicom_node.logs import configure_logging
    from dicom_node.receive.ingest import InstanceIngest
    from dicom_node.receive.scp import StorageSCP
    from dicom_node.receive.spool import Spool

    settings = Settings.model_validate(settings_data)
    configure_logging(settings.log_level, log_library_warnings=settings.log_library_warnings)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the node decides when we stop
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    send_lock = threading.Lock()

    def closed(association_id: int) -> None:
        with send_lock:
            control.send(association_id)

    engine = make_engine(settings.storage.url, sqlite_synchronous="NORMAL")
    ingest = InstanceIngest(Spool(settings.storage.spool_path), make_session_factory(engine))
    dicom = settings.dicom.model_copy(update={"port": port})
    audit = AuditLog(
        ingest.session_factory if settings.audit.database else None, enabled=settings.audit.enabled
    )
    scp = StorageSCP(dicom, ingest, on_association_closed=closed, reuse_port=True, audit=audit)
    scp.start()
    try:
        with send_lock:
            control.send("ready")
        while not stop.is_set():
            if control.poll(1.0):
                message = control.recv()  # EOFError when the node is gone
                if message == "stop":
                    break
    except (EOFError, OSError):
        logging.getLogger(__name__).error("the node closed the pipe: receiver stops")
    finally:
        scp.stop()
        engine.dispose()


class ReceiverPool:
    """``processes`` Storage SCP processes listening on one port with ``SO_REUSEPORT``.

    Parameters
    ----------
    settings : Settings
        The node's settings (the ``dicom`` section configures every receiver).
    processes : int
        Number of receiver processes, at least 1.
    on_association_closed : callable or None
        Called in the node process with the association-log id of each closed
        association that stored instances.
    close_lost : callable or None
        ``close_lost(receiver)`` closes the association rows of a receiver that
        died (``receiver`` is its ``host:pid``).

    Raises
    ------
    ConfigurationError
        If ``processes`` is less than 1 or the platform lacks ``SO_REUSEPORT``.
    """

    def __init__(
        self,
        settings: Settings,
        processes: int,
        *,
        on_association_closed: Callable[[int], None] | None = None,
        close_lost: Callable[[str], None] | None = None,
    ) -> None:
        if processes < 1:
            raise ConfigurationError("a receiver pool needs at least one process")
        if not hasattr(socket, "SO_REUSEPORT"):
            raise ConfigurationError("dicom.receiver_processes > 0 needs SO_REUSEPORT (Linux)")
        self.settings = settings
        self.processes = processes
        self.on_association_closed = on_association_closed
        self.close_lost = close_lost
        self._context = multiprocessing.get_context("spawn")
        self._stopping = threading.Event()
        self._reserved: socket.socket | None = None
        self._port = settings.dicom.port
        self._receivers: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
        self._lock = threading.Lock()
        # check() runs from the scheduler and from callers (the CLI, tests):
        # one at a time, or two would each start a replacement for one death.
        self._check_lock = threading.Lock()
        self._relay: threading.Thread | None = None
        # Pipes of replaced receivers, closed by the relay thread: while it
        # runs it is the only thread that closes a pipe, so a pipe is never
        # closed twice or closed under its wait() (the fd could be reused).
        self._retired: list[Connection] = []

    @property
    def port(self) -> int:
        """The port the receivers listen on."""
        return self._port

    def _reserve_port(self) -> None:
        family = socket.AF_INET6 if ":" in self.settings.dicom.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((self.settings.dicom.host, self.settings.dicom.port))
        self._reserved = sock
        self._port = int(sock.getsockname()[1])

    def _spawn(self, index: int) -> tuple[multiprocessing.process.BaseProcess, Connection]:
        ours, theirs = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=receiver_process_main,
            args=(self.settings.model_dump(mode="json"), self._port, theirs),
            name=f"dicom-node-receiver-{index}",
            daemon=True,
        )
        process.start()
        theirs.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while not ours.poll(0.2):
                if not process.is_alive() or time.monotonic() > deadline:
                    raise OSError("it exited or timed out")
            if ours.recv() != "ready":
                raise OSError("it sent something other than 'ready'")
        except (OSError, EOFError) as err:
            process.terminate()
            ours.close()
            raise OSError(
                f"receiver process {index} did not start listening on port {self._port}: {err}"
            ) from err
        return process, ours

    def _relay_closures(self) -> None:
        """Pass association closures from the receivers to ``on_association_closed``.

        Runs in its own thread until :meth:`stop`; it is the only thread that
        closes the receivers' pipes while it runs.
        """
        while not self._stopping.is_set():
            with self._lock:
                for conn in self._retired:
                    conn.close()
                self._retired.clear()
                connections = [conn for _, conn in self._receivers if not conn.closed]
            if not connections:
                time.sleep(0.2)
                continue
            # wait() returns the ready objects it was given: Connections here.
            for conn in cast(list[Connection], wait(connections, timeout=0.5)):
                try:
                    item = conn.recv()
                except (EOFError, OSError):
                    conn.close()  # that receiver died; check() replaces it
                    continue
                if isinstance(item, int) and self.on_association_closed is not None:
                    try:
                        self.on_association_closed(item)
                    except Exception:
                        logger.exception("on_association_closed failed for association %s", item)

    def start(self) -> None:
        """Bind the port, start the receivers and wait until each listens.

        Raises
        ------
        OSError
            If the port cannot be bound or a receiver does not start.
        """
        self._reserve_port()
        self._relay = threading.Thread(
            target=self._relay_closures, name="receiver-closures", daemon=True
        )
        self._relay.start()
        try:
            for index in range(self.processes):
                spawned = self._spawn(index)
                with self._lock:
                    self._receivers.append(spawned)
        except OSError:
            self.stop()
            raise
        logger.info(
            "Storage SCP %s listening on %s:%d in %d receiver processes",
            self.settings.dicom.ae_title,
            self.settings.dicom.host,
            self._port,
            self.processes,
        )

    def alive(self) -> int:
        """Number of receiver processes running."""
        return sum(process.is_alive() for process, _ in self._receivers)

    def check(self) -> int:
        """Replace receivers that died; return how many were replaced.

        Safe to call from several threads: calls run one at a time, so each
        death is replaced once (a second caller finds the replacement alive).
        """
        with self._check_lock:
            return self._replace_dead()

    def _replace_dead(self) -> int:
        if self._stopping.is_set():
            return 0
        replaced = 0
        host = socket.gethostname()
        for index, (process, conn) in enumerate(list(self._receivers)):
            if process.is_alive():
                continue
            logger.error(
                "receiver process %s (pid %s) exited with %s: starting a new one",
                process.name,
                process.pid,
                process.exitcode,
            )
            if self.close_lost is not None:
                try:
                    self.close_lost(f"{host}:{process.pid}")
                except Exception:
                    logger.exception("closing the associations of %s failed", process.name)
            try:
                spawned = self._spawn(index)
            except OSError:
                logger.exception("receiver process %d could not be restarted", index)
                continue
            with self._lock:
                self._receivers[index] = spawned
                self._retired.append(conn)  # the relay thread closes it
            replaced += 1
        return replaced

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the receivers (their open associations end) and release the port."""
        self._stopping.set()
        with self._lock:
            receivers = list(self._receivers)
            self._receivers.clear()
        for _, conn in receivers:
            try:
                conn.send("stop")
            except (OSError, ValueError):
                pass  # already gone
        for process, _ in receivers:
            process.join(timeout_s)
            if process.is_alive():
                logger.warning(
                    "receiver %s did not stop in %.0f s, terminating", process.name, timeout_s
                )
                process.terminate()
                process.join(5)
        if self._relay is not None:
            self._relay.join(5)
            self._relay = None
        with self._lock:
            retired, self._retired = self._retired, []
        for conn in [conn for _, conn in receivers] + retired:
            conn.close()
        if self._reserved is not None:
            self._reserved.close()
            self._reserved = None
