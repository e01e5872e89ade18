"""``shoal new NAME``: write a runnable project from a template shipped in the package.

A template is a folder under ``shoal/_cli/templates``; every file in it ends in
``.tmpl`` (so that tools which scan the package, such as mypy and the layering test,
do not read the project's code as shoal's) and is written without that suffix, with
``{{project}}`` replaced by the project's name. A name starting ``dot-`` is written with
a dot instead (``dot-gitignore.tmpl`` -> ``.gitignore``): package data skips dotfiles.
"""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from shoal._cli.app import app, err, fail

if TYPE_CHECKING:
    from importlib.abc import Traversable  # importlib.resources.abc from Python 3.11

TEMPLATES = {
    "fedavg-numpy": "FedAvg of a softmax regression on the 8x8 digits, numpy only",
    "fedavg-torch": "FedAvg of a small CNN on the 8x8 digits with PyTorch (CPU)",
    "analytics": "federated statistics (count, mean, std, min, max) of a table per site",
}
SUFFIX = ".tmpl"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def template_files(template: str) -> dict[str, str]:
    """The files of ``template`` as ``{relative path: text}``, rendered names without
    the ``.tmpl`` suffix and ``{{project}}`` left in place."""
    found: dict[str, str] = {}

    def walk(node: Traversable, prefix: str) -> None:
        for entry in sorted(node.iterdir(), key=lambda e: e.name):
            if entry.is_dir():
                walk(entry, f"{prefix}{entry.name}/")
            elif entry.name.endswith(SUFFIX):
                name = entry.name[: -len(SUFFIX)]
                if name.startswith("dot-"):
                    name = "." + name[len("dot-") :]
                found[prefix + name] = entry.read_text(encoding="utf-8")

    walk(files("shoal._cli") / "templates" / template, "")
    return found


def render(template: str, project: str) -> dict[str, str]:
    """The project's files: ``{relative path: text}``."""
    return {
        path: text.replace("{{project}}", project)
        for path, text in template_files(template).items()
    }


@app.command()
def new(
    name: Annotated[Path, typer.Argument(help="The project folder to create (its name names it).")],
    template: Annotated[
        str,
        typer.Option(
            "--template",
            "-t",
            help="What to start from: " + "; ".join(f"{k}: {v}" for k, v in TEMPLATES.items()),
        ),
    ] = "fedavg-numpy",
) -> None:
    """Create a runnable project: a swarm, its modules, a README and a test."""
    if template not in TEMPLATES:
        fail(
            f"there is no template {template!r}; choose one of: "
            + ", ".join(f"{k} ({v})" for k, v in TEMPLATES.items())
        )
    project = name.resolve().name
    if not _NAME.fullmatch(project):
        fail(
            f"{project!r} is not a project name: use 1 to 64 letters, digits, '.', '_' or "
            "'-', starting with a letter or digit"
        )
    if name.exists() and (not name.is_dir() or any(name.iterdir())):
        fail(f"{name} already exists and is not an empty folder; choose another NAME")
    written = render(template, project)
    try:
        for rel, text in written.items():
            path = name / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    except OSError as e:
        fail(f"cannot write the project into {name}: {e}")
    typer.echo(f"created {name} from the template {template}: {TEMPLATES[template]}")
    for rel in written:
        typer.echo(f"  {name / rel}")
    err.print(
        f"next: cd {name} and follow its README.md (make the data, `shoal simulate`, `pytest`)",
        style="dim",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
