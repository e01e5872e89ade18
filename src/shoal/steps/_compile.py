"""Compile an :class:`Artifact` to a Swarm of ready-made library modules.

Each step is one task, its module a few lines that call :func:`shoal.steps._entry.
run_step` with the step as JSON; consecutive steps are joined by edges. ``Initialize``
and ``Finalize`` run on the initiator (``specified_ids`` when the artifact names one,
else ``method="any", maximum=1``); ``Parallel`` runs on every node with the dataset.
The distributions map onto these edges: every receiver reads its senders' products.
The steps of an ``Iterate`` at position i are tasks of the inner loop ``iterate<i>``
(``Swarm.add_loop``); its ``until`` reads a number from its last step's products.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from shoal import Module, Swarm, Task
from shoal._steps._artifact import Artifact, Iterate, RoundRobin, Sequential
from shoal._steps._entity import _REGISTRY, StepsError
from shoal._steps._learn_ops import fit_steps
from shoal.steps._entry import PRODUCTS

_SOURCE = '''"""Step {index} of artifact {name!r}: a ready-made module of shoal's steps library."""

from shoal.steps._entry import run_step

SPEC = {spec!r}


def main() -> None:
    run_step(SPEC, __file__)
'''


def _kinds(value: Any) -> set[str]:
    out: set[str] = set()
    if isinstance(value, dict):
        if "kind" in value and isinstance(value["kind"], str):
            out.add(value["kind"])
        for v in value.values():
            out |= _kinds(v)
    elif isinstance(value, list):
        for v in value:
            out |= _kinds(v)
    return out


def _user_modules(spec: dict[str, Any]) -> dict[str, Path]:
    """``{module name: file}`` of every entity class outside shoal the step names."""
    out: dict[str, Path] = {}
    for kind in _kinds(spec):
        cls = _REGISTRY.get(kind)
        if cls is None or kind.startswith("shoal."):
            continue
        name = kind[: -len(cls.__qualname__) - 1]
        file = getattr(sys.modules.get(name), "__file__", None)
        if "." in name or name == "__main__" or file is None:
            raise StepsError(
                f"{cls.__name__} is defined in module {name!r}, which cannot be bundled",
                hint="define user operations in a top-level .py module (e.g. my_ops.py) "
                "and import it in the artifact file",
            )
        out[name] = Path(file)
    return out


def _module(artifact: Artifact, index: int, carry: str | None = None) -> Module:
    flat = artifact.flat_steps()
    step = flat[index][0]
    spec = artifact.step_spec(index)
    users = _user_modules(spec)
    spec["modules"] = sorted(users)
    spec["last"] = index == len(flat) - 1
    if carry is not None:  # the first step of an Iterate: later passes read this alias
        spec["carry"] = carry
    source = _SOURCE.format(index=index, name=artifact.name, spec=json.dumps(spec))
    datasets = [artifact.dataset] if step.operation.reads_data and artifact.dataset else []
    name = f"steps_{artifact.name}_{index}"
    if not users:
        return Module(source, datasets=datasets, name=name)
    # A package: the entry as __init__.py and each user module beside it.
    folder = Path(tempfile.mkdtemp(prefix="shoal-steps-")) / name
    folder.mkdir()
    (folder / "__init__.py").write_text(source)
    for mod, file in users.items():
        shutil.copyfile(file, folder / f"{mod}.py")
    return Module(str(folder), datasets=datasets, name=name)


class ArtifactSwarm(Swarm):
    """The Swarm an artifact compiles to: one task per step, in a line."""

    def __init__(self, artifact: Artifact) -> None:
        super().__init__()
        self.name = artifact.name
        self.max_iterations = 1
        self.step_tasks: list[Task] = []
        flat = artifact.flat_steps()
        for at, it in enumerate(artifact.steps):
            if isinstance(it, Iterate):
                until = None
                if it.until is not None:
                    until = {
                        "tag": PRODUCTS,
                        "key": it.until["metric"],
                        "op": it.until["op"],
                        "value": float(it.until["value"]),
                    }
                self.add_loop(f"iterate{at}", times=it.iterations, until=until)
        for i, (step, within) in enumerate(flat):
            options: dict[str, Any] = {
                "alias": f"step{i}",
                "retries": step.retries,
                "timeout": step.timeout,
            }
            carry = None
            if within is not None:
                options["loop"] = f"iterate{within}"
                if i == 0 or flat[i - 1][1] != within:  # the Iterate's first step
                    last = max(j for j, (_, a) in enumerate(flat) if a == within)
                    carry = f"step{last}"
            if isinstance(step, Sequential):
                options["order"] = "chain"
            elif isinstance(step, RoundRobin):
                options.update(order="ring", rounds=step.rounds)
            if step.on_one_node():
                options.update(method="any", maximum=1)
                if artifact.initiator is not None:
                    options["specified_ids"] = [artifact.initiator]
            self.step_tasks.append(Task(_module(artifact, i, carry), **options))

    def execute(self) -> Task:
        """Each step feeds the next."""
        last = self.step_tasks[0]()
        for task in self.step_tasks[1:]:
            last = task(last)
        return last


def to_swarm(artifact: Artifact) -> Swarm:
    """The Swarm ``artifact`` compiles to (run it like any swarm).

    Transformers in model operations' queries are fitted by steps inserted first
    (:func:`shoal._steps._learn_ops.fit_steps`).
    """
    return ArtifactSwarm(fit_steps(artifact))
