"""Serve the dashboard of simulator run folders (``shoal ui``, ``shoal simulate --ui``)."""

from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

from shoal._ui.auth import Sessions
from shoal._ui.folder import RunFolders
from shoal._ui.pages import dashboard_app


class FolderServer:
    """A uvicorn server for run folders, in this process.

    Parameters
    ----------
    folders
        The run folders.
    host, port
        Where to listen (default loopback; port 0: any free one).
    auth
        Whether a browser must sign in with :attr:`token` (a random token printed to
        the terminal); without it anyone who can reach ``host:port`` reads the run.
    """

    def __init__(
        self, folders: list[Path], host: str = "127.0.0.1", port: int = 0, auth: bool = True
    ) -> None:
        self.token = secrets.token_urlsafe(24)
        token = self.token
        sessions = Sessions(lambda: token) if auth else None
        self.source = RunFolders(folders)
        app = dashboard_app(self.source, sessions)
        config = uvicorn.Config(
            with_root(app),
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The dashboard's address (once started)."""
        servers = getattr(self.server, "servers", [])
        for srv in servers:
            for sock in srv.sockets:
                host, port = sock.getsockname()[:2]
                return f"http://{host}:{port}/ui/"
        raise RuntimeError("the dashboard server has not started")

    def start(self, timeout: float = 10.0) -> str:
        """Start serving in a thread; return the URL (bounded wait for the socket)."""
        self._thread = threading.Thread(target=self.server.run, name="shoal-ui", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"the dashboard server did not start within {timeout} s")
            time.sleep(0.05)
        return self.url

    def wait(self) -> None:
        """Block until the server ends (Ctrl-C reaches this thread: it joins in steps)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(0.5)

    def stop(self) -> None:
        """Stop serving (and wait for the thread, bounded)."""
        self.source.closing = True  # live streams end within a poll
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)


def with_root(app: ASGIApp) -> Starlette:
    """The dashboard under ``/ui`` (where the coordinator serves it), ``/`` sent there."""

    async def home(request: Request) -> Response:
        return RedirectResponse("/ui/", 307)

    return Starlette(routes=[Route("/", home), Mount("/ui", app=app)])
