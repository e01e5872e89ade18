"""Which of several coordinators on one PostgreSQL database drives the engine: a lease.

The lease is a PostgreSQL *session* advisory lock held on a connection of its own. A
coordinator that holds it is the active one; the others are standbys (docs/scale.md).
The lock lives exactly as long as that connection: a coordinator that dies (SIGKILL,
a crash, a lost machine) loses its connection and the server releases the lock at
once (a lost machine: when TCP keepalives give up, about 11 s here), so a standby can
take it.

The lease also *fences* the event log. The active coordinator appends its events on
the lease's own connection (:meth:`Lease.append_event`), so an append can only commit
while the connection, and so the lock, is alive: a coordinator that lost its lease
(cut off from the database, then reconnected) can never write another event into a
log that its successor now drives.

Only PostgreSQL has leases; SQLite allows one coordinator per database file and needs
none (:func:`open_lease` answers None).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from shoal._errors import ShoalError
from shoal._store.sql import SQLStore, append_events

__all__ = ["Lease", "LeaseLost", "open_lease"]

log = logging.getLogger("shoal.coordinator")

#: A query on the lease connection gives up after this long (bounded waits).
STATEMENT_TIMEOUT_MS = 10_000
#: TCP keepalives of the lease connection: a silent database is noticed in
#: idle + interval * count seconds, and then the lease counts as lost.
KEEPALIVE = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3}
#: PostgreSQL keeps at most 63 bytes of an application name.
APP_NAME_MAX = 63
_APP_PREFIX = "shoal "


class LeaseLost(ShoalError):
    """This coordinator no longer holds the lease (its connection to the database broke,
    or the lock is gone): it must stop driving the engine at once."""

    code = "coord.lease_lost"


def _key(database: str, schema: str) -> int:
    """The lock key of one shoal database (its schema: tests keep several in one
    database, and advisory locks are per database)."""
    digest = hashlib.sha256(f"shoal.lease\x1f{database}\x1f{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


class Lease:
    """The active coordinator's lease on a PostgreSQL database.

    Parameters
    ----------
    url
        The store's database URL (PostgreSQL).
    advertise
        The URL at which this coordinator serves (shown to standbys as the active one's
        address, through the lease connection's ``application_name``; at most 57
        characters are kept).

    Raises
    ------
    ShoalError
        ``store.unavailable`` if the database cannot be reached.
    """

    def __init__(self, url: sa.engine.URL, advertise: str = "") -> None:
        app = (_APP_PREFIX + advertise)[:APP_NAME_MAX]
        self._engine = sa.create_engine(
            url, poolclass=NullPool, connect_args={"application_name": app, **KEEPALIVE}
        )
        self._lock = threading.Lock()  # one statement at a time on the connection
        self._held = False
        self._lost = False
        try:
            self._conn = self._engine.connect()
            self._conn.execute(sa.text(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}"))
            database, schema = self._conn.execute(
                sa.text("SELECT current_database(), current_schema()")
            ).one()
            self._conn.commit()
        except sa.exc.OperationalError as exc:
            self._engine.dispose()
            raise ShoalError(
                f"cannot open the lease connection to {url.render_as_string()}: {exc.orig or exc}",
                code="store.unavailable",
                hint="check that the database server runs and the URL is right",
            ) from None
        self.key = _key(str(database), str(schema))
        self._ids = {"hi": (self.key >> 32) & 0xFFFF_FFFF, "lo": self.key & 0xFFFF_FFFF}

    @property
    def held(self) -> bool:
        """Whether this coordinator took the lease and has not lost it."""
        return self._held and not self._lost

    def _query(self, sql: str, **params: Any) -> Any:
        """One statement on the lease connection, committed; a broken connection means
        the lease is lost (if it was held)."""
        with self._lock:
            if self._lost:
                raise LeaseLost("the lease connection broke earlier")
            try:
                value = self._conn.execute(sa.text(sql), params).scalar()
                self._conn.commit()
            except sa.exc.DBAPIError as exc:
                self._broken(exc)
                raise LeaseLost(
                    f"the lease connection to the database broke: {exc.orig or exc}",
                    hint="this coordinator stops; a standby takes over",
                ) from None
            return value

    def _broken(self, exc: Exception) -> None:
        if self._held:
            self._lost = True
            log.error("lost the coordinator lease: %s", exc)
        try:
            self._conn.rollback()
        except sa.exc.DBAPIError:
            self._lost = self._lost or self._held

    def try_acquire(self) -> bool:
        """Take the lease if nobody holds it; never waits. True if held afterwards."""
        if self._held:
            return self.held
        self._held = bool(self._query("SELECT pg_try_advisory_lock(:k)", k=self.key))
        return self._held

    def check(self) -> bool:
        """Whether the lease is still held: the connection answers and the lock is
        listed as ours. A False answer is final (the lease is lost)."""
        if not self.held:
            return False
        try:
            mine = self._query(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND pid = pg_backend_pid() AND classid = :hi AND objid = :lo "
                "AND objsubid = 1",
                **self._ids,
            )
        except LeaseLost:
            return False
        if not mine:
            self._lost = True
            log.error("lost the coordinator lease: the lock is no longer held")
        return self.held

    def holder(self) -> str | None:
        """The advertised URL of the coordinator holding the lease (None: nobody, or it
        advertised none)."""
        name = self._query(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a "
            "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
            "AND l.classid = :hi AND l.objid = :lo AND l.objsubid = 1 LIMIT 1",
            **self._ids,
        )
        if not isinstance(name, str) or not name.startswith(_APP_PREFIX):
            return None
        return name[len(_APP_PREFIX) :] or None

    def append_event(self, *payloads: bytes) -> int:
        """Append engine events on the lease connection, in one transaction; return the
        last one's sequence number.

        Raises
        ------
        LeaseLost
            If the lease is not held (never taken, or lost): nothing was written.
        """
        with self._lock:
            if not self.held:
                raise LeaseLost(
                    "this coordinator does not hold the lease: it may not write events",
                    hint="only the active coordinator drives the engine",
                )
            try:
                seq = append_events(self._conn, payloads, pg=True)
                self._conn.commit()
            except sa.exc.DBAPIError as exc:
                self._broken(exc)
                raise LeaseLost(
                    f"appending an event on the lease connection failed: {exc.orig or exc}",
                    hint="this coordinator stops; a standby takes over",
                ) from None
            return seq

    def close(self) -> None:
        """Give the lease back (closing its connection releases the lock)."""
        with self._lock:
            self._held = False
            with contextlib.suppress(sa.exc.DBAPIError):
                self._conn.close()
            self._engine.dispose()


def open_lease(store: object, advertise: str = "") -> Lease | None:
    """A lease on the store's database if it is PostgreSQL; None otherwise (SQLite and
    memory stores serve one coordinator)."""
    if not isinstance(store, SQLStore) or store.url.get_backend_name() != "postgresql":
        return None
    return Lease(store.url, advertise)
