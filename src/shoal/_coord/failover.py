"""Several coordinators on one PostgreSQL database: one active, the others standbys.

The active coordinator holds the lease (:class:`shoal._store.lease.Lease`, a session
advisory lock) and drives the engine as a single coordinator does. A standby follows
the event log into an engine of its own, so that it serves reads (swarm status, lists,
logs, results, the dashboard), answers every other request with 503 ``coord.standby``
naming the active coordinator, and tries the lease a few times a second. When the
active one dies its lease goes with its connection; the first standby to take it reads
the rest of the log and carries on exactly as a restarted coordinator does
(:meth:`~shoal._coord.driver.Coordinator.take_over`): live instances are offered again
to their nodes, and each node has one heartbeat timeout to reach it.

An active coordinator checks its lease every second; one that lost it (the database
went away, or its connection broke) is *fenced*: its event appends fail already (they
go through the lease's connection), every request gets 503, and ``on_lost`` stops the
process so that a supervisor starts it again as a standby.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from shoal._coord.driver import Coordinator
from shoal._coord.http import error_response
from shoal._store.lease import Lease

log = logging.getLogger("shoal.coordinator")

#: How often a standby reads new events and tries the lease.
POLL_S = 0.5
#: How often the active coordinator checks that it still holds the lease.
CHECK_S = 1.0
#: A standby answers these without the engine lock of an active one: reads. Node
#: routes are the active one's, also their reads (the long poll hands out work).
_READ_METHODS = frozenset({"GET", "HEAD"})


def served_by_standby(method: str, path: str) -> bool:
    """Whether a standby answers this request itself (a read) instead of 503."""
    return method in _READ_METHODS and not path.startswith("/v1/nodes/")


class Failover:
    """The thread that follows the log and takes the lease (standby), or checks it
    (active).

    Parameters
    ----------
    coord
        The coordinator, made with ``lease``.
    lease
        Its lease.
    on_lost
        Called once, from this thread, when the active coordinator lost its lease (the
        server exits; :func:`shoal._coord.server.serve` passes one that does).
    poll_s, check_s
        How often a standby looks, and how often the active one checks its lease.
    """

    def __init__(
        self,
        coord: Coordinator,
        lease: Lease,
        on_lost: Callable[[], None],
        poll_s: float = POLL_S,
        check_s: float = CHECK_S,
    ) -> None:
        self.coord = coord
        self.lease = lease
        self.on_lost = on_lost
        self.poll_s = poll_s
        self.check_s = check_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def begin(self) -> None:
        """Take the lease if free (then replay the log as a restart does), else follow
        the log as a standby; then start the thread. Called at the app's start."""
        if self.lease.try_acquire():
            self.coord.take_over()
            self.coord.start()
            log.info("holding the coordinator lease: this coordinator is active")
        else:
            self.coord.follow()
            self.coord.active_url = self.lease.holder()
            log.info(
                "another coordinator holds the lease (%s): this one is a standby",
                self.coord.active_url or "address unknown",
            )
        self._thread = threading.Thread(target=self._run, name="shoal-failover", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (the lease is given back by closing it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.coord.role == "standby":
                self._standby_step()
                self._stop.wait(self.poll_s)
            elif self.coord.role == "active":
                if not self.lease.check():
                    log.critical(
                        "this coordinator lost its lease on the database: it stops driving "
                        "the engine (a standby takes over)"
                    )
                    self.coord.fence()
                    self.on_lost()
                    return
                self._stop.wait(self.check_s)
            else:
                return

    def _standby_step(self) -> None:
        try:
            if self.lease.try_acquire():
                log.warning("took the coordinator lease: this coordinator is now active")
                try:
                    count = self.coord.take_over()
                    self.coord.start()
                except Exception:
                    # Holding the lease without driving would stall every swarm: give
                    # it up by stopping, so that another standby can take it.
                    log.exception("taking over failed; giving the lease up")
                    self.coord.fence()
                    self.on_lost()
                    return
                log.warning("took over: read %d more events; driving the engine", count)
                return
            self.coord.follow()
            self.coord.active_url = self.lease.holder()
        except Exception:  # the database is unreachable for now: look again later
            log.warning("standby: the database did not answer; trying again", exc_info=True)


class RoleGate:
    """ASGI middleware: a standby (or a fenced coordinator) answers what it cannot serve
    with 503 ``coord.standby`` naming the active coordinator (``X-Shoal-Active``)."""

    def __init__(self, app: ASGIApp, coord: Coordinator) -> None:
        self.app = app
        self.coord = coord

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        coord = self.coord
        if (
            scope["type"] != "http"
            or coord.role == "active"
            or (coord.role == "standby" and served_by_standby(scope["method"], scope["path"]))
        ):
            await self.app(scope, receive, send)
            return
        active = coord.active_url
        if coord.role == "standby":
            where = f"at {active}" if active else "elsewhere (its address is not known here)"
            message = f"this coordinator is a standby; the active coordinator is {where}"
        else:
            message = "this coordinator lost its lease and is stopping"
        headers = {"Retry-After": "1"}
        if active:
            headers["X-Shoal-Active"] = active
        resp = error_response(
            503,
            "coord.standby",
            message,
            "give clients and nodes every coordinator's URL (comma-separated): they move "
            "on to the active one by themselves",
            headers,
        )
        await resp(scope, receive, send)
