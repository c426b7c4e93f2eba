"""Check that an existing database has the schema this version of the node expects.

``create_all`` creates missing tables but never alters existing ones, so a
database created by an older version can lack columns that the code uses.
Rather than failing later in the middle of a C-STORE or a job, the node checks
at start-up and refuses with a message that says what is missing. There are no
automatic migrations yet: move the old database aside (its rows describe
instances and results that are in the spool and outbox) or add the columns.
"""

from __future__ import annotations

from sqlalchemy import Engine, inspect

from dicom_node.db.models import Base
from dicom_node.errors import ConfigurationError


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
