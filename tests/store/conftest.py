"""Store backends for the contract suite: memory, SQLite, PostgreSQL.

PostgreSQL: ``SHOAL_TEST_POSTGRES_URL`` if set (CI sets it with ``.ci/postgres.sh``);
otherwise a throwaway cluster is started once per session from the server binaries
found on PATH or under /usr/lib/postgresql/*/bin (as the ``postgres`` or ``nobody``
user when running as root); otherwise the PostgreSQL tests are skipped, saying why
(they fail instead when ``CI`` is set). Each test gets its own schema, dropped afterwards.
"""

from __future__ import annotations

import glob
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shoal._store.base import Store
from shoal._store.memory import MemoryStore
from shoal._store.sql import SQLStore

PG_ENV = "SHOAL_TEST_POSTGRES_URL"
_WAIT_S = 60  # bound on every wait for the throwaway server


def _pg_bin() -> Path | None:
    found = shutil.which("initdb")
    if found and (Path(found).resolve().parent / "pg_ctl").exists():
        return Path(found).resolve().parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _Cluster:
    """A PostgreSQL cluster in a temporary folder, listening on 127.0.0.1 only."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.user: str | None = None
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            self.user = "postgres" if _user_exists("postgres") else "nobody"
        self.dir = Path(tempfile.mkdtemp(prefix="shoal-pg-"))
        if self.user is not None:
            shutil.chown(self.dir, user=self.user)
        self.data = self.dir / "data"
        self.port = 0

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.user is not None:
            if shutil.which("runuser"):
                cmd = ["runuser", "-u", self.user, "--", *cmd]
            else:
                cmd = ["su", "-s", "/bin/sh", self.user, "-c", shlex.join(cmd)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=_WAIT_S, cwd=self.dir)
        if done.returncode != 0:
            raise RuntimeError(f"{shlex.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")

    def start(self) -> str:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--no-locale")  # fmt: skip
        last: Exception | None = None
        for _ in range(3):  # the free port may be taken between choosing and binding it
            self.port = _free_port()
            opts = f"-h 127.0.0.1 -p {self.port} -k {self.dir} -F -c max_connections=300"
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"),
                          "-w", "-t", str(_WAIT_S), "-o", opts, "start")  # fmt: skip
                return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
            except RuntimeError as exc:
                last = exc
        raise RuntimeError(f"could not start PostgreSQL: {last}")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w",
                      "-t", str(_WAIT_S), "stop")  # fmt: skip
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The URL of a PostgreSQL database the tests may create schemas in."""
    url = os.environ.get(PG_ENV)
    if url:
        yield url
        return
    bindir = _pg_bin()
    if bindir is None:
        reason = (
            f"PostgreSQL tests skipped: {PG_ENV} is not set and no PostgreSQL server "
            'binaries (initdb, pg_ctl) were found; run `eval "$(bash .ci/postgres.sh)"`'
        )
        print(reason)
        if os.environ.get("CI"):  # CI must test PostgreSQL: fail rather than skip
            pytest.fail(reason)
        pytest.skip(reason)
    cluster = _Cluster(bindir)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def _admin(url: str, sql: str) -> None:
    import psycopg

    plain = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(plain, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


@pytest.fixture
def pg_admin(postgres_url: str) -> Callable[[str], None]:
    """Run one statement on the PostgreSQL server, outside of a transaction."""
    return lambda sql: _admin(postgres_url, sql)


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
        _admin(self._pg_url, f"CREATE SCHEMA {schema}")
        self._schemas.append(schema)
        sep = "&" if "?" in self._pg_url else "?"
        return f"{self._pg_url}{sep}options=-csearch_path%3D{schema}"

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
                _admin(self._pg_url, f"DROP SCHEMA {schema} CASCADE")


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
