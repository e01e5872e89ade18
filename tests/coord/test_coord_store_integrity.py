"""A coordinator process refuses a damaged store instead of starting on it (issue #14,
point 6): an empty database file, and an event log with a gap."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from deploy_harness import free_port, kill_group
from drivers.coord_federation import CoordFederation
from drivers.test_conformance import fedavg

from shoal._store import schema
from shoal._store.sql import SQLStore

pytestmark = pytest.mark.timeout(120)


def _start(state: Path, *extra: str) -> str:
    """Run ``shoal coordinator start`` as an operator does: it must exit non-zero by
    itself (a coordinator that starts serving fails the test at once)."""
    port = free_port()
    argv = [sys.executable, "-m", "shoal", "coordinator", "start", "--state", str(state)]
    log = state.parent / f"coord-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*argv, "--port", str(port), *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).is_success:
                    pytest.fail("the coordinator started on a damaged store")
            time.sleep(0.2)
        assert proc.poll() not in (None, 0), log.read_text()
    finally:
        kill_group(proc)
    return " ".join(log.read_text().split())


def test_a_coordinator_refuses_an_empty_database_file(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    db = state / "shoal.db"
    db.write_bytes(b"")  # the default database, truncated
    out = _start(state)
    assert f"the database file {db} is empty (0 bytes)" in out
    assert "backup" in out and "Traceback" not in out
    assert db.stat().st_size == 0  # left as it was, for the operator to restore


def test_a_coordinator_refuses_an_event_log_with_a_gap(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shoal.db'}"
    store = SQLStore(url)
    fed = CoordFederation(nodes=3, root=tmp_path / "fed", store=store)
    run = fed.run(fedavg())
    assert run.status == "succeeded", run.reason
    with store._engine.begin() as conn:
        last = conn.execute(sa.select(sa.func.max(schema.events.c.seq))).scalar_one()
        conn.execute(sa.delete(schema.events).where(schema.events.c.seq == last - 5))
    store.close()
    out = _start(tmp_path / "state", "--db", url)
    assert f"has a gap: event {last - 5} is missing (the next event kept is {last - 4})" in out
    assert "restore it from a backup" in out and "Traceback" not in out
