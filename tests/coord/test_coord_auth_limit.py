"""The limit on failed authentication (#14, point 2) in process, over real HTTP: a
refused source costs the store nothing, and other sources are served."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from helpers import free_port, poll_for

from shoal._coord import create_app
from shoal._coord.ratelimit import AuthLimiter
from shoal._store.base import NodeRecord
from shoal._store.memory import MemoryStore

pytestmark = pytest.mark.timeout(60)


class CountingStore(MemoryStore):
    """A memory store that counts the node lookups a credential check makes."""

    def __init__(self) -> None:
        super().__init__()
        self.node_reads = 0

    def node_get(self, node_id: str) -> NodeRecord | None:
        self.node_reads += 1
        return super().node_get(node_id)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, CountingStore]]:
    store = CountingStore()
    app = create_app(
        store, tmp_path / "blobs", "join", "user", auth_max_failures=3, auth_window_s=2.0
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:

        def started() -> bool:
            assert thread.is_alive(), "the server thread ended"
            return bool(server.started)

        poll_for(started, 30, "the server to start", interval=0.05)
        yield f"http://127.0.0.1:{port}", store
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert not thread.is_alive()


def test_a_refused_source_costs_no_store_read_and_others_are_served(
    served: tuple[str, CountingStore],
) -> None:
    url, store = served
    here = httpx.Client(base_url=url, timeout=10)
    elsewhere = httpx.Client(
        base_url=url, timeout=10, transport=httpx.HTTPTransport(local_address="127.0.0.2")
    )
    with here, elsewhere:
        node = elsewhere.post("/v1/nodes/enrol", json={"join_token": "join", "node_id": "n1"})
        good = {"Authorization": f"Bearer {node.json()['credential']}"}
        # Guessed credentials of unknown nodes: each one is a store read...
        for k in range(3):
            guess = {"Authorization": f"Bearer guess-{k}:secret"}
            assert here.post("/v1/nodes/heartbeat", json={}, headers=guess).status_code == 401
        reads = store.node_reads
        assert reads >= 3
        # ... until the source is refused: then none is.
        for k in range(20):
            guess = {"Authorization": f"Bearer more-{k}:secret"}
            refused = here.post("/v1/nodes/heartbeat", json={}, headers=guess)
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "auth.rate_limited"
            assert int(refused.headers["Retry-After"]) >= 1
        assert store.node_reads == reads
        enrol = here.post("/v1/nodes/enrol", json={"join_token": "wrong", "node_id": "n2"})
        assert enrol.status_code == 429
        # Another source is served all along.
        assert elsewhere.post("/v1/nodes/heartbeat", json={}, headers=good).status_code == 200
        user = {"Authorization": "Bearer user"}
        assert elsewhere.get("/v1/nodes", headers=user).status_code == 200
        poll_for(
            lambda: here.post("/v1/nodes/heartbeat", json={}, headers=good).status_code == 200,
            10,
            "the limit to lift",
            interval=0.25,
        )


def test_the_limiter_counts_a_sliding_window() -> None:
    now = [100.0]
    limiter = AuthLimiter(max_failures=2, window_s=10.0, clock=lambda: now[0], max_sources=2)
    assert limiter.retry_after("a") is None
    assert limiter.failed("a") is False
    now[0] = 104.0
    assert limiter.failed("a") is True  # the second failure within 10 s
    assert limiter.retry_after("a") == 6  # until the first one leaves the window
    assert limiter.retry_after("b") is None
    now[0] = 110.0
    assert limiter.retry_after("a") is None  # one failure left in the window
    limiter.failed("b")
    limiter.failed("c")
    limiter.failed("d")  # past max_sources: the least recent source is forgotten
    assert len(limiter._failures) == 2
    off = AuthLimiter(max_failures=0)
    for _ in range(100):
        off.failed("a")
    assert off.retry_after("a") is None
