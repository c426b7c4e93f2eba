"""Worker processes: the entry point each one runs, and the pool the node keeps.

:func:`worker_process_main` builds what one worker needs from the settings
(logging, memory limit, database engine, :class:`~dicom_node.jobs.executor.JobExecutor`)
and runs the worker loop (:func:`dicom_node.jobs.worker.run_worker`) until
told to stop. :class:`WorkerPool` is how :class:`dicom_node.app.Node` starts
``workers.processes`` of them (``spawn`` start method) and stops them; ``dicom-node
worker`` calls :func:`worker_process_main` in its own process.

References
----------
Python ``multiprocessing`` documentation, "Contexts and start methods".
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from typing import Any

from dicom_node.config import Settings
from dicom_node.db.engine import make_engine, make_session_factory
from dicom_node.jobs.executor import JobExecutor
from dicom_node.jobs.limits import limit_worker_memory
from dicom_node.jobs.worker import run_worker
from dicom_node.logs import configure_logging

logger = logging.getLogger(__name__)


def _exit_when_orphaned(parent_pid: int, interval_s: float = 1.0) -> None:
    """Exit this process as soon as its parent has died (checked every ``interval_s``).

    A worker whose node was killed (SIGKILL, OOM killer) must not go on
    claiming jobs; the job it was running stays RUNNING and is requeued by the
    restarted node's start-up recovery.
    """
    while True:
        time.sleep(interval_s)
        if os.getppid() != parent_pid:
            logger.error("node process %d is gone: worker exits", parent_pid)
            os._exit(3)


def worker_process_main(
    settings_data: dict[str, Any], worker_id: str, stop, parent_pid: int | None = None
) -> None:
    """Entry point of a worker process (spawned by :class:`Node` or ``dicom-node worker``).

    Parameters
    ----------
    settings_data : dict
        ``Settings.model_dump(mode="json")`` of the parent.
    worker_id : str
        Identifies the worker in job rows and logs (host:pid:index).
    stop : multiprocessing.Event
        Set by the parent to stop the worker after its current job.
    parent_pid : int or None
        The node's process id; when given, the worker exits if that process dies.
    """
    if parent_pid is not None:
        threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), daemon=True).start()
    settings = Settings.model_validate(settings_data)
    configure_logging(settings.log_level, log_library_warnings=settings.log_library_warnings)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    limit_worker_memory(settings.workers.max_memory_bytes)
    engine = make_engine(settings.storage.url)
    session_factory = make_session_factory(engine)
    executor = JobExecutor(settings, session_factory)
    run_worker(
        session_factory,
        executor.execute,
        executor.record,
        worker_id=worker_id,
        settings=settings.workers,
        stop=stop,
    )
    engine.dispose()


class WorkerPool:
    """The node's worker processes: started with the node, stopped after their current job.

    Parameters
    ----------
    settings : Settings
        Passed to each worker as ``Settings.model_dump(mode="json")``;
        ``workers.processes`` is the number of processes.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._context = multiprocessing.get_context("spawn")
        self._stop = self._context.Event()
        self._workers: list[multiprocessing.process.BaseProcess] = []

    def start(self) -> None:
        """Start ``workers.processes`` worker processes (daemons, ``spawn``).

        Each worker is named ``host:pid:wN`` in job rows and logs, and exits
        when this process dies (see :func:`worker_process_main`).
        """
        data = self.settings.model_dump(mode="json")
        host = socket.gethostname()
        for index in range(self.settings.workers.processes):
            worker_id = f"{host}:{os.getpid()}:w{index}"
            process = self._context.Process(
                target=worker_process_main,
                args=(data, worker_id, self._stop, os.getpid()),
                name=f"dicom-node-worker-{index}",
                daemon=True,
            )
            process.start()
            self._workers.append(process)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask every worker to stop after its current job; terminate those still alive.

        Parameters
        ----------
        timeout_s : float
            Seconds each worker is given to finish its job before it is
            terminated (then 5 s more to exit).
        """
        self._stop.set()
        for process in self._workers:
            process.join(timeout_s)
            if process.is_alive():
                logger.warning(
                    "worker %s did not stop in %.0f s, terminating", process.name, timeout_s
                )
                process.terminate()
                process.join(5)
        self._workers.clear()

    def alive(self) -> int:
        """Return the number of worker processes still running."""
        return sum(p.is_alive() for p in self._workers)
