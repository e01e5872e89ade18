"""One way to wait in a test: poll a predicate until it holds, with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll_for(
    predicate: Callable[[], T],
    timeout: float,
    what: str = "the condition",
    interval: float = 0.1,
    *,
    ignore: tuple[type[Exception], ...] = (),
    explain: Callable[[], str] | None = None,
) -> T:
    """Call ``predicate()`` every ``interval`` seconds until it returns a true value.

    Parameters
    ----------
    predicate
        Called at once, then after each pause, and once more at the deadline.
    timeout
        Seconds to wait in all.
    what
        What is awaited, for the error (``"node n1 to connect"``).
    interval
        Seconds between calls.
    ignore
        Exceptions of ``predicate`` that count as "not yet" (a server still starting);
        any other exception propagates at once.
    explain
        Called on timeout; its text (logs, diagnostics) is added to the error.

    Returns
    -------
    T
        The first true value ``predicate`` returned.

    Raises
    ------
    TimeoutError
        Naming ``what``, the timeout and the last value seen (or the last ignored
        exception).
    """
    deadline = time.monotonic() + timeout
    last: str = "nothing (never called)"
    while True:
        try:
            value = predicate()
        except ignore as e:
            last = _short(f"{type(e).__name__}: {e}")
        else:
            if value:
                return value
            last = _short(repr(value))
        left = deadline - time.monotonic()
        if left <= 0:
            message = f"waited {timeout:g}s for {what}; last value seen: {last}"
            if explain is not None:
                message += "\n" + explain()
            raise TimeoutError(message)
        time.sleep(min(interval, left))


def _short(text: str, limit: int = 4000) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
