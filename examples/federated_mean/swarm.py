"""Federated count and mean: the swarm definition.

Every node holding a "cancer" dataset (a .csv) computes per-column counts and sums of
its rows; one node combines them into the global count and mean. One iteration.
"""

from __future__ import annotations

from shoal import Module, Swarm, Task


class FederatedMean(Swarm):
    """Count and mean of every column of a table split across nodes."""

    def __init__(self) -> None:
        super().__init__()
        self.name = "federated_mean"
        self.max_iterations = 1

        self.stats = Task(
            Module(python_program="modules/stats.py", image="python", datasets=["cancer"]),
            method="all",
            alias="stats",
        )
        self.combine = Task(
            Module(python_program="modules/combine.py", image="python"),
            method="any",
            maximum=1,
            alias="combine",
        )

    def execute(self) -> Task:
        """Every node's statistics feed one combiner."""
        return self.combine(self.stats())
