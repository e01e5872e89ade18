"""The coordinator's globals cache over a real SQLite store: reads after the first
come from memory, writes are read back at once, a read that raced a write keeps
nothing stale, and the bytes kept are bounded."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from shoal._store.globals_cache import GlobalsCache
from shoal._store.sql import SQLStore
from shoal._wire import Wire

pytestmark = pytest.mark.timeout(60)


class _Counted(SQLStore):
    """A real SQLite store that counts its global reads (and can hold one back)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.gets = 0
        self.versions = 0
        self.hold: threading.Event | None = None
        self.reading = threading.Event()

    def global_get(self, swarm_id: str, key: str) -> tuple[str, Wire] | None:
        self.gets += 1
        found = super().global_get(swarm_id, key)
        if self.hold is not None:
            self.reading.set()
            self.hold.wait(10)
        return found

    def global_versions(self, swarm_id: str) -> dict[str, str]:
        self.versions += 1
        return super().global_versions(swarm_id)


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = _Counted(f"sqlite:///{tmp_path / 'shoal.db'}")
    yield s
    s.close()


def test_reads_after_the_first_come_from_memory(store: _Counted) -> None:
    store.global_set("sw", "w", {"inline": b"v1"}, -1)
    cache = GlobalsCache(store)
    first = cache.global_get("sw", "w")
    assert first is not None and first[1] == {"inline": b"v1"}
    assert [cache.global_get("sw", "w") for _ in range(5)] == [first] * 5
    assert store.gets == 1
    assert cache.global_versions("sw") == cache.global_versions("sw") == {"w": first[0]}
    assert store.versions == 1
    assert cache.global_get("sw", "missing") is None  # an absent global is asked each time
    assert cache.global_get("sw", "missing") is None
    assert store.gets == 3


def test_a_write_is_read_back_at_once_and_is_in_the_store(store: _Counted) -> None:
    cache = GlobalsCache(store)
    v1 = cache.global_set("sw", "w", {"inline": b"v1"}, 0)
    assert cache.global_versions("sw") == {"w": v1}
    v2 = cache.global_set("sw", "w", {"inline": b"v2"}, 1)
    assert cache.global_get("sw", "w") == (v2, {"inline": b"v2"})
    assert cache.global_versions("sw") == {"w": v2}
    assert store.gets == 0
    assert store.global_get("sw", "w") == (v2, {"inline": b"v2"})  # written through
    assert cache.global_history("sw", "w") == [(0, {"inline": b"v1"}), (1, {"inline": b"v2"})]


def test_a_read_that_raced_a_write_keeps_nothing_stale(store: _Counted) -> None:
    store.global_set("sw", "w", {"inline": b"old"}, 0)
    cache = GlobalsCache(store)
    store.hold = threading.Event()
    got: list[Any] = []
    reader = threading.Thread(target=lambda: got.append(cache.global_get("sw", "w")))
    reader.start()
    assert store.reading.wait(10)  # the reader has the old value in hand
    new = cache.global_set("sw", "w", {"inline": b"new"}, 1)
    store.hold.set()
    reader.join(10)
    assert got[0][1] == {"inline": b"old"}  # what the store held when it read
    store.hold = None
    assert cache.global_get("sw", "w") == (new, {"inline": b"new"})


def test_the_bytes_kept_are_bounded(store: _Counted) -> None:
    cache = GlobalsCache(store, max_bytes=3 * 1100)  # 1000 bytes and a little each
    for k in "abcd":
        cache.global_set("sw", k, {"inline": bytes(1000)}, 0)
    store.gets = 0
    for k in "bcd":
        assert cache.global_get("sw", k) is not None
    assert store.gets == 0  # the newest three fit
    assert cache.global_get("sw", "a") is not None
    assert store.gets == 1  # the oldest went first


def test_the_only_coordinator_of_its_store_caches_its_globals(tmp_path: Path) -> None:
    from shoal._coord.app import create_app

    store = SQLStore(f"sqlite:///{tmp_path / 'shoal.db'}")
    app = create_app(store, tmp_path / "blobs", join_token="j" * 32, user_token="u" * 32)
    assert isinstance(app.state.coord.store, GlobalsCache)
    store.close()
