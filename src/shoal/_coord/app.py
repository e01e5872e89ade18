"""The coordinator's FastAPI app (docs/api.md)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from shoal._coord import join_tokens, openapi, routes_admin, routes_node, routes_user
from shoal._coord.dashboard import CoordinatorSource
from shoal._coord.driver import Coordinator
from shoal._coord.failover import Failover, RoleGate
from shoal._coord.http import (
    SizeLimit,
    on_api_error,
    on_http_error,
    on_internal_error,
    on_validation_error,
)
from shoal._coord.ratelimit import DEFAULT_MAX_FAILURES, DEFAULT_WINDOW_S, AuthLimiter
from shoal._errors import ShoalError
from shoal._store.base import Store
from shoal._store.blobs import Blobs, open_blobs
from shoal._store.globals_cache import GlobalsCache
from shoal._store.lease import Lease
from shoal._ui import Sessions, dashboard_app
from shoal._version import __version__

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
# The most bytes of values (stored as blobs) one swarm may keep: far above a model's
# rounds, low enough that one runaway swarm cannot fill the coordinator's disk alone.
DEFAULT_SWARM_QUOTA_BYTES = 100 * 2**30
#: How often the event loop's watchdog wakes (Coordinator.loop_woke).
LOOP_WATCH_S = 0.25


async def _watch_loop(coord: Coordinator) -> None:
    """Tell the coordinator, a few times a second, how late the event loop woke: a
    blocked loop reads no request, so no node's silence may count over it."""
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time()
        await asyncio.sleep(LOOP_WATCH_S)
        coord.loop_woke(loop.time() - asked - LOOP_WATCH_S)


def create_app(
    store: Store,
    blobs: Blobs | Path | str,
    join_token: str,
    user_token: str,
    heartbeat_timeout_s: float = 15.0,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    operator_token: str | None = None,
    save_user_token: Callable[[str], None] | None = None,
    auth_max_failures: int = DEFAULT_MAX_FAILURES,
    auth_window_s: float = DEFAULT_WINDOW_S,
    swarm_quota_bytes: int | None = DEFAULT_SWARM_QUOTA_BYTES,
    lease: Lease | None = None,
    on_lease_lost: Callable[[], None] | None = None,
) -> FastAPI:
    """Build the coordinator app over a store and a blob folder.

    Starting the app (its lifespan) replays the store's event log into a fresh engine
    and starts the timer / heartbeat thread; stopping it stops that thread.

    Parameters
    ----------
    store
        Any :class:`~shoal._store.base.Store` (SQL for a real deployment).
    blobs
        Module bundles and large values by digest: a BlobStore or its folder.
    join_token
        The join token ``default`` (recorded in the store, hashed, here); accepted
        only by ``POST /v1/nodes/enrol``.
    user_token
        The bearer token of user routes (``POST /v1/admin/user-token`` rotates it).
    heartbeat_timeout_s
        A node silent for this long is lost (its instances fail with kind ``lost``).
    max_request_bytes
        Larger request bodies get 413 (blob uploads are exempt); most routes have a
        smaller limit of their own (:func:`shoal._coord.http.body_limit`).
    operator_token
        The bearer token of the operator's routes (``/v1/admin/...``); None: a random
        one nobody knows (the routes are then closed).
    save_user_token
        Called with a new user token before it replaces the old one (the server writes
        it to ``<state>/user-token``).
    auth_max_failures, auth_window_s
        A source address that failed to authenticate ``auth_max_failures`` times in
        ``auth_window_s`` seconds gets 429 until the window has passed (0: no limit).
    swarm_quota_bytes
        The most bytes of values one swarm may store (None: no bound).
    lease
        The lease of a coordinator among several on one PostgreSQL database
        (:func:`shoal._store.lease.open_lease`): it starts as the active one if the
        lease is free, else as a standby that takes over when the active one dies
        (:mod:`shoal._coord.failover`). None: the only coordinator of its store.
    on_lease_lost
        Called when the active coordinator lost its lease (default: log it; the
        coordinator then refuses every request with 503). The server exits.

    Returns
    -------
    FastAPI
        The app; ``app.state.coord`` is its :class:`~shoal._coord.driver.Coordinator`.
    """
    if lease is None:  # the only coordinator of its store: no other writes its globals
        store = GlobalsCache(store)
    coord = Coordinator(
        store,
        heartbeat_timeout_s=heartbeat_timeout_s,
        swarm_quota_bytes=swarm_quota_bytes,
        lease=lease,
    )
    join_tokens.ensure_default(store, join_token, coord.clock())
    failover = None if lease is None else Failover(coord, lease, on_lease_lost or (lambda: None))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if failover is None:
            await run_in_threadpool(coord.recover)
            coord.start()
        else:
            await run_in_threadpool(failover.begin)
        watch = asyncio.create_task(_watch_loop(coord))
        try:
            yield
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
            if failover is not None:
                failover.stop()
            coord.stop()
            if lease is not None:
                lease.close()

    app = FastAPI(
        title="shoal coordinator",
        version=__version__,
        description="Node and user API of a shoal coordinator (docs/api.md).",
        lifespan=lifespan,
    )
    app.state.coord = coord
    app.state.blobs = open_blobs(blobs) if isinstance(blobs, (str, Path)) else blobs
    app.state.user_token = user_token
    app.state.operator_token = operator_token or secrets.token_urlsafe(32)
    app.state.save_user_token = save_user_token
    app.state.auth_limiter = AuthLimiter(auth_max_failures, auth_window_s)
    app.include_router(routes_user.public)
    app.include_router(routes_node.router)
    app.include_router(routes_user.router)
    app.include_router(routes_admin.router)
    app.add_exception_handler(ShoalError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_internal_error)
    app.add_middleware(SizeLimit, limit=max_request_bytes)
    if lease is not None:
        app.add_middleware(RoleGate, coord=coord)  # outermost: a standby reads no body
    openapi.install(app)
    _mount_dashboard(app, coord)
    return app


def _mount_dashboard(app: FastAPI, coord: Coordinator) -> None:
    """The dashboard at ``/ui`` (docs/dashboard.md), ``/`` sends a browser there. Its
    sign-in takes only the user token (read at each check: a rotation ends every
    session); failed sign-ins count in the same rate limit as the API's."""
    sessions = Sessions(lambda: str(app.state.user_token), app.state.auth_limiter)
    app.mount("/ui", dashboard_app(CoordinatorSource(coord), sessions))

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse("/ui/", 307)
