"""Run the SQL store's alembic migrations from code (no ``alembic.ini`` needed).

The scripts live in the package (``shoal/_store/migrations``), so an installed shoal can
create or upgrade its own database: :class:`~shoal._store.sql.SQLStore` calls
:func:`upgrade_connection` whenever it opens one.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from shoal._store.schema import VERSION_TABLE
from shoal._store.sqlengine import WRITE_OPTION, make_engine

MIGRATIONS = Path(__file__).parent / "migrations"

# Serialises concurrent upgrades of one PostgreSQL database (any constant will do).
_PG_MIGRATION_LOCK = 0x73686F616C_01


def config(connection: sa.Connection | None = None, url: str | None = None) -> Config:
    """An alembic configuration for shoal's migrations.

    Parameters
    ----------
    connection
        Run on this connection (inside its transaction).
    url
        Otherwise, connect to this database URL.
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    cfg.attributes["connection"] = connection
    cfg.attributes["url"] = url
    return cfg


def head() -> str:
    """The newest revision shipped with this version of shoal."""
    found = ScriptDirectory.from_config(config()).get_current_head()
    assert found is not None
    return found


def current(connection: sa.Connection) -> str | None:
    """The revision a database is at (None for an empty one)."""
    ctx = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return ctx.get_current_revision()


def upgrade_connection(connection: sa.Connection, revision: str = "head") -> None:
    """Upgrade the database of ``connection`` to ``revision`` in one transaction.

    Concurrent upgrades of one database wait for each other: SQLite's write lock is
    taken at BEGIN, PostgreSQL's by an advisory lock.
    """
    connection.execution_options(**{WRITE_OPTION: True})
    with connection.begin():
        if connection.dialect.name == "postgresql":
            connection.execute(
                sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK}
            )
        command.upgrade(config(connection), revision)


def upgrade(url: str, revision: str = "head") -> None:
    """Create or upgrade the store schema of the database at ``url``."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            upgrade_connection(connection, revision)
    finally:
        engine.dispose()


def downgrade(url: str, revision: str) -> None:
    """Downgrade the store schema of the database at ``url`` (``"base"``: drop it all)."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            connection.execution_options(**{WRITE_OPTION: True})
            with connection.begin():
                command.downgrade(config(connection), revision)
    finally:
        engine.dispose()


def revision(message: str) -> None:
    """Write a new revision script comparing the migrations with ``schema.py`` (for
    shoal's developers)."""
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/head.db"
        upgrade(url)
        cfg = config(url=url)
        # Revisions are numbered 0001, 0002, ... in files named v0001_<message>.py.
        cfg.set_main_option("file_template", "v%%(rev)s_%%(slug)s")
        rev_id = f"{int(head()) + 1:04d}"
        command.revision(cfg, message=message, autogenerate=True, rev_id=rev_id)
