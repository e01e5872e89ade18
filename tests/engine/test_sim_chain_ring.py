"""Chains and rings end to end in the simulator (``shoal.testing.Federation``): real
task code reads what the engine let it see (docs/engine.md)."""

from __future__ import annotations

import pytest
from helpers import task_module

from shoal import Swarm, Task
from shoal.testing import Federation

pytestmark = [pytest.mark.timeout(120)]

# Each chain/ring instance appends its node to the path it received from the instance
# before it (or starts from the source's "start" value) and stores it.
STEP = """
got = self.world.results.select("path")
prev = [p for v in got.values() for p in v]
self.world.results.add("path", prev + [self.world.node_id])
"""
SOURCE = 'self.world.results.add("path", ["start"])'
SINK = """
got = self.world.results.select("path")
self.world.results.add("final", {k: list(v) for k, v in got.items()})
"""


class Chained(Swarm):
    max_iterations = 1

    def __init__(self, order: str, rounds: int | None = None) -> None:
        self.src = Task(task_module(SOURCE, "Src"), alias="src", method="any")
        self.mid = Task(task_module(STEP, "Step"), alias="mid", order=order, rounds=rounds)
        self.sink = Task(task_module(SINK, "Sink"), alias="sink", method="any")

    def execute(self) -> Task:
        return self.sink(self.mid(self.src()))


@pytest.mark.parametrize("n", [3, 5])
def test_chain_passes_one_value_through_every_node_in_turn(n: int) -> None:
    run = Federation(nodes=n).run(Chained("chain"))
    assert run.ok, run.reason
    (final,) = run.results.select("final", alias="sink", iteration=0).values()
    (path,) = final.values()
    assert path[0] == "start" and sorted(path[1:]) == sorted(f"node-{i:05d}" for i in range(n)), (
        path
    )


@pytest.mark.parametrize("n", [3, 5])
def test_ring_every_final_value_was_updated_by_every_node(n: int) -> None:
    run = Federation(nodes=n).run(Chained("ring"))
    assert run.ok, run.reason
    (final,) = run.results.select("final", alias="sink", iteration=0).values()
    assert len(final) == n  # one value per node, the last round's
    nodes = {f"node-{i:05d}" for i in range(n)}
    for path in final.values():
        assert set(path[-n:]) == nodes, path  # the last n updates came from every node
