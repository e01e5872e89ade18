"""Seed 002's validation snippet (`has_cycles`) and duplicate aliases (issue 15, points 8
and 9a)."""

from __future__ import annotations

from types import ModuleType

import pytest

from shoal import Module, Swarm, SwarmValidationError, Task, has_cycles

SOURCE = "def main():\n    pass\n"


def test_seed002_validation_snippet(seeds: dict[str, ModuleType]) -> None:
    MySwarm = seeds["002"].MySwarm
    # Validate swarm before deployment
    swarm = MySwarm()
    graph = swarm.prepare_graph()

    # Check for cycles
    if has_cycles(graph):
        raise ValueError("Task graph contains cycles")


def test_has_cycles_reads_plans_edge_lists_and_mappings(seeds: dict[str, ModuleType]) -> None:
    assert has_cycles(seeds["002"].FederatedLearning().prepare_graph()) is False
    assert has_cycles([("a", "b"), ("b", "c"), ("c", "a")]) is True
    assert has_cycles([("a", "b"), ("a", "c"), ("b", "c")]) is False
    assert has_cycles({"a": ["b"], "b": ["a"]}) is True
    assert has_cycles({"a": ["a"]}) is True
    assert has_cycles([]) is False
    chain = [(f"t{i}", f"t{i + 1}") for i in range(5000)]  # no recursion limit
    assert has_cycles(chain) is False
    assert has_cycles([*chain, ("t5000", "t0")]) is True


def test_a_cyclic_swarm_is_refused_by_prepare_graph_naming_the_cycle() -> None:
    class Cyclic(Swarm):
        def __init__(self):
            super().__init__()
            self.a = Task(Module(SOURCE), alias="a")
            self.b = Task(Module(SOURCE), alias="b")

        def execute(self):
            self.b(self.a)
            return self.a(self.b)

    with pytest.raises(SwarmValidationError, match="cycle 'a' -> 'b' -> 'a'"):
        Cyclic().prepare_graph()


def test_a_duplicate_alias_is_not_also_reported_as_a_cycle() -> None:
    """Two tasks sharing an alias used to add a false "'x' -> 'x'" cycle."""

    class Duplicate(Swarm):
        def execute(self):
            workers = Task(Module(SOURCE), alias="x")
            aggregator = Task(Module(SOURCE), method="any", alias="x")
            return aggregator(workers)

    with pytest.raises(SwarmValidationError) as e:
        Duplicate().prepare_graph()
    assert "the alias is used by two different tasks" in str(e.value)
    assert "cycle" not in str(e.value)
