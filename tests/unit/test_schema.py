"""An existing database from an older version is refused with a clear message, not used."""

from __future__ import annotations

import sqlite3

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
