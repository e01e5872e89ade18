"""What the coordinator load test (bench/coord_load.py) found, pinned in process.

- A heartbeat that changes nothing and a long poll of a connected node are answered on
  the event loop, without a worker thread or the engine lock; loss detection takes the
  lock only when a node looks late; a blocked event loop loses no node (issue #14).

- A node whose requests arrive is alive, however long they then wait for a worker
  thread: it is not lost while its heartbeat waits in the queue.
- A client that disconnects before its msgpack body was read is a normal event (an
  agent stopped), not an internal error with a traceback in the coordinator's log.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest
from helpers import poll_for

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


# ------------------------------------------------------------ issue #14, point 9
def _node_client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://coord")


async def _enrol(http: httpx.AsyncClient, beat: dict[str, Any]) -> None:
    enrol = {"join_token": "join", "node_id": "n1", "images": ["python"]}
    credential = (await http.post("/v1/nodes/enrol", json=enrol)).json()["credential"]
    http.headers["Authorization"] = f"Bearer {credential}"
    assert (await http.post("/v1/nodes/heartbeat", json=beat)).status_code == 200


def test_an_unchanged_heartbeat_and_a_poll_need_no_lock_and_no_thread(tmp_path: Path) -> None:
    app = create_app(MemoryStore(), tmp_path / "blobs", "join", "user")
    coord = app.state.coord
    beat = {"images": ["python"], "session": "s1", "running": []}
    taken, release = threading.Event(), threading.Event()

    def hold_the_engine_lock() -> None:  # a long engine call of some swarm
        with coord._lock:
            taken.set()
            release.wait(10)

    async def scenario() -> None:
        async with _node_client(app) as http:
            await _enrol(http, beat)
            holder = threading.Thread(target=hold_the_engine_lock)
            holder.start()
            taken.wait(5)
            limiter = anyio.to_thread.current_default_thread_limiter()
            limiter.total_tokens = 1
            await limiter.acquire()  # and every worker thread is busy
            try:
                for running in ([], ["s/0/t/0/0"], []):  # what it runs changes
                    resp = http.post("/v1/nodes/heartbeat", json={**beat, "running": running})
                    assert (await asyncio.wait_for(resp, 2)).status_code == 200
                poll = http.get("/v1/nodes/instructions", params={"wait": 0, "after": 0})
                assert (await asyncio.wait_for(poll, 2)).json() == []
                # A heartbeat that changes the offer waits for the engine, and counts.
                changed = asyncio.create_task(
                    http.post("/v1/nodes/heartbeat", json={**beat, "datasets": ["d"]})
                )
                await asyncio.sleep(0.3)
                assert not changed.done()
            finally:
                limiter.release()
                release.set()
            assert (await asyncio.wait_for(changed, 5)).status_code == 200
            holder.join(5)
        assert coord.engine.node("n1").datasets == frozenset({"d"})

    asyncio.run(scenario())


def test_liveness_checks_do_not_wait_for_the_engine_lock(tmp_path: Path) -> None:
    app = create_app(MemoryStore(), tmp_path / "blobs", "join", "user", heartbeat_timeout_s=5)
    coord = app.state.coord
    coord.enrol("n1", Offer(frozenset(), False, None))
    ticked = threading.Event()

    def tick() -> None:
        coord.tick()
        ticked.set()

    with coord._lock:  # held by a long engine call elsewhere
        ticker = threading.Thread(target=tick)
        ticker.start()
        # Nobody is late and no timer is due: nothing to wait for the lock for.
        assert ticked.wait(2), "the liveness check waited for the engine lock"
    ticker.join(5)


def test_a_blocked_event_loop_loses_no_node(tmp_path: Path) -> None:
    # The real app with its lifespan: the ticker thread and the event loop's watchdog.
    app = create_app(MemoryStore(), tmp_path / "blobs", "join", "user", heartbeat_timeout_s=1.0)
    coord = app.state.coord
    beat = {"images": ["python"], "session": "s1"}

    def connected() -> bool:
        view = coord.engine.node("n1")
        return view is not None and view.connected

    async def scenario() -> None:
        async with app.router.lifespan_context(app), _node_client(app) as http:
            await _enrol(http, beat)
            await asyncio.sleep(0.6)  # the watchdog has seen the loop awake
            assert (await http.post("/v1/nodes/heartbeat", json=beat)).status_code == 200
            # Something holds the event loop for 2.5 heartbeat timeouts: no request of
            # any node can be read meanwhile, while the ticker thread runs on.
            time.sleep(2.5)  # the point: the loop is blocked
            await asyncio.sleep(0.6)  # the watchdog notices
            assert connected(), "the node was lost while the coordinator could not listen"
            assert (await http.post("/v1/nodes/heartbeat", json=beat)).status_code == 200
            # A node that really goes silent is still lost.
            await asyncio.sleep(2.5)
            assert not connected()

    asyncio.run(scenario())
    lost = [e for _, e in coord.store.events() if b"NodeLost" in e]
    assert len(lost) == 1


def test_what_a_node_runs_is_checked_when_it_joins_and_periodically(tmp_path: Path) -> None:
    app = create_app(MemoryStore(), tmp_path / "blobs", "join", "user")
    coord = app.state.coord
    ghost = "s/0/t/0/0"  # an instance this coordinator never scheduled
    beat = {"images": ["python"], "session": "s1", "running": [ghost]}

    async def cancels(http: httpx.AsyncClient) -> list[str]:
        items = (await http.get("/v1/nodes/instructions", params={"wait": 0})).json()
        return [i["instance_id"] for i in items if i["kind"] == "cancel"]

    def queued() -> bool:
        return coord.queues.pending("n1") == 1

    async def scenario() -> None:
        async with _node_client(app) as http:
            # Its first heartbeat is answered at once, and starts a full one, which runs
            # after the answer in a worker thread: it learns the session, queues a cancel.
            await _enrol(http, beat)
            await asyncio.to_thread(poll_for, queued, 10, "the first full heartbeat")
            assert await cancels(http) == [ghost]
            assert coord._nodes["n1"].session == "s1"
            assert (await http.post("/v1/nodes/heartbeat", json=beat)).status_code == 200
            assert await cancels(http) == []  # the fast path
            coord._nodes["n1"].stored_seen -= 31  # the periodic check is due
            assert (await http.post("/v1/nodes/heartbeat", json=beat)).status_code == 200
            await asyncio.to_thread(poll_for, queued, 10, "the periodic check's cancel")
            assert await cancels(http) == [ghost]
            # A new session (the agent restarted) is heard by the engine before the
            # answer: its instances (none here) are lost, and it stays connected.
            restarted = {**beat, "session": "s2", "running": []}
            assert (await http.post("/v1/nodes/heartbeat", json=restarted)).status_code == 200
            assert coord._nodes["n1"].session == "s2"

    asyncio.run(scenario())
    poll_for(lambda: not coord._nodes["n1"].checking, 10, "the periodic check to end")
