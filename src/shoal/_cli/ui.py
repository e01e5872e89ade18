"""``shoal ui RUN_DIR...``: the dashboard of simulator runs (docs/dashboard.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from shoal._cli.app import app, fail

if TYPE_CHECKING:
    from shoal._ui.serve import FolderServer

out = Console()


def start_dashboard(folders: list[Path], host: str, port: int, auth: bool) -> FolderServer:
    """Start serving ``folders`` in a thread; print where and how to sign in; return the
    server (``.stop()`` ends it)."""
    from shoal._ui.serve import FolderServer

    server = FolderServer(folders, host=host, port=port, auth=auth)
    try:
        url = server.start()
    except (RuntimeError, OSError) as e:
        fail(f"the dashboard could not listen on {host}:{port}: {e}")
    out.print(f"dashboard: {url}", highlight=False, soft_wrap=True)
    if auth:
        # The terminal, not a page, is where the token is shown (the sign-in form asks it).
        out.print(f"sign in with the token: {server.token}", highlight=False, soft_wrap=True)
    return server


@app.command()
def ui(
    run_dirs: Annotated[
        list[Path], typer.Argument(help="Run folders (.shoal/runs/<ts>); several to compare.")
    ],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free one).")] = 8765,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="No sign-in (only on a machine of your own).")
    ] = False,
) -> None:
    """Serve the dashboard of simulator runs, live while `shoal simulate` writes them."""
    for d in run_dirs:
        if not d.is_dir():
            fail(f"{d} is not a folder: pass a run folder of `shoal simulate` (.shoal/runs/...)")
    server = start_dashboard(run_dirs, host, port, not no_auth)
    out.print("Ctrl-C stops it.")
    serve_until_interrupted(server)


def serve_until_interrupted(server: FolderServer) -> None:
    """Wait for Ctrl-C (or the server's end), then stop the server."""
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
