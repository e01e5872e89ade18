"""A store whose globals are read from memory.

Every instance of an iteration reads the same global (the model) and every delivered
instruction carries its swarm's global versions: on a real deployment those reads are
a third of the coordinator's store time per round (bench/deploy_overhead.py), for values
that change once an iteration. This wrapper keeps the current value of the globals read
or written through it, and each swarm's versions, and answers those reads without the
database; writes go to the store first.

It is right only while no other process writes globals to the store: a coordinator
without standbys (with a lease, the standby that takes over would find values its own
cache never saw written). Every other method is the store's own.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from shoal._store.base import Store
from shoal._wire import Wire

#: The most bytes of global values kept (the least recently read go first).
MAX_BYTES = 256 << 20
#: The most swarms whose versions are kept.
MAX_SWARMS = 10_000


class GlobalsCache:
    """``store`` with its current globals and versions kept in memory.

    Parameters
    ----------
    store
        The store (this process must be the only one writing its globals).
    max_bytes
        The most bytes of values kept.
    """

    def __init__(self, store: Store, max_bytes: int = MAX_BYTES) -> None:
        self._store = store
        self._max_bytes = max_bytes
        self._values: OrderedDict[tuple[str, str], tuple[str, Wire, int]] = OrderedDict()
        self._versions: OrderedDict[str, dict[str, str]] = OrderedDict()
        self._bytes = 0
        # Writes of this swarm so far: a read that raced a write does not keep what it
        # read (it may be the value the write replaced).
        self._writes: dict[str, int] = {}
        self._lock = threading.Lock()  # the dicts above
        self._write_lock = threading.Lock()  # writes reach the cache in store order

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def global_get(self, swarm_id: str, key: str) -> tuple[str, Wire] | None:
        """Current version and value of a global."""
        with self._lock:
            hit = self._values.get((swarm_id, key))
            if hit is not None:
                self._values.move_to_end((swarm_id, key))
                return hit[0], hit[1]
            writes = self._writes.get(swarm_id, 0)
        found = self._store.global_get(swarm_id, key)
        if found is not None:
            with self._lock:
                if self._writes.get(swarm_id, 0) == writes:
                    self._keep(swarm_id, key, *found)
        return found

    def global_set(self, swarm_id: str, key: str, value: Wire, iteration: int) -> str:
        """Write a global (to the store first); returns its new version."""
        with self._write_lock:
            version = self._store.global_set(swarm_id, key, value, iteration)
            with self._lock:
                self._writes[swarm_id] = self._writes.get(swarm_id, 0) + 1
                self._keep(swarm_id, key, version, value)
                known = self._versions.get(swarm_id)
                if known is not None:
                    known[key] = version
            return version

    def global_versions(self, swarm_id: str) -> dict[str, str]:
        """``{key: version}`` of every global of a swarm."""
        with self._lock:
            known = self._versions.get(swarm_id)
            if known is not None:
                self._versions.move_to_end(swarm_id)
                return dict(known)
            writes = self._writes.get(swarm_id, 0)
        found = self._store.global_versions(swarm_id)
        with self._lock:
            if self._writes.get(swarm_id, 0) == writes:
                self._versions[swarm_id] = dict(found)
                while len(self._versions) > MAX_SWARMS:
                    self._versions.popitem(last=False)
        return found

    def _keep(self, swarm_id: str, key: str, version: str, value: Wire) -> None:
        size = _size(value)
        old = self._values.pop((swarm_id, key), None)
        if old is not None:
            self._bytes -= old[2]
        if size > self._max_bytes:
            return
        self._values[(swarm_id, key)] = (version, value, size)
        self._bytes += size
        while self._bytes > self._max_bytes:
            self._bytes -= self._values.popitem(last=False)[1][2]


def _size(value: Wire) -> int:
    """About the bytes a wire holds (its inline bytes; a reference costs little)."""
    inline = value.get("inline") if isinstance(value, dict) else None
    return len(inline) + 64 if isinstance(inline, bytes | bytearray) else 256
