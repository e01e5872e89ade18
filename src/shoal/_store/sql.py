"""The SQL store: SQLite (embedded default) or PostgreSQL, through SQLAlchemy Core.

Every method runs one short transaction and commits it before returning; the store is
safe to share between threads (one engine, a pool of connections). Wire values are
stored as msgpack bytes, the records' tuple and dict fields as JSON.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgpack
import sqlalchemy as sa

from shoal._errors import ShoalError
from shoal._store import schema as t
from shoal._store.base import (
    JoinTokenRecord,
    LogRow,
    MetricRow,
    NodeRecord,
    ResultRow,
    SwarmRecord,
    check_blob_kind,
    contiguous,
    swarm_exists,
    swarm_missing,
)
from shoal._store.migrate import upgrade_connection
from shoal._store.spill import SPILL_MIN, ValueFiles, is_ref
from shoal._store.sqlengine import WRITE_OPTION, is_sqlite_memory, make_engine, normalize_url
from shoal._store.statements import dialect_insert, statements
from shoal._wire import Wire

__all__ = ["SQLStore"]

# PostgreSQL advisory lock keys (SQLite needs none: a write transaction holds the whole
# database). Appends take a lock so that sequence numbers are committed in order: a
# reader paging with ``after`` can then never skip a row that commits late.
_LOCK_EVENTS = 0x73686F616C_10
_LOCK_LOGS = 0x73686F616C_11
_LOCK_QUOTA = 0x73686F616C_12

_PAGE = 1000  # events read per query
_IN_CHUNK = 500  # ids per IN (...) list


def _sqlite_path(url: sa.engine.URL) -> Path | None:
    """The file of a SQLite URL (None: PostgreSQL, in-memory, or a ``file:`` URI)."""
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or is_sqlite_memory(url):
        return None
    if database.startswith("file:") or url.query.get("uri"):
        return None
    return Path(database)


def _prepare_sqlite_file(url: sa.engine.URL, create: bool) -> None:
    """Refuse an empty SQLite file; make a missing one with its header in place."""
    path = _sqlite_path(url)
    if path is None:
        return
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        _create_sqlite_file(path)
        return
    except OSError:
        return  # SQLite says what is wrong when it opens the file (store.unavailable)
    if size == 0 and not create:
        raise ShoalError(
            f"the database file {path} is empty (0 bytes): shoal never leaves an empty "
            "database file, so it was truncated or replaced, and starting on it would "
            "start with no nodes, swarms or history",
            code="store.empty_file",
            hint="restore the file from a backup; to start a new, empty coordinator "
            "instead, delete the file: shoal creates a missing one",
        )


def _create_sqlite_file(path: Path) -> None:
    """Create a new SQLite database at ``path`` atomically.

    SQLite itself creates a missing file empty and writes its header a moment later;
    another opener that looked in between would take it for a truncated database. So
    the header is written in a temporary file, which is then linked into place (a link
    never replaces a file that another opener made first).
    """
    if not path.parent.is_dir():
        return  # SQLite says so when it opens the file (store.unavailable)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.new")
    try:
        conn = sqlite3.connect(tmp)
        try:
            conn.execute("PRAGMA journal_mode = WAL")  # writes the header
        finally:
            conn.close()
        with contextlib.suppress(FileExistsError):  # another opener made it first
            os.link(tmp, path)
    except (OSError, sqlite3.Error):
        pass  # no links here, or no room: SQLite creates the file as it opens it
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            leftover.unlink(missing_ok=True)


def _pack(value: Wire) -> bytes:
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


def _unpack(data: bytes) -> Wire:
    value: Wire = msgpack.unpackb(data, raw=False)
    return value


class SQLStore:
    """A :class:`~shoal._store.base.Store` in a SQL database.

    Opening a store creates or upgrades its schema (the migrations ship with shoal).

    A SQLite file that does not exist is created (atomically, so that no other opener
    ever sees it empty). A SQLite file's large result values (64 KiB or more) are kept
    in files in the folder ``<file>-values`` beside it (``shoal._store.spill``): the
    two are one backup. A SQLite file that exists but is empty (0 bytes) is refused:
    shoal never leaves one, so it was truncated or replaced, and opening it would start
    an empty coordinator without a word.

    Parameters
    ----------
    url
        ``sqlite:///path/to/shoal.db`` (``sqlite://``: a private in-memory database),
        or ``postgresql://user:password@host:port/db`` (psycopg 3; the URL may name it
        as ``postgresql+psycopg://``).
    create
        Make a new database in an empty (0-byte) SQLite file instead of refusing it.

    Raises
    ------
    ShoalError
        ``store.url`` for an unsupported URL, ``store.driver`` if psycopg is missing
        for PostgreSQL, ``store.unavailable`` if the database cannot be reached,
        ``store.empty_file`` for an empty SQLite file (without ``create``).
    """

    def __init__(self, url: str, *, create: bool = False) -> None:
        self.url = normalize_url(url)
        _prepare_sqlite_file(self.url, create)
        self._pg = self.url.get_backend_name() == "postgresql"
        path = _sqlite_path(self.url)
        self._files = None if path is None else ValueFiles(path.with_name(f"{path.name}-values"))
        self._q = statements(self._pg)
        # A private in-memory SQLite database is one connection: take turns on it.
        self._serial: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if is_sqlite_memory(self.url) else contextlib.nullcontext()
        )
        # SQLite has one writer at a time, and a writer that finds the lock taken polls
        # it with sleeps of up to 100 ms (its busy handler): with many threads writing,
        # a write then waited seconds (coordinator load test, bench/README.md). This
        # process's threads take turns on a lock instead; the busy timeout still covers
        # other processes. PostgreSQL and a private in-memory database need none.
        self._writer: contextlib.AbstractContextManager[Any] = (
            threading.Lock()
            if not self._pg and not is_sqlite_memory(self.url)
            else contextlib.nullcontext()
        )
        self._engine = make_engine(self.url)
        try:
            with self._serial, self._engine.connect() as conn:
                upgrade_connection(conn)
        except sa.exc.OperationalError as exc:
            self._engine.dispose()
            raise ShoalError(
                f"cannot open the database {self._shown()}: {exc.orig or exc}",
                code="store.unavailable",
                hint="check that the database server runs and the URL is right",
            ) from None
        except BaseException:
            self._engine.dispose()
            raise

    def _shown(self) -> str:
        return self.url.render_as_string(hide_password=True)

    def __repr__(self) -> str:
        return f"SQLStore({self._shown()!r})"

    def close(self) -> None:
        """Close every pooled connection (the store must not be used afterwards)."""
        self._engine.dispose()

    def __enter__(self) -> SQLStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- plumbing
    @contextlib.contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        with self._serial, self._engine.connect() as conn, conn.begin():
            yield conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        with self._writer, self._serial, self._engine.connect() as conn:
            conn.execution_options(**{WRITE_OPTION: True})  # SQLite: BEGIN IMMEDIATE
            with conn.begin():
                yield conn

    def _insert(self, table: sa.Table) -> Any:
        return dialect_insert(self._pg, table)

    def _upsert(
        self, conn: sa.Connection, table: sa.Table, keys: list[str], values: Mapping[str, Any]
    ) -> None:
        stmt = self._insert(table).values(**values)
        update = {c: stmt.excluded[c] for c in values if c not in keys}
        if update:
            stmt = stmt.on_conflict_do_update(index_elements=keys, set_=update)
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=keys)
        conn.execute(stmt)

    def _lock(self, conn: sa.Connection, key: int) -> None:
        if self._pg:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})

    def _lock_iteration(self, conn: sa.Connection, swarm_id: str, it: int, shared: bool) -> None:
        # result_add (shared) and drop_results (exclusive) of one iteration exclude each
        # other, so a result can never land after its iteration was dropped.
        if self._pg:
            fn = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
            conn.execute(
                sa.text(f"SELECT {fn}(hashtextextended(:k, 0))"),
                {"k": f"shoal.results\x1f{swarm_id}\x1f{it}"},
            )

    def _ordered(self, column: sa.ColumnElement[str]) -> sa.ColumnElement[str]:
        # Sort strings by code point everywhere, as Python does (PostgreSQL's default
        # collation would put "B" after "a").
        return column.collate("C") if self._pg else column

    # -------------------------------------------------------------------- nodes
    def node_upsert(self, node: NodeRecord) -> None:
        """Create or replace a node (``info`` must be JSON-representable)."""
        values = {
            "node_id": node.node_id,
            "credential_hash": node.credential_hash,
            "datasets": list(node.datasets),
            "gpu": node.gpu,
            "images": None if node.images is None else list(node.images),
            "last_seen": node.last_seen,
            "connected": node.connected,
            "info": node.info,
            "revoked": node.revoked,
        }
        with self._write() as conn:
            self._upsert(conn, t.nodes, ["node_id"], values)

    def node_get(self, node_id: str) -> NodeRecord | None:
        """A node, or None."""
        with self._read() as conn:
            row = conn.execute(sa.select(t.nodes).where(t.nodes.c.node_id == node_id)).first()
        return None if row is None else _node(row)

    def nodes(self) -> list[NodeRecord]:
        """Every node, sorted by id."""
        with self._read() as conn:
            rows = conn.execute(sa.select(t.nodes).order_by(self._ordered(t.nodes.c.node_id)))
            return [_node(r) for r in rows]

    # -------------------------------------------------------------- join tokens
    def join_token_put(self, token: JoinTokenRecord) -> None:
        """Create or replace a join token (by ``token_id``)."""
        values = dataclasses.asdict(token)
        try:
            with self._write() as conn:
                self._upsert(conn, t.join_tokens, ["token_id"], values)
        except sa.exc.IntegrityError:
            raise ShoalError(
                "another join token has the same secret",
                code="store.exists",
                hint="make a new secret for the token",
            ) from None

    def join_token_get(self, token_id: str) -> JoinTokenRecord | None:
        """A join token by id, or None."""
        j = t.join_tokens
        with self._read() as conn:
            row = conn.execute(sa.select(j).where(j.c.token_id == token_id)).first()
        return None if row is None else _join_token(row)

    def join_token_find(self, token_hash: str) -> JoinTokenRecord | None:
        """The join token whose secret hashes to ``token_hash``, or None."""
        j = t.join_tokens
        with self._read() as conn:
            row = conn.execute(sa.select(j).where(j.c.token_hash == token_hash)).first()
        return None if row is None else _join_token(row)

    def join_tokens(self) -> list[JoinTokenRecord]:
        """Every join token, oldest first (ties: by id)."""
        j = t.join_tokens
        with self._read() as conn:
            rows = conn.execute(sa.select(j).order_by(j.c.created, self._ordered(j.c.token_id)))
            return [_join_token(r) for r in rows]

    def join_token_use(self, token_id: str, now: float) -> bool:
        """Count one use of a token if it is usable at ``now``, in one UPDATE (so that
        concurrent uses never exceed ``max_uses``); False otherwise."""
        j = t.join_tokens
        stmt = (
            sa.update(j)
            .where(
                j.c.token_id == token_id,
                j.c.revoked.is_(None),
                sa.or_(j.c.expires.is_(None), j.c.expires > now),
                sa.or_(j.c.max_uses.is_(None), j.c.uses < j.c.max_uses),
            )
            .values(uses=j.c.uses + 1)
        )
        with self._write() as conn:
            return conn.execute(stmt).rowcount == 1

    def join_token_revoke(self, token_id: str, now: float) -> bool:
        """Revoke a token; False if no token has this id."""
        j = t.join_tokens
        with self._write() as conn:
            conn.execute(
                sa.update(j)
                .where(j.c.token_id == token_id, j.c.revoked.is_(None))
                .values(revoked=now)
            )
            found = conn.execute(sa.select(j.c.token_id).where(j.c.token_id == token_id))
            return found.first() is not None

    # ------------------------------------------------------------------- swarms
    def swarm_create(self, swarm: SwarmRecord) -> None:
        """Record a new swarm (an existing id raises ``ShoalError`` ``store.exists``)."""
        try:
            with self._write() as conn:
                conn.execute(
                    sa.insert(t.swarms).values(
                        swarm_id=swarm.swarm_id,
                        name=swarm.name,
                        plan=swarm.plan,
                        owner=swarm.owner,
                        created=swarm.created,
                        status=swarm.status,
                        reason=swarm.reason,
                        iteration=swarm.iteration,
                    )
                )
        except sa.exc.IntegrityError:
            raise swarm_exists(swarm.swarm_id) from None

    def swarm_update(self, swarm_id: str, status: str, reason: str, iteration: int) -> None:
        """Update a swarm's status, reason and current iteration.

        Raises
        ------
        ShoalError
            ``store.missing`` if no swarm has this id.
        """
        with self._write() as conn:
            done = conn.execute(
                sa.update(t.swarms)
                .where(t.swarms.c.swarm_id == swarm_id)
                .values(status=status, reason=reason, iteration=iteration)
            )
            if done.rowcount == 0:
                raise swarm_missing(swarm_id)

    def swarm_get(self, swarm_id: str) -> SwarmRecord | None:
        """A swarm, or None."""
        with self._read() as conn:
            row = conn.execute(sa.select(t.swarms).where(t.swarms.c.swarm_id == swarm_id)).first()
        return None if row is None else _swarm(row)

    def swarms(self) -> list[SwarmRecord]:
        """Every swarm, newest first (ties: greater id first)."""
        query = sa.select(t.swarms).order_by(
            t.swarms.c.created.desc(), self._ordered(t.swarms.c.swarm_id).desc()
        )
        with self._read() as conn:
            return [_swarm(r) for r in conn.execute(query)]

    # ---------------------------------------------------------------- event log
    def event_append(self, *payloads: bytes) -> int:
        """Append encoded engine events, in order and in one transaction; returns the
        last one's sequence number (1, 2, ...)."""
        with self._write() as conn:
            return append_events(conn, payloads, self._pg)

    def events(self, after: int = 0) -> Iterator[tuple[int, bytes]]:
        """Events with a sequence number greater than ``after``, in order.

        The events are those appended before the call; they are read a page at a time,
        so a long log is never held in memory.
        """
        with self._read() as conn:
            last = conn.execute(sa.select(sa.func.max(t.events.c.seq))).scalar()
        return contiguous(self._event_pages(after, int(last or 0)), after, self._shown())

    def check_events(self) -> None:
        """Check that the event log has no gap, before anything replays it.

        One query in the normal case (``count == max``); a log that fails it is read up
        to its first gap. :meth:`events` checks the same while it is read.

        Raises
        ------
        ShoalError
            ``store.event_gap``, naming the first missing number.
        """
        seq = t.events.c.seq
        with self._read() as conn:
            count, last = conn.execute(sa.select(sa.func.count(), sa.func.max(seq))).one()
        if count != (last or 0):
            for _ in self.events():
                pass

    def _event_pages(self, after: int, last: int) -> Iterator[tuple[int, bytes]]:
        while after < last:
            query = (
                sa.select(t.events.c.seq, t.events.c.payload)
                .where(t.events.c.seq > after, t.events.c.seq <= last)
                .order_by(t.events.c.seq)
                .limit(_PAGE)
            )
            with self._read() as conn:
                rows = conn.execute(query).all()
            if not rows:
                return
            for seq, payload in rows:
                yield int(seq), bytes(payload)
            after = int(rows[-1][0])

    # ------------------------------------------------------------------ globals
    def global_get(self, swarm_id: str, key: str) -> tuple[str, Wire] | None:
        """Current version and value of a global."""
        with self._read() as conn:
            row = conn.execute(self._q.global_get, {"swarm_id": swarm_id, "key": key}).first()
        return None if row is None else (row.version, _unpack(row.value))

    def global_set(self, swarm_id: str, key: str, value: Wire, iteration: int) -> str:
        """Write a global; returns its new version (a random 128-bit hex string).

        The history keeps the last value written in each iteration.
        """
        version = uuid.uuid4().hex
        data = _pack(value)
        with self._write() as conn:
            self._upsert(
                conn,
                t.globals_,
                ["swarm_id", "key"],
                {"swarm_id": swarm_id, "key": key, "version": version, "value": data},
            )
            self._upsert(
                conn,
                t.global_history,
                ["swarm_id", "key", "iteration"],
                {"swarm_id": swarm_id, "key": key, "iteration": iteration, "value": data},
            )
        return version

    def global_keys(self, swarm_id: str) -> list[str]:
        """Every global key of a swarm, sorted."""
        g = t.globals_
        query = sa.select(g.c.key).where(g.c.swarm_id == swarm_id).order_by(self._ordered(g.c.key))
        with self._read() as conn:
            return list(conn.execute(query).scalars())

    def global_versions(self, swarm_id: str) -> dict[str, str]:
        """``{key: version}`` of every global of a swarm."""
        with self._read() as conn:
            rows = conn.execute(self._q.global_versions, {"swarm_id": swarm_id})
            return {r.key: r.version for r in rows}

    def global_history(self, swarm_id: str, key: str) -> list[tuple[int, Wire]]:
        """``[(iteration, value)]`` in iteration order (-1: the initial value)."""
        h = t.global_history
        query = (
            sa.select(h.c.iteration, h.c.value)
            .where(h.c.swarm_id == swarm_id, h.c.key == key)
            .order_by(h.c.iteration)
        )
        with self._read() as conn:
            return [(int(r.iteration), _unpack(r.value)) for r in conn.execute(query)]

    # ------------------------------------------------------------------ results
    def result_add(self, row: ResultRow) -> None:
        """Store a result; replaces the one with the same (instance, tag) in place.
        Ignored if the iteration's results were dropped."""
        data = _pack(row.value)
        files = self._files
        if files is not None and len(data) >= SPILL_MIN:  # outside the writer lock
            data = files.write(row.swarm_id, row.iteration, data)
        values = {
            "swarm_id": row.swarm_id,
            "iteration": row.iteration,
            "alias": row.alias,
            "node_id": row.node_id,
            "instance_id": row.instance_id,
            "tag": row.tag,
            "value": data,
        }
        new = data if files is not None and is_ref(data) else None
        old: bytes | None = None
        stored = False
        try:
            with self._write() as conn:
                self._lock_iteration(conn, row.swarm_id, row.iteration, shared=True)
                where = {"swarm_id": row.swarm_id, "iteration": row.iteration}
                if conn.execute(self._q.result_dropped, where).first() is None:
                    if files is not None:  # the value it replaces may name a file
                        key = {"instance_id": row.instance_id, "tag": row.tag}
                        old = conn.execute(self._q.result_ref, key).scalar()
                    conn.execute(self._q.result_upsert, values)
                    stored = True
        except BaseException:
            if files is not None and new is not None:
                files.remove(new)
            raise
        if files is not None:  # after the commit: the rows name the files they need
            for unused in (None if stored else new, old):
                if unused is not None and is_ref(unused):
                    files.remove(unused)

    def results_of_instances(self, instance_ids: list[str], tag: str) -> list[ResultRow]:
        """Results with ``tag`` of these instances, in the given order."""
        r = t.results
        found: dict[str, ResultRow] = {}
        wanted = list(dict.fromkeys(instance_ids))
        with self._read() as conn:
            for i in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[i : i + _IN_CHUNK]
                rows = conn.execute(sa.select(r).where(r.c.tag == tag, r.c.instance_id.in_(chunk)))
                found.update((x.instance_id, self._result(x)) for x in rows)
        return [found[i] for i in instance_ids if i in found]

    def results_of_task(
        self, swarm_id: str, iteration: int, alias: str, tag: str
    ) -> list[ResultRow]:
        """Every result with ``tag`` of a task in an iteration, sorted by node id."""
        r = t.results
        query = (
            sa.select(r)
            .where(
                r.c.swarm_id == swarm_id,
                r.c.iteration == iteration,
                r.c.alias == alias,
                r.c.tag == tag,
            )
            .order_by(self._ordered(r.c.node_id), self._ordered(r.c.instance_id))
        )
        with self._read() as conn:
            return [self._result(x) for x in conn.execute(query)]

    def result_tags(self, swarm_id: str, iteration: int, alias: str) -> list[str]:
        """The tags a task stored in an iteration, in first-stored order."""
        r = t.results
        first = sa.func.min(r.c.id)
        query = (
            sa.select(r.c.tag)
            .where(r.c.swarm_id == swarm_id, r.c.iteration == iteration, r.c.alias == alias)
            .group_by(r.c.tag)
            .order_by(first)
        )
        with self._read() as conn:
            return list(conn.execute(query).scalars())

    def drop_results(self, swarm_id: str, iteration: int) -> None:
        """Forget every result of an iteration (and ignore any that arrive later)."""
        r = t.results
        with self._write() as conn:
            self._lock_iteration(conn, swarm_id, iteration, shared=False)
            self._upsert(
                conn,
                t.dropped,
                ["swarm_id", "iteration"],
                {"swarm_id": swarm_id, "iteration": iteration},
            )
            conn.execute(sa.delete(r).where(r.c.swarm_id == swarm_id, r.c.iteration == iteration))
        if self._files is not None:
            self._files.remove_iteration(swarm_id, iteration)

    def _result(self, r: sa.Row[Any]) -> ResultRow:
        data = r.value
        if is_ref(data):
            if self._files is None:  # a SQLite file's rows, copied into another database
                raise ShoalError(
                    f"result {r.tag!r} of {r.instance_id} names a value file, and this "
                    "store keeps none",
                    code="store.value_missing",
                    hint="open the SQLite file it was written to, with its -values folder",
                )
            data = self._files.read(data)
        return ResultRow(
            swarm_id=r.swarm_id,
            iteration=int(r.iteration),
            alias=r.alias,
            node_id=r.node_id,
            instance_id=r.instance_id,
            tag=r.tag,
            value=_unpack(data),
        )

    def dropped(self, swarm_id: str, iteration: int) -> bool:
        """Whether an iteration's results were dropped."""
        d = t.dropped
        query = sa.select(d.c.iteration).where(d.c.swarm_id == swarm_id, d.c.iteration == iteration)
        with self._read() as conn:
            return conn.execute(query).first() is not None

    # -------------------------------------------------------------------- state
    def state_get(self, swarm_id: str, node_id: str, alias: str, key: str) -> Wire | None:
        """Per (swarm, node, alias) state."""
        s = t.state
        query = sa.select(s.c.value).where(
            s.c.swarm_id == swarm_id, s.c.node_id == node_id, s.c.alias == alias, s.c.key == key
        )
        with self._read() as conn:
            data = conn.execute(query).scalar()
        return None if data is None else _unpack(data)

    def state_set(self, swarm_id: str, node_id: str, alias: str, key: str, value: Wire) -> None:
        """Persist per (swarm, node, alias) state."""
        values = {
            "swarm_id": swarm_id,
            "node_id": node_id,
            "alias": alias,
            "key": key,
            "value": _pack(value),
        }
        with self._write() as conn:
            self._upsert(conn, t.state, ["swarm_id", "node_id", "alias", "key"], values)

    # -------------------------------------------------------------------- blobs
    def blob_claim(self, digest: str, swarm_id: str, kind: str, length: int = 0) -> None:
        """Record that a blob belongs to a swarm as a ``"bundle"`` or a ``"value"``."""
        check_blob_kind(kind)
        with self._write() as conn:  # a repeat keeps the first length
            if kind == "value":
                self._lock(conn, _LOCK_QUOTA)
            self._claim(conn, digest, swarm_id, kind, length)

    def _claim(
        self, conn: sa.Connection, digest: str, swarm_id: str, kind: str, length: int
    ) -> None:
        """Insert a claim; a new value claim adds its length to the swarm's bytes."""
        values = {"digest": digest, "swarm_id": swarm_id, "kind": kind, "length": length}
        new = conn.execute(self._q.claim_insert, values).first() is not None
        if new and kind == "value":
            conn.execute(self._q.value_bytes_add, {"swarm_id": swarm_id, "bytes": length})

    def swarm_blob_bytes(self, swarm_id: str) -> int:
        """The bytes of the distinct value blobs claimed by a swarm."""
        with self._read() as conn:
            used = conn.execute(self._q.value_bytes, {"swarm_id": swarm_id}).scalar()
        return int(used or 0)

    def value_claim(self, digest: str, swarm_id: str, length: int, quota: int | None) -> int | None:
        """Claim a value blob for a swarm within its quota, in one transaction (see
        :class:`~shoal._store.base.Store`): two lookups by key and the inserts, whatever
        the number of values the swarm claimed before."""
        key = {"digest": digest, "swarm_id": swarm_id, "kind": "value"}
        with self._write() as conn:
            # PostgreSQL: two claims of one swarm must not both pass the check.
            self._lock(conn, _LOCK_QUOTA)
            if conn.execute(self._q.claim_held, key).first() is not None:
                return None
            if quota is not None:
                used = conn.execute(self._q.value_bytes, {"swarm_id": swarm_id}).scalar()
                if (wanted := int(used or 0) + length) > quota:
                    return wanted
            self._claim(conn, digest, swarm_id, "value", length)
            return None

    def blob_claims(self, digest: str) -> list[tuple[str, str]]:
        """``[(swarm_id, kind)]`` of a blob, sorted."""
        c = t.blob_claims
        query = sa.select(c.c.swarm_id, c.c.kind).where(c.c.digest == digest)
        with self._read() as conn:
            return sorted((r.swarm_id, r.kind) for r in conn.execute(query))

    def blob_grant(self, digest: str, holder: str, swarm_id: str = "") -> None:
        """Record that ``holder`` has the blob (given under ``swarm_id``, or uploaded)."""
        values = {"digest": digest, "holder": holder, "swarm_id": swarm_id}
        with self._write() as conn:
            self._upsert(conn, t.blob_grants, ["digest", "holder", "swarm_id"], values)

    def blob_granted(self, digest: str, holder: str) -> list[str]:
        """The swarm ids under which ``holder`` has the blob, sorted."""
        g = t.blob_grants
        query = sa.select(g.c.swarm_id).where(g.c.digest == digest, g.c.holder == holder)
        with self._read() as conn:
            return sorted(conn.execute(query).scalars())

    # ----------------------------------------------------------- logs, metrics
    def log_add(self, row: LogRow) -> None:
        """Append a log record (its ``seq`` is assigned here: 1, 2, ... per database);
        ignored if the instance's ``ordinal`` is stored.

        PostgreSQL cannot store NUL characters in text: there a message's NULs are
        replaced by U+FFFD.
        """
        message = row.message.replace("\x00", "\ufffd") if self._pg else row.message
        with self._write() as conn:
            self._lock(conn, _LOCK_LOGS)
            seq = _next_seq(conn, t.logs.c.seq)
            stmt = self._insert(t.logs).values(
                seq=seq,
                swarm_id=row.swarm_id,
                node_id=row.node_id,
                alias=row.alias,
                iteration=row.iteration,
                instance_id=row.instance_id,
                level=row.level,
                message=message,
                time=row.time,
                ordinal=row.ordinal,
            )
            # A record sent again (its answer was lost) is stored once.
            conn.execute(stmt.on_conflict_do_nothing(index_elements=["instance_id", "ordinal"]))

    def logs(
        self,
        swarm_id: str,
        node: str | None = None,
        task: str | None = None,
        level: str | None = None,
        iteration: int | None = None,
        after: int = 0,
        limit: int | None = None,
    ) -> list[LogRow]:
        """Log records with ``seq > after``, filtered, in order (at most ``limit``)."""
        c = t.logs.c
        query = sa.select(t.logs).where(c.swarm_id == swarm_id, c.seq > after)
        if node is not None:
            query = query.where(c.node_id == node)
        if task is not None:
            query = query.where(c.alias == task)
        if level is not None:
            query = query.where(c.level == level)
        if iteration is not None:
            query = query.where(c.iteration == iteration)
        query = query.order_by(c.seq)
        if limit is not None:
            query = query.limit(max(limit, 0))
        with self._read() as conn:
            return [_log(r) for r in conn.execute(query)]

    def metric_add(self, row: MetricRow) -> None:
        """Append a metric value; ignored if the instance's ``ordinal`` is stored."""
        stmt = self._insert(t.metrics).values(
            swarm_id=row.swarm_id,
            node_id=row.node_id,
            alias=row.alias,
            iteration=row.iteration,
            instance_id=row.instance_id,
            name=row.name,
            value=row.value,
            step=row.step,
            time=row.time,
            ordinal=row.ordinal,
        )
        with self._write() as conn:
            conn.execute(stmt.on_conflict_do_nothing(index_elements=["instance_id", "ordinal"]))

    def metrics(
        self,
        swarm_id: str,
        name: str | None = None,
        node: str | None = None,
        task: str | None = None,
    ) -> list[MetricRow]:
        """Metric values, filtered, in the order they were added."""
        c = t.metrics.c
        query = sa.select(t.metrics).where(c.swarm_id == swarm_id)
        if name is not None:
            query = query.where(c.name == name)
        if node is not None:
            query = query.where(c.node_id == node)
        if task is not None:
            query = query.where(c.alias == task)
        with self._read() as conn:
            return [_metric(r) for r in conn.execute(query.order_by(c.id))]


