"""What the coordinator load test (bench/coord_load.py) found, pinned in process.

- A node whose requests arrive is alive, however long they then wait for a worker
  thread: it is not lost while its heartbeat waits in the queue.
- A client that disconnects before its msgpack body was read is a normal event (an
  agent stopped), not an internal error with a traceback in the coordinator's log.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest

from shoal._coord.app import create_app
from shoal._coord.state import Offer
from shoal._store.memory import MemoryStore

pytestmark = pytest.mark.timeout(30)


def test_a_node_whose_heartbeat_waits_for_a_thread_is_not_lost(tmp_path: Path) -> None:
    app = create_app(MemoryStore(), tmp_path / "blobs", "join", "user", heartbeat_timeout_s=1.0)
    coord = app.state.coord
    beat = {"images": ["python"], "session": "s1"}

    def lost() -> bool:
        coord.tick()  # what the ticker does
        return not coord.engine.node("n1").connected

    async def scenario() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://coord") as http:
            enrol = {"join_token": "join", "node_id": "n1", "images": ["python"]}
            credential = (await http.post("/v1/nodes/enrol", json=enrol)).json()["credential"]
            http.headers["Authorization"] = f"Bearer {credential}"
            assert (await http.post("/v1/nodes/heartbeat", json=beat)).status_code == 200
            # Under load every worker thread is busy: here, the only one is taken.
            limiter = anyio.to_thread.current_default_thread_limiter()
            limiter.total_tokens = 1
            await limiter.acquire()
            await asyncio.sleep(0.5)
            pending = asyncio.create_task(http.post("/v1/nodes/heartbeat", json=beat))
            await asyncio.sleep(0.7)  # 1.2 s since the last answered heartbeat
            assert not lost(), "the node was lost while its heartbeat waited for a thread"
            limiter.release()
            return (await pending).status_code

    assert asyncio.run(scenario()) == 200
    assert not any(b"NodeLost" in e for _, e in coord.store.events())


def test_disconnect_before_the_body_is_no_internal_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(MemoryStore(), tmp_path / "blobs", "join", "user")
    credential = app.state.coord.enrol("n1", Offer(frozenset(), False, None))
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/world",
        "raw_path": b"/v1/world",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"test"),
            (b"content-type", b"application/msgpack"),
            (b"content-length", b"100"),
            (b"authorization", f"Bearer {credential}".encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with caplog.at_level(logging.WARNING):
        asyncio.run(app(scope, receive, send))
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 400
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
