"""Pending deadlines: instance timeouts and placement timeouts, in one heap.

Entries are never removed when their instance or task moves on; they are dropped
lazily when they reach the top and the engine says they are stale. That keeps every
event O(log n) instead of a scan over all instances.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from math import inf

from shoal._engine.state import Instance, TaskRun

Target = Instance | TaskRun

# The task timeout of a task declared with ``timeout=None``, unless its swarm was
# submitted with another (``SwarmSubmitted.task_timeout_s``: ``shoal simulate
# --task-timeout``, ``shoal.simulate(task_timeout=)``, ``Client.deploy(task_timeout=)``).
# Finite, so that nothing waits forever for a task that never returns (DESIGN §3
# Failure); ten minutes is long for one round of local training on a site and short
# enough that a stuck task is reported while its user still waits for the run.
DEFAULT_TASK_TIMEOUT_S = 600.0


def check_task_timeout(value: float | None) -> float:
    """The default task timeout a swarm gets: ``value``, or the engine's default.

    Raises
    ------
    ValueError
        If ``value`` is not a finite number of seconds > 0.
    """
    if value is None:
        return DEFAULT_TASK_TIMEOUT_S
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < inf:
        raise ValueError(f"task timeout {value!r} is not a finite number of seconds > 0")
    return float(value)


class Timers:
    """A min-heap of ``(deadline, sequence, target)``; the sequence breaks ties stably."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Target]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, at: float, target: Target) -> None:
        """Remember that ``target`` has a deadline at ``at``."""
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, target))

    def pop_due(self, now: float) -> Iterator[tuple[float, Target]]:
        """Pop and yield every entry with a deadline at or before ``now``, earliest first.

        Entries pushed while iterating are seen too if they are already due.
        """
        while self._heap and self._heap[0][0] <= now:
            at, _, target = heapq.heappop(self._heap)
            yield at, target

    def earliest(self, live: Callable[[float, Target], bool]) -> float | None:
        """The earliest live deadline, dropping stale entries from the top."""
        while self._heap:
            at, _, target = self._heap[0]
            if live(at, target):
                return at
            heapq.heappop(self._heap)
        return None

    def entries(self) -> list[tuple[float, Target]]:
        """Every entry, stale or not (for validation)."""
        return [(at, target) for at, _, target in self._heap]
