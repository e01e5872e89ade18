"""PostgreSQL for any test that asks for it: a pytest plugin (registered by
``tests/conftest.py``) with the ``postgres_url`` and ``pg_admin`` fixtures.

``SHOAL_TEST_POSTGRES_URL`` if set (CI sets it with ``.ci/postgres.sh``); otherwise a
throwaway cluster is started once per session from the server binaries found on PATH or
under /usr/lib/postgresql/*/bin (as the ``postgres`` or ``nobody`` user when running as
root); otherwise the tests that need PostgreSQL are skipped, saying why (they fail
instead when ``CI`` is set). Tests isolate themselves in a schema of their own
(:func:`schema_url`).
"""

from __future__ import annotations

import glob
import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers.net import free_port

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
            self.port = free_port()
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


def admin(url: str, sql: str) -> None:
    """Run one statement on the server at ``url``, outside of a transaction."""
    import psycopg

    plain = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(plain, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


def schema_url(url: str, schema: str) -> str:
    """``url`` with ``schema`` first on the search path (create the schema first)."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


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


@pytest.fixture
def pg_admin(postgres_url: str) -> Callable[[str], None]:
    """Run one statement on the PostgreSQL server, outside of a transaction."""
    return lambda sql: admin(postgres_url, sql)
