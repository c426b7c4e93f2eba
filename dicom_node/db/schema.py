"""Upgrade an existing database to the schema this version expects, and check it.

``create_all`` creates missing tables but never alters existing ones, so a
database created by an older version can lack columns that the code uses.
:func:`upgrade_schema` (run by :func:`dicom_node.db.engine.make_engine` after
``create_all``) adds the columns of every :data:`MIGRATIONS` step newer than
the version recorded in the ``schema_version`` table, runs the step's
backfill, and records :data:`SCHEMA_VERSION`. Each step is idempotent (a
column already there is skipped), so a fresh database, created whole by
``create_all``, only gets its version row.

Columns that no migration step adds (a database older than the first step,
or changed by hand) are not guessed at: :func:`check_schema`, at the node's
start, refuses with a message that names them. Move such a database aside
(its rows describe instances and results that are in the spool and outbox) or
add the columns. PostgreSQL deployments at scale use Alembic
(docs/DESIGN.md); these steps are plain ``ALTER TABLE ... ADD COLUMN``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, insert, inspect, select, text

from dicom_node.db.models import Base, SchemaVersion, utcnow
from dicom_node.errors import ConfigurationError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Migration:
    """One schema step: columns added to existing tables, then a backfill.

    Parameters
    ----------
    version : int
        The schema version after this step (ascending, from 2).
    description : str
        What changed and why (logged when applied).
    columns : tuple of (str, str)
        ``(table, column)`` pairs; the column's type comes from the model in
        :mod:`dicom_node.db.models`. It is added nullable: SQLite cannot add
        a NOT NULL column without a constant default, and the ORM fills it
        on every new row.
    backfill : tuple of str
        SQL statements run after the columns exist; they must be idempotent.
    """

    version: int
    description: str
    columns: tuple[tuple[str, str], ...] = ()
    backfill: tuple[str, ...] = ()


#: Every schema step since version 1 (the schema before ``schema_version`` existed).
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        2,
        "webhook notifications retried per sweep (next attempt time); failed jobs keep "
        "their traceback; a running job can be asked to cancel",
        columns=(
            ("notification", "next_attempt_at"),
            ("job", "error_traceback"),
            ("job", "cancel_requested_at"),
        ),
        backfill=(
            "UPDATE notification SET next_attempt_at = created_at WHERE next_attempt_at IS NULL",
        ),
    ),
)

#: The schema version this code expects (the last step's).
SCHEMA_VERSION = MIGRATIONS[-1].version if MIGRATIONS else 1


def schema_version(connection: Connection) -> int | None:
    """The version recorded in ``schema_version``, or None when no row is there."""
    return connection.scalar(
        select(SchemaVersion.version).order_by(SchemaVersion.id.desc()).limit(1)
    )


def _add_column(connection: Connection, table: str, column: str) -> None:
    model_column = Base.metadata.tables[table].columns[column]
    ddl_type = model_column.type.compile(dialect=connection.dialect)
    preparer = connection.dialect.identifier_preparer
    connection.execute(
        text(f"ALTER TABLE {preparer.quote(table)} ADD COLUMN {preparer.quote(column)} {ddl_type}")
    )


def upgrade_schema(engine: Engine) -> list[int]:
    """Apply the :data:`MIGRATIONS` steps this database has not had, in one transaction.

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The job database, after ``Base.metadata.create_all`` (so the
        ``schema_version`` table exists).

    Returns
    -------
    list of int
        The versions applied now (empty when the database was up to date).

    Raises
    ------
    sqlalchemy.exc.DBAPIError
        If a statement fails; the transaction is rolled back and nothing changes.
    """
    with engine.connect() as connection:
        if (schema_version(connection) or 1) >= SCHEMA_VERSION:
            return []
    applied: list[int] = []
    # With SQLite the transaction starts with BEGIN IMMEDIATE (db/engine.py): processes
    # starting at the same moment take turns, and the second finds the work done.
    with engine.begin() as connection:
        current = schema_version(connection) or 1
        if current >= SCHEMA_VERSION:
            return []
        inspector = inspect(connection)
        present = {
            name: {c["name"] for c in inspector.get_columns(name)}
            for name in inspector.get_table_names()
        }
        for step in MIGRATIONS:
            if step.version <= current:
                continue
            added = []
            for table, column in step.columns:
                if column not in present.get(table, {column}):
                    _add_column(connection, table, column)
                    present[table].add(column)
                    added.append(f"{table}.{column}")
            for statement in step.backfill:
                connection.execute(text(statement))
            applied.append(step.version)
            if added:  # a fresh database has every column already: nothing to say
                logger.warning(
                    "database schema upgraded to version %d (added %s): %s",
                    step.version, ", ".join(added), step.description,
                )  # fmt: skip
        connection.execute(
            insert(SchemaVersion).values(version=SCHEMA_VERSION, upgraded_at=utcnow())
        )
    return applied


def missing_columns(engine: Engine) -> dict[str, list[str]]:
    """Return ``{table: [column, ...]}`` of model columns absent from the database."""
    inspector = inspect(engine)
    missing: dict[str, list[str]] = {}
    existing_tables = set(inspector.get_table_names())
    for table in Base.metadata.sorted_tables:
        if table.name not in existing_tables:
            continue
        present = {c["name"] for c in inspector.get_columns(table.name)}
        absent = [c.name for c in table.columns if c.name not in present]
        if absent:
            missing[table.name] = absent
    return missing


def check_schema(engine: Engine) -> None:
    """Raise if the database lacks columns this version needs.

    Raises
    ------
    ConfigurationError
        Naming the database URL (without password), and each missing column.
    """
    missing = missing_columns(engine)
    if missing:
        listing = "; ".join(f"{t}: {', '.join(cols)}" for t, cols in missing.items())
        raise ConfigurationError(
            f"the database {engine.url.render_as_string(hide_password=True)} was created by an "
            f"older dicom-node and lacks columns ({listing}); move it aside to start a new "
            "one (spool and outbox files are kept) or add the columns"
        )
