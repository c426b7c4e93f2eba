"""An existing database from an older version is refused with a clear message, not used."""

from __future__ import annotations

import os
import sqlite3
import stat

import pytest

from dicom_node.db.engine import make_engine
from dicom_node.db.schema import check_schema, missing_columns
from dicom_node.errors import ConfigurationError


def test_current_schema_passes(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    assert missing_columns(engine) == {}
    check_schema(engine)
    engine.dispose()


def test_older_database_is_refused_naming_the_missing_column(tmp_path):
    path = tmp_path / "old.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    engine.dispose()
    with sqlite3.connect(path) as connection:  # what an older version created
        connection.execute("ALTER TABLE series DROP COLUMN convolution_kernel")
    engine = make_engine(f"sqlite:///{path}")
    with pytest.raises(ConfigurationError, match=r"series: convolution_kernel"):
        check_schema(engine)
    engine.dispose()


def test_sqlite_database_and_wal_files_are_owner_only(tmp_path):
    """The job database holds password hashes and the audit log: 0600, WAL files too."""
    old = os.umask(0o022)  # the usual umask, which would give 0644
    try:
        path = tmp_path / "node" / "dicom-node.sqlite"
        engine = make_engine(f"sqlite:///{path}")
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE probe (x INTEGER)")
            connection.exec_driver_sql("INSERT INTO probe VALUES (1)")
        files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files if p.exists()}
        engine.dispose()
    finally:
        os.umask(old)
    assert path.name + "-wal" in modes, modes
    assert all(mode == 0o600 for mode in modes.values()), {k: oct(v) for k, v in modes.items()}


def test_existing_world_readable_database_is_narrowed(tmp_path):
    """A database made 0644 by an older release is narrowed to 0600 at start."""
    path = tmp_path / "dicom-node.sqlite"
    make_engine(f"sqlite:///{path}").dispose()
    path.chmod(0o644)
    make_engine(f"sqlite:///{path}").dispose()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
