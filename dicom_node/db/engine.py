"""Engine and session factory; SQLite in WAL mode by default.

SQLite specifics: WAL journal (readers never block the writer), ``synchronous=FULL``
(a committed row survives power loss), foreign keys on, a 30 s busy timeout, and
every transaction opened with ``BEGIN IMMEDIATE`` so that concurrent writers
(association threads, the scheduler, worker processes) queue on the lock instead
of failing with SQLITE_BUSY when a read transaction upgrades to a write.

The receive path may use its own engine with ``synchronous=NORMAL``: in WAL mode
a commit then skips the fsync, and a power loss can drop the last instance rows
(never corrupt the file). Their spool files were fsynced before the C-STORE
response, so start-up recovery (:mod:`dicom_node.recovery`) records them again.
Every ``FULL`` commit of another connection, and every checkpoint, syncs the WAL
with all earlier ``NORMAL`` commits in it (see docs/performance.md).

References
----------
SQLite "Write-Ahead Logging" and "PRAGMA synchronous"; SQLAlchemy 2.0 docs,
"Serializable isolation / Savepoints / Transactional DDL" (pysqlite recipe).

The SQLite file holds password hashes and the audit log: it is created owner-only
(0600), and an existing file, with its ``-wal`` and ``-shm`` files, is narrowed to
0600 at start (SQLite gives the ``-wal`` and ``-shm`` files the mode of the database
file).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.db.models import Base
from dicom_node.db.schema import upgrade_schema

#: Values accepted for ``sqlite_synchronous`` (SQLite "PRAGMA synchronous").
SQLITE_SYNCHRONOUS = ("FULL", "NORMAL")

#: Mode of the SQLite database file and its ``-wal`` and ``-shm`` files.
SQLITE_FILE_MODE = 0o600


def secure_sqlite_file(path: Path) -> None:
    """Create the SQLite file owner-only, or narrow an existing one and its WAL files to 0600.

    Parameters
    ----------
    path : pathlib.Path
        The database file (its folder is created if missing).

    Raises
    ------
    OSError
        If the file cannot be created or its mode changed (for example it
        belongs to another user).

    References
    ----------
    SQLite "Write-Ahead Logging" (the ``-wal`` and ``-shm`` files take the
    database file's permissions).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, SQLITE_FILE_MODE)
    os.close(fd)
    for candidate in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            mode = stat.S_IMODE(candidate.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            candidate.chmod(SQLITE_FILE_MODE)


def make_engine(url: str, *, sqlite_synchronous: str = "FULL") -> Engine:
    """Create an engine for ``url``, the schema if it does not exist, and upgrade an older one.

    Missing tables are created; columns added since (:data:`dicom_node.db.schema.MIGRATIONS`)
    are added to an existing database by :func:`dicom_node.db.schema.upgrade_schema`.

    Parameters
    ----------
    url : str
        SQLAlchemy URL, for example ``sqlite:////var/lib/dicom-node/db.sqlite``
        or ``postgresql+psycopg://...``.
    sqlite_synchronous : str
        ``"FULL"`` (default: every commit is fsynced) or ``"NORMAL"`` (WAL commits
        are not fsynced; only for writers whose data is durable elsewhere, such
        as instance rows backed by fsynced spool files). Ignored for other
        databases.

    Returns
    -------
    sqlalchemy.Engine

    Raises
    ------
    ValueError
        If ``sqlite_synchronous`` is not one of :data:`SQLITE_SYNCHRONOUS`.
    OSError
        If the SQLite file cannot be created owner-only
        (:func:`secure_sqlite_file`).

    References
    ----------
    SQLite "PRAGMA synchronous" (WAL mode: NORMAL is consistent, FULL also durable).
    """
    if sqlite_synchronous not in SQLITE_SYNCHRONOUS:
        raise ValueError(f"sqlite_synchronous must be one of {SQLITE_SYNCHRONOUS}")
    is_sqlite = url.startswith("sqlite")
    connect_args = {"check_same_thread": False, "timeout": 30.0} if is_sqlite else {}
    if is_sqlite and ":///" in url and not url.endswith(":memory:"):
        secure_sqlite_file(Path(url.split(":///", 1)[1].split("?", 1)[0]))
    engine = create_engine(url, connect_args=connect_args, pool_pre_ping=not is_sqlite)
    if is_sqlite:

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection, connection_record):
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={sqlite_synchronous}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection):
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    Base.metadata.create_all(engine)
    upgrade_schema(engine)
    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Return a session factory whose sessions keep loaded attributes after commit."""
    return sessionmaker(engine, expire_on_commit=False)
