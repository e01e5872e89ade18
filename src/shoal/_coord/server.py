"""Run the coordinator: tokens and folders on disk, a store, uvicorn.

``shoal coordinator start`` and ``shoal coordinator token`` call :func:`serve` and
:func:`read_tokens`; ``python -m shoal._coord`` does the same without the CLI.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from shoal._coord.app import DEFAULT_MAX_REQUEST_BYTES, create_app
from shoal._errors import ShoalError
from shoal._store.base import Store

log = logging.getLogger("shoal.coordinator")

JOIN_TOKEN_FILE = "join-token"
USER_TOKEN_FILE = "user-token"
DEFAULT_PORT = 8750
#: The listening socket's accept queue (the kernel caps it at net.core.somaxconn).
LISTEN_BACKLOG = 8192


@dataclass(frozen=True)
class Tokens:
    """The coordinator's secrets: the join token (nodes enrol with it) and the user
    API token."""

    join: str
    user: str


def _token_file(path: Path) -> str:
    """Read a token file, creating it (mode 0600) with a fresh random token if missing."""
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    if token:
        return token
    token = secrets.token_urlsafe(32)
    # O_EXCL + 0600: the secret is never readable by others, not even for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def read_tokens(state_dir: Path | str) -> Tokens:
    """The join and user tokens kept in ``state_dir`` (created on first use).

    Parameters
    ----------
    state_dir
        The coordinator's state folder (created with mode 0700 if missing).
    """
    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    return Tokens(_token_file(state / JOIN_TOKEN_FILE), _token_file(state / USER_TOKEN_FILE))


def default_db_url(state_dir: Path | str) -> str:
    """``sqlite:///<state_dir>/shoal.db``."""
    return f"sqlite:///{Path(state_dir).resolve() / 'shoal.db'}"


def open_store(db_url: str) -> Store:
    """A store for a database URL (``memory://``: in this process only, for tests)."""
    if db_url in ("memory", "memory://"):
        from shoal._store.memory import MemoryStore

        return MemoryStore()
    from shoal._store.sql import SQLStore

    return SQLStore(db_url)


def serve(
    db_url: str | None,
    state_dir: Path | str,
    blobs_dir: Path | str | None = None,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    tls_cert: Path | str | None = None,
    tls_key: Path | str | None = None,
    max_request_mb: float = DEFAULT_MAX_REQUEST_BYTES / 2**20,
    heartbeat_timeout_s: float = 15.0,
    log_level: str = "info",
    access_log: bool = False,
) -> None:
    """Serve the coordinator until interrupted (SIGINT / SIGTERM).

    Parameters
    ----------
    db_url
        Store URL (``sqlite:///...``, ``postgresql://...``); None: SQLite in
        ``state_dir``.
    state_dir
        Holds the join and user tokens (0600), the default database and blobs.
    blobs_dir
        Blob folder (default ``state_dir/blobs``).
    host, port
        Where to listen.
    tls_cert, tls_key
        PEM files; both or neither. With them the coordinator speaks HTTPS only.
    max_request_mb
        Request bodies above this get 413 (blob uploads are exempt).
    heartbeat_timeout_s
        Silence after which a node counts as lost.
    log_level
        Level of the coordinator's and uvicorn's logs.
    access_log
        Log every request (off by default: each long poll and world call is one).
    """
    import uvicorn

    if (tls_cert is None) != (tls_key is None):
        raise ShoalError(
            "TLS needs both a certificate and a key",
            code="coord.tls",
            hint="pass --tls-cert CERT.pem and --tls-key KEY.pem, or neither",
        )
    if not logging.getLogger().handlers:  # the CLI configures none; say what happens
        logging.basicConfig(
            level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    state = Path(state_dir)
    tokens = read_tokens(state)
    store = open_store(db_url or default_db_url(state))
    app = create_app(
        store,
        Path(blobs_dir) if blobs_dir is not None else state / "blobs",
        tokens.join,
        tokens.user,
        heartbeat_timeout_s=heartbeat_timeout_s,
        max_request_bytes=int(max_request_mb * 2**20),
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        ssl_certfile=None if tls_cert is None else str(tls_cert),
        ssl_keyfile=None if tls_key is None else str(tls_key),
        timeout_graceful_shutdown=5,
        # Agents open a connection for most requests (a kept-alive one expires between
        # two heartbeats): thousands of nodes whose runs arrive together overflow a
        # short accept queue, and a dropped SYN is retried only after 1, 3, 7 s.
        backlog=LISTEN_BACKLOG,
        # Long polls hold connections for up to a minute; keep idle ones a bit longer.
        timeout_keep_alive=75,
    )
    if tls_cert is None and host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "serving plain HTTP on %s: tokens and values cross the network unencrypted; "
            "pass --tls-cert/--tls-key",
            host,
        )
    coord = app.state.coord

    class _Server(uvicorn.Server):
        # uvicorn waits for in-flight requests before the app's shutdown runs, and
        # long polls would hold it for up to a minute: end them when the signal comes.
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            coord.close_waits()

    try:
        _Server(config).run()
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()