def append_events(conn: sa.Connection, payloads: Sequence[bytes], pg: bool) -> int:
    """Append events in ``conn``'s open transaction; return the last sequence number.

    On PostgreSQL the append takes a transaction lock first, so that sequence numbers
    commit in order (the coordinator's lease appends on its own connection with this).
    """
    if not payloads:
        raise ValueError("no events to append")
    if pg:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_EVENTS})
    append, seq = statements(pg).event_append, 0
    for payload in payloads:
        # The next number and the row in one statement (the number from MAX(seq) + 1).
        seq = int(conn.execute(append, {"payload": bytes(payload)}).scalar_one())
    return seq


def _next_seq(conn: sa.Connection, column: sa.Column[Any]) -> int:
    found = conn.execute(sa.select(sa.func.max(column))).scalar()
    return int(found or 0) + 1


def _node(r: sa.Row[Any]) -> NodeRecord:
    return NodeRecord(
        node_id=r.node_id,
        credential_hash=r.credential_hash,
        datasets=tuple(r.datasets),
        gpu=bool(r.gpu),
        images=None if r.images is None else tuple(r.images),
        last_seen=float(r.last_seen),
        connected=bool(r.connected),
        info=dict(r.info),
        revoked=None if r.revoked is None else float(r.revoked),
    )


