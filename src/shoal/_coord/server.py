"""Run the coordinator: tokens and folders on disk, a store, uvicorn.

``shoal coordinator start`` and ``shoal coordinator token`` call :func:`serve` and
:func:`read_tokens`; ``python -m shoal._coord`` does the same without the CLI.

The state folder (mode 0700) holds three secrets, each in a file of mode 0600: the
default join token (``join-token``), the user API token (``user-token``) and the
operator token (``operator-token``, read by the ``shoal coordinator`` commands that
manage identities), and ``coordinator.json``: where the running coordinator listens
(the URL, and the certificate to trust when it speaks TLS).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from shoal._coord.app import DEFAULT_MAX_REQUEST_BYTES, DEFAULT_SWARM_QUOTA_BYTES, create_app
from shoal._coord.ratelimit import DEFAULT_MAX_FAILURES, DEFAULT_WINDOW_S
from shoal._errors import ShoalError
from shoal._store.base import Store
from shoal._store.lease import open_lease

log = logging.getLogger("shoal.coordinator")

JOIN_TOKEN_FILE = "join-token"
USER_TOKEN_FILE = "user-token"
OPERATOR_TOKEN_FILE = "operator-token"
ENDPOINT_FILE = "coordinator.json"
DEFAULT_PORT = 8750
#: The listening socket's accept queue (the kernel caps it at net.core.somaxconn).
LISTEN_BACKLOG = 8192


@dataclass(frozen=True)
class Tokens:
    """The coordinator's secrets: the default join token (nodes enrol with it), the
    user API token and the operator token."""

    join: str
    user: str
    operator: str


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


def _write_private(path: Path, text: str) -> None:
    """Replace a file atomically with ``text``, never readable by others."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_tokens(state_dir: Path | str) -> Tokens:
    """The join, user and operator tokens kept in ``state_dir`` (created on first use).

    Parameters
    ----------
    state_dir
        The coordinator's state folder (created with mode 0700 if missing).
    """
    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    state.chmod(0o700)  # also when an older version left it 0755
    return Tokens(
        _token_file(state / JOIN_TOKEN_FILE),
        _token_file(state / USER_TOKEN_FILE),
        _token_file(state / OPERATOR_TOKEN_FILE),
    )


def save_user_token(state_dir: Path | str, token: str) -> None:
    """Write a new user token into ``state_dir`` (mode 0600)."""
    _write_private(Path(state_dir) / USER_TOKEN_FILE, token + "\n")


def local_url(host: str, port: int, tls: bool) -> str:
    """The URL this machine reaches a coordinator bound to ``host`` at."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}"


def write_endpoint(state_dir: Path | str, url: str, ca_cert: Path | str | None) -> None:
    """Record where the coordinator of ``state_dir`` listens (``coordinator.json``)."""
    doc = {"url": url, "ca_cert": None if ca_cert is None else str(Path(ca_cert).resolve())}
    _write_private(Path(state_dir) / ENDPOINT_FILE, json.dumps(doc) + "\n")


def private_database(db_url: str) -> None:
    """Make a SQLite database file and its ``-wal`` / ``-shm`` files 0600 (files made
    later are: :func:`serve` sets the umask to 077). Nothing for other databases."""
    if db_url in ("memory", "memory://"):
        return
    from shoal._store.sqlengine import is_sqlite_memory, normalize_url

    url = normalize_url(db_url)
    if url.get_backend_name() != "sqlite" or is_sqlite_memory(url) or not url.database:
        return
    for suffix in ("", "-wal", "-shm", "-journal"):
        path = Path(url.database + suffix)
        if path.exists():
            path.chmod(0o600)


def default_db_url(state_dir: Path | str) -> str:
    """``sqlite:///<state_dir>/shoal.db``."""
    return f"sqlite:///{Path(state_dir).resolve() / 'shoal.db'}"


