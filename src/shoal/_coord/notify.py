"""Wake-ups from the driver's threads to the HTTP handlers' event loop.

The driver runs in worker threads (engine calls are serialized by a lock, store calls
block); handlers that long-poll wait on asyncio events. Every wake-up crosses threads
with ``loop.call_soon_threadsafe``, and every wait has a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass

from shoal._api.schemas import CancelInstruction, Instruction, RunInstruction

_Waiter = tuple[asyncio.AbstractEventLoop, asyncio.Event]


def _wake(waiters: list[_Waiter]) -> None:
    for loop, event in waiters:
        # RuntimeError: that loop is closed, so nobody waits there any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(event.set)


async def _wait(event: asyncio.Event, timeout: float) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)


class Broadcast:
    """A change counter that async code can wait on ("something changed since n")."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._generation = 0
        self._waiters: list[_Waiter] = []

    @property
    def generation(self) -> int:
        """How many changes were announced so far."""
        return self._generation

    def notify(self) -> None:
        """Announce a change (from any thread)."""
        with self._lock:
            self._generation += 1
            waiters, self._waiters = self._waiters, []
        _wake(waiters)

    async def wait(self, seen: int, timeout: float) -> int:
        """Wait until the generation passes ``seen`` or ``timeout`` elapses; return it."""
        event = asyncio.Event()
        waiter = (asyncio.get_running_loop(), event)
        with self._lock:
            if self._generation != seen or timeout <= 0:
                return self._generation
            self._waiters.append(waiter)
        try:
            await _wait(event, timeout)
        finally:
            with self._lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        return self._generation


@dataclass
class _Entry:
    seq: int
    item: Instruction
    sent: bool = False


def _runs(entry: _Entry, instance_id: str) -> bool:
    return isinstance(entry.item, RunInstruction) and entry.item.instance_id == instance_id


class NodeQueues:
    """Pending instructions per node, taken by long-polls.

    Every instruction carries a ``seq``, increasing per coordinator (it starts from
    the wall clock in microseconds, so it also increases across restarts). A poll that
    passes ``after`` acknowledges every instruction handed out up to it; the ones it has not
    acknowledged are handed out again, so an answer lost with its connection loses
    nothing. A poll without ``after`` takes each instruction once. A run that was never
    handed out is dropped when its instance is cancelled.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, list[_Entry]] = {}
        self._waiters: dict[str, list[_Waiter]] = {}
        self._closed = False
        self._seq = time.time_ns() // 1000

    def _append(self, node_id: str, item: Instruction) -> list[_Waiter]:
        self._seq += 1
        entry = _Entry(self._seq, item.model_copy(update={"seq": self._seq}))
        self._pending.setdefault(node_id, []).append(entry)
        return self._waiters.pop(node_id, [])

    def push(self, node_id: str, item: Instruction) -> None:
        """Queue an instruction for a node (from any thread)."""
        with self._lock:
            waiters = self._append(node_id, item)
        _wake(waiters)

    def push_run(self, node_id: str, item: RunInstruction) -> None:
        """Queue a run instruction unless one for the same instance is still pending."""
        iid = item.instance_id
        with self._lock:
            queue = self._pending.get(node_id, [])
            if any(_runs(e, iid) for e in queue):
                return
            waiters = self._append(node_id, item)
        _wake(waiters)

    def cancel(self, node_id: str, instance_id: str, reason: str) -> None:
        """Drop a run of ``instance_id`` never handed out, or queue a cancel."""
        with self._lock:
            queue = self._pending.get(node_id, [])
            for i, e in enumerate(queue):
                if _runs(e, instance_id) and not e.sent:
                    del queue[i]
                    return
            waiters = self._append(
                node_id, CancelInstruction(instance_id=instance_id, reason=reason)
            )
        _wake(waiters)

    def pending(self, node_id: str) -> int:
        """How many instructions wait for a node (handed out but unacknowledged ones too)."""
        with self._lock:
            return len(self._pending.get(node_id, ()))

    def _hand_out(self, node_id: str, after: int | None) -> list[Instruction]:
        queue = self._pending.get(node_id, [])
        if after is None:  # at most once
            self._pending.pop(node_id, None)
            return [e.item for e in queue]
        # An ack covers only what was handed out: an ``after`` from before a coordinator
        # restart may exceed new seqs (the wall clock went back) and must not drop them.
        keep = [e for e in queue if not (e.sent and e.seq <= after)]
        self._pending[node_id] = keep
        for e in keep:
            e.sent = True
        return [e.item for e in keep]

    def take_now(self, node_id: str, after: int | None = None) -> list[Instruction]:
        """A node's pending instructions, without waiting (in-process drivers of nodes,
        such as the tests' virtual-clock federation). ``after`` as for :meth:`take`."""
        with self._lock:
            return self._hand_out(node_id, after)

    async def take(self, node_id: str, wait: float, after: int | None = None) -> list[Instruction]:
        """A node's pending instructions; waits up to ``wait`` s for the first.

        ``after``: the highest ``seq`` the node has received (acknowledges it and every
        earlier one); None: hand each instruction out once.
        """
        event = asyncio.Event()
        waiter = (asyncio.get_running_loop(), event)
        with self._lock:
            items = self._hand_out(node_id, after)
            if items or wait <= 0 or self._closed:
                return items
            self._waiters.setdefault(node_id, []).append(waiter)
        try:
            await _wait(event, wait)
        finally:
            with self._lock:
                mine = self._waiters.get(node_id, [])
                if waiter in mine:
                    mine.remove(waiter)
                items = self._hand_out(node_id, after)
        return items

    def renumber(self) -> None:
        """Number the next instructions from the wall clock again, if it is ahead: a
        coordinator that takes over from another goes on past every number the other
        handed out (it numbered from its own start, one per instruction)."""
        with self._lock:
            self._seq = max(self._seq, time.time_ns() // 1000)

    def wake_all(self) -> None:
        """Release every long-poll, and answer later ones at once (shutting down)."""
        with self._lock:
            self._closed = True
            waiters = [w for ws in self._waiters.values() for w in ws]
            self._waiters.clear()
        _wake(waiters)
