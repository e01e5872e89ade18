"""Store backends for the contract suite: memory, SQLite, PostgreSQL.

PostgreSQL comes from the ``postgres_url`` fixture (:mod:`helpers.postgres`, which says
where the server comes from). Each test gets its own schema, dropped afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers.postgres import admin, schema_url

from shoal._store.base import Store
from shoal._store.memory import MemoryStore
from shoal._store.sql import SQLStore


class Backend:
    """Opens isolated stores of one kind; closes and removes them at teardown."""

    def __init__(self, name: str, base: Path, pg_url: str | None = None) -> None:
        self.name = name
        self._base = base
        self._pg_url = pg_url
        self._stores: list[Store] = []
        self._schemas: list[str] = []

    @property
    def durable(self) -> bool:
        return self.name != "memory"

    def new_url(self) -> str:
        """The URL of a new, empty database (SQL backends)."""
        if self.name == "sqlite":
            return f"sqlite:///{self._base / f'store-{uuid.uuid4().hex[:12]}.db'}"
        assert self.name == "postgresql" and self._pg_url is not None
        schema = f"t_{uuid.uuid4().hex[:16]}"
        admin(self._pg_url, f"CREATE SCHEMA {schema}")
        self._schemas.append(schema)
        return schema_url(self._pg_url, schema)

    def open(self, url: str | None = None) -> Store:
        """A store on ``url`` (default: a new database)."""
        store: Store = MemoryStore() if self.name == "memory" else SQLStore(url or self.new_url())
        self._stores.append(store)
        return store

    def close(self) -> None:
        for store in self._stores:
            store.close()  # type: ignore[attr-defined]
        if self._pg_url is not None:
            for schema in self._schemas:
                admin(self._pg_url, f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def make_backend(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[str], Backend]]:
    """``make_backend(name)``: a Backend, closed at teardown."""
    made: list[Backend] = []

    def make(name: str) -> Backend:
        pg = request.getfixturevalue("postgres_url") if name == "postgresql" else None
        backend = Backend(name, tmp_path, pg)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, make_backend: Callable[[str], Backend]) -> Backend:
    """Every backend."""
    return make_backend(request.param)


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_backend(request: pytest.FixtureRequest, make_backend: Callable[[str], Backend]) -> Backend:
    """The SQL backends."""
    return make_backend(request.param)


@pytest.fixture
def store(backend: Backend) -> Store:
    """A fresh store of every backend."""
    return backend.open()
