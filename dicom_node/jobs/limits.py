"""Bounded worker memory: an address-space limit set in each worker process.

A worker decodes whole series and runs pipelines on them; a hostile or
simply enormous series must not take the machine's memory from the
receiver, the database and the other workers. :func:`limit_worker_memory`
sets ``RLIMIT_AS`` in the worker process (inherited by nothing else): an
allocation beyond it raises :class:`MemoryError` in the job, which is
recorded as a failed attempt and retried up to ``workers.max_attempts``,
while the worker process itself goes on.

``RLIMIT_AS`` counts virtual address space, which is larger than resident
memory (thread stacks, allocator arenas, mapped libraries): set
``workers.max_memory_bytes`` with that margin, or 0 on hosts where a GPU
runtime reserves large virtual ranges.

References
----------
POSIX ``setrlimit(2)``, ``RLIMIT_AS``; Python :mod:`resource`.
"""

from __future__ import annotations

import logging
import resource

logger = logging.getLogger(__name__)


def limit_worker_memory(max_memory_bytes: int) -> int | None:
    """Limit this process's address space to ``max_memory_bytes``.

    Parameters
    ----------
    max_memory_bytes : int
        Soft and hard limit in bytes; 0 leaves the process unlimited. A hard
        limit already lower than this is kept.

    Returns
    -------
    int or None
        The limit in force afterwards, None when unlimited.
    """
    if max_memory_bytes <= 0:
        return None
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = max_memory_bytes if hard == resource.RLIM_INFINITY else min(hard, max_memory_bytes)
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ValueError, OSError) as err:
        logger.warning("address-space limit of %d bytes not applied: %s", limit, err)
        return None
    logger.info("worker address space limited to %.1f GiB", limit / 1024**3)
    return limit
