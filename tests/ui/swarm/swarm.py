"""The dashboard tests' swarm: workers report a growing accuracy each iteration (slowly
enough to watch), one node's worker fails in iteration 1 (a traceback to open), and a
scheduler keeps it going for ``max_iterations``."""

from __future__ import annotations

from shoal import Module, Swarm, Task


class Watched(Swarm):
    """Workers -> aggregator, repeated."""

    def __init__(self) -> None:
        super().__init__()
        self.name = "watched"
        self.max_iterations = 6
        self.worker = Task(
            Module(python_program="modules/worker.py"),
            method="all",
            alias="worker",
            min_results=1,
        )
        self.aggregator = Task(
            Module(python_program="modules/aggregator.py"),
            method="any",
            maximum=1,
            alias="aggregator",
        )

    def execute(self) -> Task:
        """Every node's worker feeds one aggregator."""
        return self.aggregator(self.worker())


class Endless(Watched):
    """The same, until someone stops it."""

    def __init__(self) -> None:
        super().__init__()
        self.name = "endless"
        self.max_iterations = None
