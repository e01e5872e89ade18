"""Fault tests: a coordinator and node agents as real processes on loopback, hurt on
purpose (SIGKILL, restarts, network cuts through a proxy, hung tasks).

Every test gets a :class:`~fault_harness.Fed` from the ``fed`` fixture. At teardown
every process the test started is killed (its whole process group), and any process
still running under the test's folder (an orphaned task) fails the test after being
killed.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from fault_harness import Fed, reap


@pytest.fixture
def fed(tmp_path: Path) -> Iterator[Fed]:
    """A federation of real processes; all of them are gone after the test."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the fault tests read /proc to check that no process is left")
    f = Fed(tmp_path)
    try:
        yield f
    finally:
        f.close()
        left = reap(tmp_path)
    assert not left, f"processes left running after the test (killed now): {left}"


# -------------------------------------------------------------------- PostgreSQL


def _store_conftest() -> ModuleType:
    """tests/store/conftest.py, for its PostgreSQL helpers (one mechanism for both)."""
    path = Path(__file__).parents[1] / "store" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_shoal_faults_store_helpers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[tuple[str, Callable[[str], None]]]:
    """``(url, admin)`` of a PostgreSQL server: ``SHOAL_TEST_POSTGRES_URL`` (CI), else a
    throwaway cluster from local server binaries, else the tests are skipped (failed
    when ``CI`` is set), saying why."""
    helpers = _store_conftest()
    url = os.environ.get(helpers.PG_ENV)
    if url:
        yield url, lambda sql: helpers._admin(url, sql)
        return
    bindir = helpers._pg_bin()
    if bindir is None:
        reason = (
            f"PostgreSQL fault tests skipped: {helpers.PG_ENV} is not set and no PostgreSQL "
            'server binaries were found; run `eval "$(bash .ci/postgres.sh)"`'
        )
        print(reason)
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    cluster = helpers._Cluster(bindir)
    try:
        started = cluster.start()
        yield started, lambda sql: helpers._admin(started, sql)
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A new, empty database of each SQL kind the coordinator supports."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shoal.db'}"
        return
    url, admin = request.getfixturevalue("postgres_server")
    schema = f"faults_{uuid.uuid4().hex[:12]}"
    admin(f"CREATE SCHEMA {schema}")
    try:
        sep = "&" if "?" in url else "?"
        yield f"{url}{sep}options=-csearch_path%3D{schema}"
    finally:
        admin(f"DROP SCHEMA {schema} CASCADE")
