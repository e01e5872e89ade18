"""Small swarms for deployment tests, written as source-text modules."""

from __future__ import annotations

from helpers import task_module

from shoal import Module, Swarm, Task


def src(body: str, cls: str = "T", datasets: tuple[str, ...] = ()) -> Module:
    """A source-text module whose Task.run() is ``body``."""
    return task_module(body, cls, imports="import os, time\nimport numpy as np", datasets=datasets)


WORKER = """
data = self.local.get_dataset("numbers")
self.world.results.add("sum", float(data.sum()))
self.world.results.add("count", int(data.size))
# 160 KB: travels as a blob (over the 64 KiB inline limit) both ways.
self.world.results.add("big", np.full(20_000, float(self.world.iteration + 1)))
print(f"worker on {self.world.node_id} iteration {self.world.iteration}")
time.sleep(float(self.world.globals.get("sleep", 0.0)))
"""

AGGREGATOR = """
sums = self.world.results.select("sum")
counts = self.world.results.select("count")
big = self.world.results.select("big")
total = sum(big.values())
self.world.globals["mean"] = sum(sums.values()) / sum(counts.values())
self.world.globals["total"] = total
self.world.globals["rounds"] = self.world.globals.get("rounds", 0) + 1
self.world.globals["nodes"] = sorted(sums)
self.logger.metric("mean", self.world.globals["mean"])
self.logger.info(f"aggregated {len(sums)} nodes")
"""


class MeanSwarm(Swarm):
    """Every node with "numbers" sums them; one node averages; ``iterations`` rounds."""

    def __init__(self, iterations: int = 2, sleep: float = 0.0) -> None:
        self.name = "mean"
        self.max_iterations = iterations
        self.set_global("sleep", sleep)
        self.worker = Task(
            src(WORKER, "Worker", datasets=("numbers",)), method="all", alias="worker"
        )
        self.aggregator = Task(src(AGGREGATOR, "Aggregator"), method="any", alias="aggregator")

    def execute(self) -> Task:
        return self.aggregator(self.worker())
