"""SQLAlchemy engines for the SQL store (not shoal's scheduling engine): URL rules, SQLite
settings, connection pools.

Supported: SQLite through the standard library's ``sqlite3`` (``sqlite:///path.db``,
``sqlite://`` for a private in-memory database) and PostgreSQL through psycopg 3
(``postgresql+psycopg://...``; ``postgresql://`` and ``postgres://`` are rewritten to it).
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

from shoal._errors import ShoalError

#: How long a writer waits for SQLite's write lock before failing.
SQLITE_BUSY_TIMEOUT_S = 30.0

#: Execution option that makes a SQLite transaction take the write lock at BEGIN.
WRITE_OPTION = "shoal_write"


def normalize_url(url: str | URL) -> URL:
    """Parse ``url`` and pick the driver shoal uses for its database.

    Raises
    ------
    ShoalError
        ``store.url`` for a malformed URL or a database shoal does not support.
    """
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ShoalError(
            f"cannot parse the database URL {str(url)!r}: {exc}",
            code="store.url",
            hint="use sqlite:///path/to/shoal.db or postgresql://user@host/db",
        ) from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgresql", "postgres") and driver in ("", "psycopg"):
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite" and driver in ("", "pysqlite"):
        return parsed.set(drivername="sqlite+pysqlite")
    raise ShoalError(
        f"unsupported database URL scheme {parsed.drivername!r}",
        code="store.url",
        hint="use sqlite:///path/to/shoal.db or postgresql://user@host/db (psycopg 3)",
    )


def is_sqlite_memory(url: URL) -> bool:
    """Whether ``url`` names a private in-memory SQLite database."""
    database = url.database or ""
    return url.get_backend_name() == "sqlite" and (
        database in ("", ":memory:")
        or "mode=memory" in database
        or url.query.get("mode") == "memory"
    )


def make_engine(url: str | URL) -> sa.Engine:
    """An engine for ``url`` with shoal's settings.

    SQLite: write-ahead logging, a busy timeout, foreign keys on, ``synchronous=NORMAL``
    (a committed write survives a crash of the process; a power cut may lose the last
    commits but never corrupts the database, and commits cost no fsync, which keeps a
    busy coordinator fast), and transactions that shoal begins itself
    (``BEGIN``, or ``BEGIN IMMEDIATE`` for writes, so a read-then-write transaction never
    fails on a lock upgrade). PostgreSQL: a pool with pre-ping, so a restarted server
    costs no failed request.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "postgresql":
        try:
            return sa.create_engine(
                parsed,
                pool_size=10,
                max_overflow=30,
                pool_timeout=30,
                pool_pre_ping=True,
                pool_recycle=3600,
            )
        except ImportError as exc:
            raise ShoalError(
                f"PostgreSQL needs the psycopg driver ({exc})",
                code="store.driver",
                hint="pip install 'shoal[postgres]'",
            ) from None
    kwargs: dict[str, Any] = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    if is_sqlite_memory(parsed):
        # One connection shared by every thread (the store serialises access): each
        # new connection to ":memory:" would be a different, empty database.
        kwargs["poolclass"] = StaticPool
        kwargs["connect_args"]["check_same_thread"] = False
    else:
        kwargs.update(pool_size=16, max_overflow=32, pool_timeout=30)
        kwargs["connect_args"]["check_same_thread"] = False
    engine = sa.create_engine(parsed, **kwargs)
    sa.event.listen(engine, "connect", _sqlite_connect)
    sa.event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_connection: Any, connection_record: Any) -> None:
    # Let SQLAlchemy emit BEGIN itself (see _sqlite_begin): sqlite3's legacy transaction
    # control would run SELECTs and DDL outside of the transaction.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        _wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _wal(cursor: Any) -> None:
    """Put the database in WAL mode (persistent, so usually already done).

    Switching needs an exclusive lock and SQLite does not wait on the busy handler for
    it: when several connections open a new database at once, the losers get "database
    is locked" at once. So retry, bounded by the same busy timeout.
    """
    if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
        return
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    pause = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


def _sqlite_begin(conn: sa.Connection) -> None:
    if conn.get_execution_options().get(WRITE_OPTION):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")