def open_store(db_url: str) -> Store:
    """A store for a database URL (``memory://``: in this process only, for tests).

    Raises
    ------
    ShoalError
        ``store.empty_file`` for an empty SQLite file, ``store.event_gap`` for an event
        log with a gap (a damaged database is refused, never started on), and the
        errors of :class:`~shoal._store.sql.SQLStore`.
    """
    if db_url in ("memory", "memory://"):
        from shoal._store.memory import MemoryStore

        return MemoryStore()
    from shoal._store.sql import SQLStore

    store = SQLStore(db_url)
    try:
        store.check_events()  # replay checks it too; this says so before uvicorn starts
    except BaseException:
        store.close()
        raise
    return store


#: The exit status of a coordinator that lost its lease (a supervisor restarts it; it
#: comes back as a standby).
EXIT_LEASE_LOST = 3


def _exit_lease_lost() -> None:
    """Stop at once: a coordinator without its lease must not answer another request
    (a standby may be driving already); nothing it holds in memory is needed."""
    logging.shutdown()
    os._exit(EXIT_LEASE_LOST)


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
    auth_max_failures: int = DEFAULT_MAX_FAILURES,
    auth_window_s: float = DEFAULT_WINDOW_S,
    swarm_quota_mb: float = DEFAULT_SWARM_QUOTA_BYTES / 2**20,
    advertise: str | None = None,
) -> None:
    """Serve the coordinator until interrupted (SIGINT / SIGTERM).

    On PostgreSQL, several coordinators may serve one database: the one holding the
    lease drives the engine, the others are standbys that take over when it dies
    (:mod:`shoal._coord.failover`, docs/scale.md). A coordinator that loses its lease
    exits at once with status :data:`EXIT_LEASE_LOST`.

    Parameters
    ----------
    db_url
        Store URL (``sqlite:///...``, ``postgresql://...``); None: SQLite in
        ``state_dir``.
    state_dir
        Holds the join and user tokens, the default database and blobs; made private to
        the coordinator's user (folders 0700, files 0600).
    blobs_dir
        Blob folder or ``s3://bucket/prefix`` (default ``state_dir/blobs``).
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
    auth_max_failures, auth_window_s
        A source address that failed to authenticate this many times in this many
        seconds gets 429 until the window has passed (0: no limit).
    swarm_quota_mb
        The most MiB of values (stored as blobs) one swarm may keep; past it a world
        call gets 413 ``swarm.quota`` and its instance fails (0: no bound).
    advertise
        The URL other coordinators and clients reach this one at (shown by standbys
        as the active coordinator's address); default: the local URL of host:port.
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
    # alembic tells every migration step (and plugin set-up) at INFO, at each start:
    # noise for an operator; `--log-level debug` shows it.
    quiet = log_level.lower() != "debug"
    logging.getLogger("alembic").setLevel(logging.WARNING if quiet else logging.DEBUG)
    # Everything the coordinator writes is private to its user: folders 0700, files
    # 0600 (the database, its journal files, tokens, blobs), also those made later.
    os.umask(0o077)
    state = Path(state_dir)
    tokens = read_tokens(state)
    db_url = db_url or default_db_url(state)
    store = open_store(db_url)
    private_database(db_url)
    url = local_url(host, port, tls_cert is not None)
    try:
        lease = open_lease(store, advertise or url)
    except BaseException:
        close = getattr(store, "close", None)
        if close is not None:
            close()
        raise
    app = create_app(
        store,
        blobs_dir if blobs_dir is not None else state / "blobs",  # a folder or s3://...
        tokens.join,
        tokens.user,
        heartbeat_timeout_s=heartbeat_timeout_s,
        max_request_bytes=int(max_request_mb * 2**20),
        operator_token=tokens.operator,
        save_user_token=lambda token: save_user_token(state, token),
        auth_max_failures=auth_max_failures,
        auth_window_s=auth_window_s,
        swarm_quota_bytes=int(swarm_quota_mb * 2**20) or None,
        lease=lease,
        on_lease_lost=_exit_lease_lost,
    )
    write_endpoint(state, url, tls_cert)
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
