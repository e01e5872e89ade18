"""A full disk is a clear error (issue #14, point 5): 507 with code ``storage.full``.

A blob upload or a database write that finds no space left would otherwise answer a
generic 500, which a node agent retries for ever while its swarm stays ``running``.
:func:`storage_full` recognises the error (an ``OSError`` ENOSPC or EDQUOT, SQLite's
SQLITE_FULL, PostgreSQL's ``disk_full``), logs one line for the operator and gives the
507 that the agent does not retry: it fails the instance with the reason instead.
"""

from __future__ import annotations

import errno
import logging

from shoal._coord.errors import ApiError

log = logging.getLogger("shoal.coordinator")

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_SQLITE_FULL = 13
_PG_DISK_FULL = "53100"
_FULL_TEXTS = ("database or disk is full", "no space left on device", "disk quota exceeded")


def is_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it wraps) says the disk is full."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _FULL_ERRNOS:
            return True
        if getattr(e, "sqlite_errorcode", None) == _SQLITE_FULL:
            return True
        if getattr(e, "sqlstate", None) == _PG_DISK_FULL:
            return True
        if any(t in str(e).lower() for t in _FULL_TEXTS):
            return True
        orig = getattr(e, "orig", None)  # SQLAlchemy wraps the driver's error
        todo += [orig if isinstance(orig, BaseException) else None, e.__cause__, e.__context__]
    return False


def storage_full(exc: BaseException, what: str) -> ApiError | None:
    """The 507 answer for a write that hit a full disk (logged), or None.

    Parameters
    ----------
    exc
        The error the write raised.
    what
        What was being written, for the operator (``"blob sha256:..."``,
        ``"POST /v1/world"``).
    """
    if not is_full(exc):
        return None
    log.error("storage full: writing %s failed: %s (free space on the coordinator)", what, exc)
    return ApiError(
        507,
        f"the coordinator's storage is full: writing {what} failed",
        code="storage.full",
        hint="the operator must free disk space for the coordinator's blob folder and "
        "database; then submit the swarm again",
    )