def _join_token(r: sa.Row[Any]) -> JoinTokenRecord:
    return JoinTokenRecord(
        token_id=r.token_id,
        token_hash=r.token_hash,
        created=float(r.created),
        expires=None if r.expires is None else float(r.expires),
        max_uses=None if r.max_uses is None else int(r.max_uses),
        uses=int(r.uses),
        node_id=r.node_id,
        revoked=None if r.revoked is None else float(r.revoked),
    )


def _swarm(r: sa.Row[Any]) -> SwarmRecord:
    return SwarmRecord(
        swarm_id=r.swarm_id,
        name=r.name,
        plan=r.plan,
        owner=r.owner,
        created=float(r.created),
        status=r.status,
        reason=r.reason,
        iteration=int(r.iteration),
    )


def _log(r: sa.Row[Any]) -> LogRow:
    return LogRow(
        swarm_id=r.swarm_id,
        node_id=r.node_id,
        alias=r.alias,
        iteration=int(r.iteration),
        instance_id=r.instance_id,
        level=r.level,
        message=r.message,
        time=float(r.time),
        seq=int(r.seq),
        ordinal=None if r.ordinal is None else int(r.ordinal),
    )


def _metric(r: sa.Row[Any]) -> MetricRow:
    return MetricRow(
        swarm_id=r.swarm_id,
        node_id=r.node_id,
        alias=r.alias,
        iteration=int(r.iteration),
        instance_id=r.instance_id,
        name=r.name,
        value=math.nan if r.value is None else float(r.value),
        step=int(r.step),
        time=float(r.time),
        ordinal=None if r.ordinal is None else int(r.ordinal),
    )
