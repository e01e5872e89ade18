"""What only the SQL store has: URLs, migrations, SQLite settings, opening and errors."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from helpers import free_port

from shoal._errors import ShoalError
from shoal._store import migrate, schema
from shoal._store.base import LogRow, NodeRecord, ResultRow, SwarmRecord
from shoal._store.sql import SQLStore
from shoal._store.sqlengine import normalize_url

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import Backend


def engine_of(store: SQLStore) -> sa.Engine:
    return store._engine


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://u:p@h:5433/db", "postgresql+psycopg"),
        ("postgres://u@h/db", "postgresql+psycopg"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg"),
        ("sqlite:///x.db", "sqlite+pysqlite"),
        ("sqlite://", "sqlite+pysqlite"),
        ("sqlite+pysqlite:////abs/x.db", "sqlite+pysqlite"),
    ],
)
def test_url_driver_chosen(url: str, driver: str) -> None:
    parsed = normalize_url(url)
    assert parsed.drivername == driver
    assert parsed.database == sa.make_url(url).database
    assert parsed.password == sa.make_url(url).password


@pytest.mark.parametrize("url", ["mysql://u@h/db", "postgresql+psycopg2://u@h/db", "not a url"])
def test_unsupported_url(url: str) -> None:
    with pytest.raises(ShoalError) as err:
        SQLStore(url)
    assert err.value.code == "store.url"


def test_migrations_match_schema(sql_backend: Backend) -> None:
    store = sql_backend.open()
    assert isinstance(store, SQLStore)
    with engine_of(store).connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"version_table": schema.VERSION_TABLE, "compare_type": True}
        )
        assert compare_metadata(ctx, schema.metadata) == []
        assert migrate.current(conn) == migrate.head()
        tables = set(sa.inspect(conn).get_table_names())
    assert tables == set(schema.metadata.tables) | {schema.VERSION_TABLE}


def test_downgrade_and_upgrade_again(sql_backend: Backend) -> None:
    url = sql_backend.new_url()
    first = sql_backend.open(url)
    first.swarm_create(SwarmRecord("s", "n", "{}", "o", 1.0))
    first.close()  # type: ignore[attr-defined]
    migrate.downgrade(url, "base")
    probe = sa.create_engine(normalize_url(url))
    try:
        with probe.connect() as conn:
            assert set(sa.inspect(conn).get_table_names()) <= {schema.VERSION_TABLE}
    finally:
        probe.dispose()
    migrate.upgrade(url)
    again = sql_backend.open(url)
    assert again.swarms() == []
    again.swarm_create(SwarmRecord("s", "n", "{}", "o", 1.0))
    assert again.swarm_get("s") is not None


def test_upgrading_to_0005_sums_the_value_claims_already_stored(sql_backend: Backend) -> None:
    """A store that claimed values before 0005 keeps its swarms' quota use: the new
    per-swarm row is the sum of each swarm's value claims (bundles do not count)."""
    url = sql_backend.new_url()
    first = sql_backend.open(url)
    first.blob_claim("sha256:" + "a" * 64, "s1", "value", 100)
    first.blob_claim("sha256:" + "b" * 64, "s1", "value", 50)
    first.blob_claim("sha256:" + "b" * 64, "s1", "bundle", 7)
    first.blob_claim("sha256:" + "a" * 64, "s2", "value", 100)
    first.close()  # type: ignore[attr-defined]
    migrate.downgrade(url, "0004")
    migrate.upgrade(url)
    again = sql_backend.open(url)
    assert again.swarm_blob_bytes("s1") == 150 and again.swarm_blob_bytes("s2") == 100
    assert again.value_claim("sha256:" + "c" * 64, "s1", 60, quota=200) == 210
    assert again.value_claim("sha256:" + "c" * 64, "s1", 50, quota=200) is None
    assert again.swarm_blob_bytes("s1") == 200


def test_reopen_is_a_no_op(sql_backend: Backend) -> None:
    url = sql_backend.new_url()
    for k in range(3):
        store = sql_backend.open(url)
        assert store.event_append(b"e") == k + 1


def test_concurrent_open_of_a_new_database(sql_backend: Backend) -> None:
    url = sql_backend.new_url()
    opened: list[SQLStore] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def open_one() -> None:
        try:
            store = sql_backend.open(url)
            store.event_append(b"x")
            with lock:
                opened.append(store)  # type: ignore[arg-type]
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [] and len(opened) == 6
    assert [s for s, _ in opened[0].events()] == [1, 2, 3, 4, 5, 6]


def test_sqlite_settings(tmp_path: Path) -> None:
    with SQLStore(f"sqlite:///{tmp_path / 'x.db'}") as store, engine_of(store).connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    assert (tmp_path / "x.db").exists()


