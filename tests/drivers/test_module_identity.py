"""A module is its whole declaration, not its code (issue #14, point 4).

Two tasks whose modules have the same files but different ``datasets`` (or image,
version, resources) must keep their own declaration in the plan, and each runs where
its own declaration says: through the simulator driver and the coordinator driver.
The bundle is still shared by digest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shoal import Module, Swarm, Task, load_plan
from shoal._define.compile import compile_swarm
from shoal.testing import Federation

from .coord_federation import CoordFederation

pytestmark = pytest.mark.timeout(60)

# The same bytes for every module below: only the declarations differ.
CODE = """
from shoal.runtime import Task


class T(Task):
    def run(self):
        have = []
        for name in ("da", "dc"):
            try:
                self.local.get_dataset_path(name)
            except Exception:
                continue
            have.append(name)
        self.world.globals["ran_" + self.world.node_id] = have


def main():
    T().run()
"""


class TwoDeclarations(Swarm):
    """Task ``ta`` needs dataset ``da``, task ``tc`` needs ``dc``; one code."""

    max_iterations = 1
    placement_timeout = 5.0

    def __init__(self) -> None:
        super().__init__()
        self.ta = Task(Module(CODE, name="same", datasets=["da"]), alias="ta")
        self.tc = Task(Module(CODE, name="same", datasets=["dc"]), alias="tc")

    def execute(self) -> list[Task]:
        return [self.ta(), self.tc()]


def _nodes(tmp_path: Path) -> dict[str, dict[str, Path]]:
    for name in ("da", "dc"):
        np.save(tmp_path / f"{name}.npy", np.arange(3))
    return {"node-a": {"da": tmp_path / "da.npy"}, "node-c": {"dc": tmp_path / "dc.npy"}}


def test_same_code_different_datasets_is_two_entries_sharing_one_bundle() -> None:
    compiled = compile_swarm(TwoDeclarations())
    plan = load_plan(compiled.plan.to_json())  # as exported, then read back
    assert len(plan.modules) == 2 and len(compiled.bundles) == 1
    (digest,) = compiled.bundles
    refs = {t.alias: plan.modules[t.module] for t in plan.tasks}
    assert refs["ta"].datasets == ("da",) and refs["tc"].datasets == ("dc",)
    assert refs["ta"].digest == refs["tc"].digest == digest
    doc = json.loads(compiled.plan.to_json())
    assert {m["digest"] for m in doc["modules"].values()} == {digest}


@pytest.mark.parametrize(
    "other",
    [
        {"image": "torch"},
        {"version": "2"},
        {"resources": {"cpu": 2}},
        {"requirements": ["numpy"]},
        {"name": "renamed"},
    ],
    ids=lambda o: next(iter(o)),
)
def test_any_other_difference_is_its_own_entry(other: dict[str, Any]) -> None:
    class S(Swarm):
        max_iterations = 1

        def __init__(self) -> None:
            super().__init__()
            self.a = Task(Module(CODE, name="same"), alias="a")
            self.b = Task(Module(CODE, **{"name": "same", **other}), alias="b")

        def execute(self) -> list[Task]:
            return [self.a(), self.b()]

    compiled = compile_swarm(S())
    plan = compiled.plan
    assert len(plan.modules) == 2 and len(compiled.bundles) == 1
    b = plan.modules[plan.task("b").module]
    assert {k: getattr(b, k) for k in other} == {
        k: tuple(v) if isinstance(v, list) else v for k, v in other.items()
    }


def test_identical_declarations_are_one_entry() -> None:
    class S(Swarm):
        max_iterations = 1

        def __init__(self) -> None:
            super().__init__()
            self.a = Task(Module(CODE, name="same", datasets=["da"]), alias="a")
            self.b = Task(Module(CODE, name="same", datasets=["da"]), alias="b")

        def execute(self) -> list[Task]:
            return [self.a(), self.b()]

    plan = compile_swarm(S()).plan
    assert len(plan.modules) == 1 and plan.task("a").module == plan.task("b").module


def test_each_task_runs_where_its_own_datasets_are_simulator(tmp_path: Path) -> None:
    run = Federation(nodes=_nodes(tmp_path)).run(TwoDeclarations())
    assert run.ok, run.reason
    assert run.globals["ran_node-a"] == ["da"]
    assert run.globals["ran_node-c"] == ["dc"]


def test_each_task_runs_where_its_own_datasets_are_coordinator(tmp_path: Path) -> None:
    run = CoordFederation(nodes=_nodes(tmp_path), root=tmp_path).run(TwoDeclarations())
    assert run.status == "succeeded", run.reason
    assert run.global_("ran_node-a") == ["da"]
    assert run.global_("ran_node-c") == ["dc"]
