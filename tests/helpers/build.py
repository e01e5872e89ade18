"""Builders for the task code and small swarms that tests write again and again."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from shoal import Module, Swarm, Task


def task_source(body: str, cls: str = "T", imports: str = "import os, sys, time") -> str:
    """The source text of a module whose ``Task`` subclass ``cls`` runs ``body``.

    Parameters
    ----------
    body
        The statements of ``run(self)``, written at column 0.
    cls
        The name of the task class; ``main()`` runs it.
    imports
        Lines put before ``from shoal.runtime import Task``.
    """
    indented = "\n".join("        " + line for line in body.strip().splitlines())
    return (
        f"{imports}\nfrom shoal.runtime import Task\n\n"
        f"class {cls}(Task):\n    def run(self):\n{indented}\n\n"
        f"def main():\n    {cls}().run()\n"
    )


def task_module(
    body: str,
    cls: str = "T",
    *,
    imports: str = "import os, sys, time",
    datasets: Sequence[str] = (),
) -> Module:
    """A source-text :class:`~shoal.Module` (named ``cls.lower()``) running ``body``."""
    return Module(task_source(body, cls, imports), name=cls.lower(), datasets=list(datasets))


def one_task(
    body: str,
    node: str,
    *,
    imports: str = "import os, sys, time",
    datasets: Sequence[str] = (),
    timeout: float | None = None,
) -> Swarm:
    """A one-iteration swarm whose one task ``t`` (alias ``"t"``, as ``swarm.t``) runs
    ``body`` on node ``node`` only."""
    module = task_module(body, imports=imports, datasets=datasets)

    class One(Swarm):
        max_iterations = 1

        def __init__(self) -> None:
            self.t = Task(module, alias="t", specified_ids=[node], timeout=timeout)

        def execute(self) -> Task:
            return self.t()

    return One()


def write_bundle(folder: Path, code: str, entry: str = "task") -> Path:
    """Write a module bundle as a node unpacks it: ``shoal-module.json`` naming
    ``entry`` and the code in ``<entry>.py``; returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "shoal-module.json").write_text(json.dumps({"entry": entry}))
    (folder / f"{entry}.py").write_text(code)
    return folder
