"""Failed authentication, limited per source address.

A source (the client's IP address as the server sees it) that failed to authenticate
``max_failures`` times within ``window_s`` seconds is refused (429 with ``Retry-After``)
until its oldest failure in the window is older than the window: at most
``max_failures`` guesses per window, whatever the route. The check happens before any
credential is looked up, so a refused source costs no store read. Other sources are not
affected. The table is bounded: past ``max_sources`` sources the one heard from least
recently is forgotten.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

DEFAULT_MAX_FAILURES = 30
DEFAULT_WINDOW_S = 60.0
DEFAULT_MAX_SOURCES = 100_000


class AuthLimiter:
    """Counts failed authentications per source.

    Parameters
    ----------
    max_failures
        Failures within the window after which a source is refused; 0 turns the limit
        off.
    window_s
        The window, in seconds.
    clock
        Monotonic seconds (tests may pass their own).
    max_sources
        How many sources are remembered at most.
    """

    def __init__(
        self,
        max_failures: int = DEFAULT_MAX_FAILURES,
        window_s: float = DEFAULT_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
        max_sources: int = DEFAULT_MAX_SOURCES,
    ) -> None:
        if max_failures < 0 or not window_s > 0:
            raise ValueError(
                f"max_failures must be >= 0 and window_s > 0, not {max_failures}, {window_s}"
            )
        self.max_failures = max_failures
        self.window_s = window_s
        self._clock = clock
        self._max_sources = max_sources
        self._lock = threading.Lock()
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, source: str, now: float) -> deque[float] | None:
        times = self._failures.get(source)
        if times is None:
            return None
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[source]
            return None
        return times

    def retry_after(self, source: str) -> int | None:
        """Whole seconds until ``source`` may try again, or None if it may now."""
        if self.max_failures == 0:
            return None
        now = self._clock()
        with self._lock:
            times = self._recent(source, now)
            if times is None or len(times) < self.max_failures:
                return None
            return max(1, math.ceil(times[0] + self.window_s - now))

    def failed(self, source: str) -> bool:
        """Count one failed authentication of ``source``; True when this failure is the
        one that makes it refused."""
        if self.max_failures == 0:
            return False
        now = self._clock()
        with self._lock:
            times = self._recent(source, now)
            if times is None:
                times = self._failures[source] = deque(maxlen=self.max_failures)
            times.append(now)
            self._failures.move_to_end(source)
            while len(self._failures) > self._max_sources:
                self._failures.popitem(last=False)
            return len(times) == self.max_failures
