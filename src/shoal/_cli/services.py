"""``shoal coordinator start`` and ``shoal node start``: the long-running services (the
identity commands, ``shoal coordinator token|node|user-token`` and ``shoal node
rotate-credential``, are in :mod:`shoal._cli.identity`).

The service modules are imported inside the commands, so the rest of the CLI works
without their dependencies.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated, Any

import typer

from shoal._cli.app import app, fail
from shoal._errors import ShoalError

DEFAULT_PORT = 8750  # as shoal._coord.server.DEFAULT_PORT
DEFAULT_STATE = Path(".shoal") / "coordinator"

coordinator_app = typer.Typer(
    help="Run a coordinator: the service nodes join and users deploy swarms to.",
    no_args_is_help=True,
)
node_app = typer.Typer(help="Run a node agent: one per site.", no_args_is_help=True)
app.add_typer(coordinator_app, name="coordinator")
app.add_typer(node_app, name="node")


def load_service(module: str, what: str) -> Any:
    """Import a service module, or fail with one paragraph naming what is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        fail(
            f"cannot start the {what}: importing {module} failed ({e})",
        )


def tokens(state: Path) -> tuple[str, str]:
    """The coordinator's (join token, user token) kept in ``state``, made if missing
    (and its operator token)."""
    server = load_service("shoal._coord.server", "coordinator")
    try:
        found = server.read_tokens(state)
    except ShoalError as e:
        fail(e)
    except OSError as e:
        fail(f"cannot read or write the coordinator's tokens in {state}: {e}")
    return str(found.join), str(found.user)


def public_url(host: str, port: int, tls: bool) -> str:
    """The URL clients on this machine use for a coordinator bound to ``host``."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}"


@coordinator_app.command("start")
def coordinator_start(
    db: Annotated[
        str | None,
        typer.Option(
            help="Store URL: sqlite:///PATH or postgresql+psycopg://... "
            "(default: sqlite:///STATE/shoal.db).",
            show_default=False,
        ),
    ] = None,
    state: Annotated[
        Path, typer.Option(help="Folder for tokens, blobs and the default SQLite database.")
    ] = DEFAULT_STATE,
    blobs: Annotated[
        str | None,
        typer.Option(
            help="Folder for large values, or s3://bucket/prefix (endpoint and credentials"
            " from the usual AWS settings) (default: STATE/blobs).",
            show_default=False,
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = DEFAULT_PORT,
    tls_cert: Annotated[
        Path | None, typer.Option(help="PEM certificate (with --tls-key).", show_default=False)
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="PEM private key (with --tls-cert).", show_default=False)
    ] = None,
    max_request_mb: Annotated[
        float, typer.Option(help="Larger request bodies get 413 (blob uploads are exempt).")
    ] = 64.0,
    advertise: Annotated[
        str | None,
        typer.Option(
            help="The URL others reach this coordinator at; with several coordinators on "
            "one PostgreSQL database, standbys name it (default: http(s)://HOST:PORT).",
            show_default=False,
        ),
    ] = None,
    log_level: Annotated[
        str,
        typer.Option(
            help="debug | info | warning | error (debug also shows the store's migrations)."
        ),
    ] = "info",
) -> None:
    """Start the coordinator and print the user token line (keep it secret)."""
    if (tls_cert is None) != (tls_key is None):
        fail("--tls-cert and --tls-key go together: give both, or neither for plain HTTP")
    for path in (tls_cert, tls_key):
        if path is not None and not path.is_file():
            fail(f"{path} does not exist; give the PEM file of the certificate and its key")
    if not 1 <= port <= 65535:
        fail(f"--port {port} is not a port number (1-65535)")
    if log_level.lower() not in ("debug", "info", "warning", "error"):
        fail(f"--log-level {log_level!r} is not one of debug, info, warning, error")
    if not max_request_mb > 0:
        fail(f"--max-request-mb {max_request_mb:g} must be positive")
    state = state.resolve()
    try:
        state.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(f"cannot create the state folder {state}: {e}")
    server = load_service("shoal._coord.server", "coordinator")
    # An object store URL is kept as it is; a folder is made absolute.
    blobs_dir: str | Path = (
        blobs if blobs and "://" in blobs else (Path(blobs) if blobs else state / "blobs").resolve()
    )
    db_url = db or f"sqlite:///{state / 'shoal.db'}"
    _, user = tokens(state)
    url = public_url(host, port, tls_cert is not None)
    typer.echo(f"shoal coordinator on {url} (state {state})")
    typer.echo(f"export SHOAL_COORDINATOR={url} SHOAL_TOKEN={user}")
    typer.echo(f"nodes join with the token of: shoal coordinator token --state {state}")
    try:
        server.serve(
            db_url,
            state,
            blobs_dir,
            host,
            port,
            tls_cert,
            tls_key,
            max_request_mb=max_request_mb,
            log_level=log_level.lower(),
            advertise=advertise,
        )
    except ShoalError as e:
        fail(e)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@node_app.command("start")
def node_start(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="The node's TOML config file.")
    ] = Path("node.toml"),
) -> None:
    """Start a node agent: enrol with the coordinator, then run the instances it sends."""
    if not config.is_file():
        fail(
            f"node config {config} does not exist; write a TOML file with node_id, "
            "coordinator, join_token_file, state_dir and [datasets]"
        )
    agent = load_service("shoal._node.agent", "node agent")
    try:
        agent.run(config)
    except ShoalError as e:
        fail(e)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
