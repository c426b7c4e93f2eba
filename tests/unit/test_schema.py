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


def test_a_version_1_database_is_upgraded_in_place_and_keeps_its_rows(tmp_path):
    """A database made before schema_version existed gets the new columns, once."""
    from sqlalchemy import select

    from dicom_node.db.engine import make_session_factory
    from dicom_node.db.models import Job, Notification, NotificationState
    from dicom_node.db.schema import SCHEMA_VERSION, schema_version

    path = tmp_path / "v1.sqlite"
    make_engine(f"sqlite:///{path}").dispose()
    with sqlite3.connect(path) as connection:  # what version 1 created, with a pending message
        for table, column in [("notification", "next_attempt_at"), ("job", "error_traceback"),
                              ("job", "cancel_requested_at")]:  # fmt: skip
            connection.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        connection.execute("DROP TABLE schema_version")
        connection.execute(
            "INSERT INTO study (id, study_instance_uid, accession_number, "
            "study_date, created_at) VALUES (1, '1.2', '', '', '2026-01-01')"
        )
        connection.execute(
            "INSERT INTO series (id, study_id, series_instance_uid, modality, "
            "body_part_examined, study_description, series_description, "
            "protocol_name, convolution_kernel, calling_ae_title, instance_count, "
            "state, first_instance_at, last_instance_at, updated_at) VALUES "
            "(1, 1, '1.2.3', 'CT', '', '', '', '', '', 'A', 1, 'DISPATCHED', "
            "'2026-01-01', '2026-01-01', '2026-01-01')"
        )
        connection.execute(
            "INSERT INTO job (id, series_id, pipeline, pipeline_version, "
            "instance_set_digest, state, priority, attempts, max_attempts, "
            "not_before, created_at, updated_at) VALUES (1, 1, 'ich', '', 'd', "
            "'SUCCEEDED', 0, 1, 3, '2026-01-01', '2026-01-01', '2026-01-01')"
        )
        connection.execute(
            "INSERT INTO notification (job_id, webhook, state, attempts, "
            "created_at, updated_at) VALUES (1, 'team', 'PENDING', 0, "
            "'2026-01-02 03:04:05', '2026-01-02')"
        )
    engine = make_engine(f"sqlite:///{path}")
    assert missing_columns(engine) == {}
    check_schema(engine)
    with engine.connect() as connection:
        assert schema_version(connection) == SCHEMA_VERSION
    with make_session_factory(engine)() as session:
        (row,) = session.scalars(select(Notification)).all()
        assert row.state == NotificationState.PENDING
        assert row.next_attempt_at == row.created_at  # due at once, as before the upgrade
        job = session.get(Job, 1)
        assert job.error_traceback is None and job.cancel_requested_at is None
    engine.dispose()
    # Opening it again changes nothing (the version is recorded).
    from dicom_node.db.schema import upgrade_schema

    engine = make_engine(f"sqlite:///{path}")
    assert upgrade_schema(engine) == []
    engine.dispose()
