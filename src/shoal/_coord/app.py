"""The coordinator's FastAPI app (docs/api.md)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from shoal._coord import openapi, routes_node, routes_user
from shoal._coord.driver import Coordinator
from shoal._coord.http import (
    SizeLimit,
    on_api_error,
    on_http_error,
    on_internal_error,
    on_validation_error,
)
from shoal._errors import ShoalError
from shoal._store.base import Store
from shoal._store.blobs import BlobStore
from shoal._version import __version__

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
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
    blobs: BlobStore | Path | str,
    join_token: str,
    user_token: str,
    heartbeat_timeout_s: float = 15.0,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
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
        Accepted only by ``POST /v1/nodes/enrol``.
    user_token
        The bearer token of user routes.
    heartbeat_timeout_s
        A node silent for this long is lost (its instances fail with kind ``lost``).
    max_request_bytes
        Larger request bodies get 413 (blob uploads are exempt); most routes have a
        smaller limit of their own (:func:`shoal._coord.http.body_limit`).

    Returns
    -------
    FastAPI
        The app; ``app.state.coord`` is its :class:`~shoal._coord.driver.Coordinator`.
    """
    coord = Coordinator(store, heartbeat_timeout_s=heartbeat_timeout_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(coord.recover)
        coord.start()
        watch = asyncio.create_task(_watch_loop(coord))
        try:
            yield
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
            coord.stop()

    app = FastAPI(
        title="shoal coordinator",
        version=__version__,
        description="Node and user API of a shoal coordinator (docs/api.md).",
        lifespan=lifespan,
    )
    app.state.coord = coord
    app.state.blobs = blobs if isinstance(blobs, BlobStore) else BlobStore(Path(blobs))
    app.state.join_token = join_token
    app.state.user_token = user_token
    app.include_router(routes_user.public)
    app.include_router(routes_node.router)
    app.include_router(routes_user.router)
    app.add_exception_handler(ShoalError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_internal_error)
    app.add_middleware(SizeLimit, limit=max_request_bytes)
    openapi.install(app)
    return app
