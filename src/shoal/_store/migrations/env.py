"""Alembic environment of the SQL store (run by ``shoal._store.migrate``)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from shoal._store.schema import VERSION_TABLE, metadata
from shoal._store.sqlengine import make_engine


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,  # SQLite can only ALTER TABLE through a table copy
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    cfg = context.config
    if context.is_offline_mode():
        context.configure(
            url=cfg.attributes.get("url"),
            target_metadata=metadata,
            version_table=VERSION_TABLE,
            literal_binds=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = cfg.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(cfg.attributes["url"])
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


_main()