def test_sqlite_writer_waits_for_the_write_lock(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with SQLStore(url) as store, SQLStore(url) as other:
        conn = engine_of(other).connect()
        try:
            conn.execution_options(shoal_write=True)
            held = conn.begin()  # BEGIN IMMEDIATE: another writer holds the lock
            done = threading.Event()

            def write() -> None:
                store.log_add(LogRow("s", "n", "t", 0, "i", "info", "waited", 1.0))
                done.set()

            t = threading.Thread(target=write)
            t.start()
            assert not done.wait(0.5)  # blocked, not failed
            held.commit()
            t.join(timeout=30)
            assert done.is_set()
        finally:
            conn.close()
        assert [r.message for r in store.logs("s")] == ["waited"]


def test_sqlite_in_memory_store_shared_by_threads() -> None:
    with SQLStore("sqlite://") as store:
        errors: list[BaseException] = []

        def work(k: int) -> None:
            try:
                for j in range(20):
                    store.event_append(f"{k}-{j}".encode())
                    store.node_upsert(NodeRecord(f"n{k}", "h"))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert errors == []
        assert [s for s, _ in store.events()] == list(range(1, 81))
        assert len(store.nodes()) == 4


def test_sqlite_unavailable(tmp_path: Path) -> None:
    with pytest.raises(ShoalError) as err:
        SQLStore(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'x.db'}")
    assert err.value.code == "store.unavailable"


def test_postgres_unavailable(postgres_url: str) -> None:
    port = free_port()  # nothing listens on it
    url = f"postgresql://nobody:secret@127.0.0.1:{port}/db?connect_timeout=5"
    with pytest.raises(ShoalError) as err:
        SQLStore(url)
    assert err.value.code == "store.unavailable"
    assert "secret" not in str(err.value)


def test_postgres_sorts_like_python_under_any_collation(
    postgres_url: str, pg_admin: Callable[[str], None]
) -> None:
    db = f"shoal_icu_{uuid.uuid4().hex[:12]}"
    try:
        pg_admin(
            f"CREATE DATABASE {db} TEMPLATE template0"
            " LOCALE_PROVIDER icu ICU_LOCALE 'und' LOCALE 'C'"
        )
    except Exception as exc:  # an old server or one without ICU
        pytest.skip(f"cannot create an ICU database here: {exc}")
    url = sa.make_url(postgres_url).set(database=db).render_as_string(hide_password=False)
    try:
        names = ["b", "B", "a", "A", "_x", "é"]
        with SQLStore(url) as store:
            for n in names:
                store.node_upsert(NodeRecord(n, "h"))
                store.global_set("s", n, {"inline": b""}, 0)
                store.result_add(ResultRow("s", 0, "t", n, f"i-{n}", "w", {"inline": b""}))
                store.swarm_create(SwarmRecord(n, "n", "{}", "o", 1.0))
            assert [n.node_id for n in store.nodes()] == sorted(names)
            assert store.global_keys("s") == sorted(names)
            assert [r.node_id for r in store.results_of_task("s", 0, "t", "w")] == sorted(names)
            assert [s.swarm_id for s in store.swarms()] == sorted(names, reverse=True)
    finally:
        pg_admin(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def test_log_message_with_nul(sql_backend: Backend) -> None:
    store = sql_backend.open()
    store.log_add(LogRow("s", "n", "t", 0, "i", "info", "a\x00b", 1.0))
    want = "a\ufffdb" if sql_backend.name == "postgresql" else "a\x00b"
    assert [r.message for r in store.logs("s")] == [want]


def test_postgres_without_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now fails
    with pytest.raises(ShoalError) as err:
        SQLStore("postgresql://u@127.0.0.1:1/db")
    assert err.value.code == "store.driver"
    assert "shoal[postgres]" in str(err.value)


# ------------------------------------------------- an empty file (issue #14, point 6)
def test_an_empty_database_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "shoal.db"
    path.write_bytes(b"")  # truncated, or replaced by `touch`
    with pytest.raises(ShoalError) as err:
        SQLStore(f"sqlite:///{path}")
    assert err.value.code == "store.empty_file"
    assert str(path) in err.value.message and "0 bytes" in err.value.message
    assert err.value.hint is not None
    assert "backup" in err.value.hint and "delete the file" in err.value.hint
    assert path.stat().st_size == 0 and sorted(tmp_path.iterdir()) == [path]
    with SQLStore(f"sqlite:///{path}", create=True) as store:  # told to make one there
        assert store.event_append(b"e") == 1
    with SQLStore(f"sqlite:///{path}") as store:  # a real database now
        assert [s for s, _ in store.events()] == [1]


def _open_at_once(url: str, n: int) -> tuple[list[SQLStore], list[BaseException]]:
    """Open ``n`` stores on ``url`` from ``n`` threads at the same moment."""
    stores: list[SQLStore] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(n)

    def open_one() -> None:
        start.wait(timeout=30)
        try:
            store = SQLStore(url)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)
        else:
            with lock:
                stores.append(store)

    threads = [threading.Thread(target=open_one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return stores, errors


def test_a_missing_database_file_is_created_never_empty(tmp_path: Path) -> None:
    """Another opener never sees a new file empty (and so never refuses it)."""
    for round_ in range(3):
        stores, errors = _open_at_once(f"sqlite:///{tmp_path / f'new-{round_}.db'}", 6)
        for store in stores:
            store.close()
        assert errors == [] and len(stores) == 6
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".new")]
