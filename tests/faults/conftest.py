"""Fault tests: a coordinator and node agents as real processes on loopback, hurt on
purpose (SIGKILL, restarts, network cuts through a proxy, hung tasks).

Every test gets a :class:`~fault_harness.Fed` from the ``fed`` fixture. At teardown
every process the test started is killed (its whole process group), and any process
still running under the test's folder (an orphaned task) fails the test after being
killed.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_harness import Fed, reap
from helpers.postgres import admin, schema_url


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


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A new, empty database of each SQL kind the coordinator supports."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shoal.db'}"
        return
    url = request.getfixturevalue("postgres_url")  # helpers.postgres
    schema = f"faults_{uuid.uuid4().hex[:12]}"
    admin(url, f"CREATE SCHEMA {schema}")
    try:
        yield schema_url(url, schema)
    finally:
        admin(url, f"DROP SCHEMA {schema} CASCADE")
