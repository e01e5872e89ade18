"""The ``shoal`` command line (typer)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

import shoal
from shoal._errors import ShoalError

app = typer.Typer(
    name="shoal",
    help="Define a distributed algorithm once, as a swarm; simulate it or deploy it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)


def fail(e: ShoalError | str, code: int = 2) -> NoReturn:
    """Print one readable paragraph (never a raw traceback) and exit non-zero."""
    err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"shoal {shoal.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Define a distributed algorithm once, as a swarm; simulate it or deploy it."""


@app.command()
def export(
    target: Annotated[str, typer.Argument(help="path/to/swarm.py[:ClassName]")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write plan.json")] = Path(
        "plan.json"
    ),
) -> None:
    """Compile a swarm to a plan (JSON) and write its module bundles beside it."""
    from shoal._define.compile import compile_swarm
    from shoal._define.loader import load_swarm

    try:
        swarm, source = load_swarm(target)
        compiled = compile_swarm(swarm, source=source)
    except ShoalError as e:
        fail(e)
    output.parent.mkdir(parents=True, exist_ok=True)
    bundle_dir = output.parent / "bundles"
    bundle_dir.mkdir(exist_ok=True)
    for digest, b in compiled.bundles.items():
        (bundle_dir / f"{digest.removeprefix('sha256:')}.zip").write_bytes(b.data)
    output.write_text(compiled.plan.to_json(), encoding="utf-8")
    typer.echo(
        f"wrote {output} ({len(compiled.plan.tasks)} tasks) and "
        f"{len(compiled.bundles)} bundle(s) in {bundle_dir}"
    )


def main() -> None:
    """Entry point of the ``shoal`` console script."""
    from shoal._cli import identity, metrics, new, remote, services, simulate, ui, up  # noqa: F401

    sys.exit(app())
