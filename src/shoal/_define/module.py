"""``Module``: a package of task code plus what it needs to run (seed 001)."""

from __future__ import annotations

import ast
import inspect
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shoal._bundle import Bundle, bundle_path, bundle_source
from shoal._errors import Problem

if TYPE_CHECKING:
    from shoal._define.task import Task


def _caller_dir() -> Path | None:
    # The first frame outside shoal: relative paths in a swarm file are relative to it.
    frame = inspect.currentframe()
    here = Path(__file__).resolve().parent.parent
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith("<"):
            path = Path(filename).resolve()
            if here not in path.parents:
                return path.parent
        frame = frame.f_back
    return None


class Module:
    """Task code packaged for execution on nodes.

    Parameters
    ----------
    python_program
        A ``.py`` file defining ``main()``, a package folder whose ``__init__.py``
        defines ``main()``, or the source text of such a module. A relative path is
        resolved against the folder of the file that creates the Module, then against
        the working directory.
    image
        The execution environment (an interpreter or virtual environment on a node, or
        an OCI image for container executors). ``"python"`` is the node's own
        interpreter.
    datasets
        Names of datasets a node must expose to run this module.
    name, version
        Identification of the module; ``name`` defaults to the file or folder name.
    requirements
        Packages the module needs (recorded in the plan; the image must provide them).
    resources
        Resource needs such as ``{"cpu": 2, "memory": "4Gi", "gpu": 1}``.
    fresh_process
        Run every instance in a fresh task process. By default a node may run the
        next instance of this module (of the same swarm) in the process that ran the
        previous one, so module-level state may persist between instances (see
        docs/guarantees.md); set this for code that needs a clean process.
    maximum, alias, method
        The older Manta form (seed 000): a Module called directly in ``execute()`` runs
        as an implicit :class:`shoal.Task` with these options.
    """

    def __init__(
        self,
        python_program: str | os.PathLike[str] | None = None,
        image: str = "python",
        datasets: Iterable[str] | None = None,
        name: str | None = None,
        version: str | None = None,
        requirements: Iterable[str] | None = None,
        resources: Mapping[str, Any] | None = None,
        *,
        fresh_process: bool = False,
        maximum: int | float | None = None,
        alias: str | None = None,
        method: str | None = None,
    ) -> None:
        self.python_program = python_program
        self.image = image
        self.datasets = tuple(datasets or ())
        self.version = version
        self.requirements = tuple(requirements or ())
        self.resources = dict(resources or {})
        self.fresh_process = bool(fresh_process)
        self.maximum = maximum
        self.alias = alias
        self.method = method
        self._base_dir = _caller_dir()
        self._source, self._path = self._classify(python_program)
        self.name = name or self._default_name()
        self._implicit: Task | None = None
        self._bundle: Bundle | None = None

    def _classify(self, program: object) -> tuple[str | None, Path | None]:
        if program is None:
            return None, None
        if isinstance(program, str) and ("\n" in program or "def main" in program):
            return program, None
        path = Path(os.fspath(program))  # type: ignore[call-overload]
        bases = (
            [path]
            if path.is_absolute()
            else [*([self._base_dir / path] if self._base_dir else []), Path.cwd() / path]
        )
        # Like an import: "modules/aggregator" is the folder, else "modules/aggregator.py".
        candidates = [c for b in bases for c in (b, b.with_name(b.name + ".py"))]
        return None, next((c for c in candidates if c.exists()), bases[0])

    def _default_name(self) -> str:
        if self._path is not None:
            return self._path.stem if self._path.suffix == ".py" else self._path.name
        return "module"

    def __repr__(self) -> str:
        where = str(self._path) if self._path else "<source>" if self._source else None
        return f"Module({self.name!r}, program={where!r}, image={self.image!r})"

    # --------------------------------------------------------------- seed 000 form
    def __call__(self, *upstream: Any) -> Task:
        """Call the module's implicit task (the older Manta form, seed 000)."""
        return self.implicit_task()(*upstream)

    def implicit_task(self) -> Task:
        """The Task this module stands for when it is used directly in a graph."""
        from shoal._define.task import Task

        if self._implicit is None:
            self._implicit = Task(
                self,
                method=self.method or "all",
                maximum=self.maximum,
                alias=self.alias,
            )
        return self._implicit

    # ---------------------------------------------------------------- validation
    def problems(self, obj: str) -> list[Problem]:
        """Everything wrong with the module's code location, for the swarm's report."""
        fix_main = "define a top-level `def main():` that runs the task"
        if self._source is not None:
            return _check_source(self._source, f"{obj} (source text)", fix_main)
        if self._path is None:
            return [
                Problem(
                    "module.program",
                    obj,
                    "has no python_program",
                    "pass python_program= a .py file, a package folder or source text",
                )
            ]
        path = self._path
        if not path.exists():
            return [
                Problem(
                    "module.path",
                    obj,
                    f"python_program {str(self.python_program)!r} does not exist "
                    f"(looked at {path})",
                    "give a path relative to the swarm file or an absolute path",
                )
            ]
        if path.is_dir():
            init = path / "__init__.py"
            if not init.is_file():
                return [
                    Problem(
                        "module.package",
                        obj,
                        f"folder {path} has no __init__.py",
                        "add __init__.py with a `def main():` entry point",
                    )
                ]
            path = init
        elif path.suffix != ".py":
            return [Problem("module.path", obj, f"{path} is not a .py file", "use a .py file")]
        return _check_source(
            path.read_text(encoding="utf-8", errors="replace"), f"{obj} ({path})", fix_main
        )

    def all_requirements(self) -> tuple[str, ...]:
        """``requirements`` plus the lines of a ``requirements.txt`` in the module's
        folder (seed 001's directory module), in that order, each once. Comments, blank
        lines and pip options (``-r``, ``--index-url``) are skipped: the node checks
        distributions, it does not run pip with the file."""
        out = list(self.requirements)
        txt = self._path / "requirements.txt" if self._path is not None else None
        if txt is not None and txt.is_file():
            for line in txt.read_text(encoding="utf-8", errors="replace").splitlines():
                line = line.split(" #", 1)[0].strip()
                if line and not line.startswith(("#", "-")):
                    out.append(line)
        return tuple(dict.fromkeys(out))

    def bundle(self) -> Bundle:
        """Build (once) and return the module's deterministic bundle."""
        if self._bundle is None:
            if self._source is not None:
                self._bundle = bundle_source(self._source)
            else:
                assert self._path is not None
                self._bundle = bundle_path(self._path)
        return self._bundle


def _check_source(source: str, obj: str, fix: str) -> list[Problem]:
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        return [
            Problem(
                "module.syntax",
                obj,
                f"has a syntax error at line {e.lineno}: {e.msg}",
                "fix the syntax error",
            )
        ]
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "main":
            return []
        if isinstance(node, ast.ImportFrom) and any(
            (a.asname or a.name) == "main" for a in node.names
        ):
            return []
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "main" for t in node.targets
        ):
            return []
    return [Problem("module.main", obj, "defines no main() entry point", fix)]
