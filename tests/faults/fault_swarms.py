"""Deterministic swarms for the fault tests, written as source-text modules.

Their results do not depend on which node ran what, so a run that lost a node (and ran
its work elsewhere) must end with exactly the globals of a run without the fault; the
simulator gives that fault-free run (:func:`fault_free`).
"""

from __future__ import annotations

from typing import Any

from helpers import task_module

from shoal import Condition, Module, Swarm, Task, simulate


def src(body: str, cls: str) -> Module:
    """A source-text module whose Task.run() is ``body``."""
    return task_module(body, cls, imports="import os, time")


# Prints a line the tests wait for (the fault lands while the task pauses after it; only
# iteration "slow" pauses, or every one if it is None), then publishes a value that
# depends on the iteration and the global state only.
PAUSE = """
if self.world.globals["slow"] in (None, self.world.iteration):
    time.sleep(float(self.world.globals["sleep"]))
"""

WORKER = (
    """
x = self.world.globals["x"]
it = self.world.iteration
print(f"working: iteration {it} on {self.world.node_id}")
"""
    + PAUSE
    + """
self.world.results.add("y", x * 3 + it)
self.logger.metric("y", x * 3 + it, step=it)
"""
)

AGGREGATOR = """
ys = self.world.results.select("y")
total = sum(sorted(ys.values()))
self.world.globals["x"] = total % 1000003
self.world.globals["history"] = self.world.globals.get("history", []) + [total]
self.world.globals["counts"] = self.world.globals.get("counts", []) + [len(ys)]
self.logger.info(f"aggregated {len(ys)} results in iteration {self.world.iteration}")
"""

# The keys every chain swarm ends with; ``sleep`` is left out (it only paces the run).
CHAIN_KEYS = ("x", "history", "counts")


class Chain(Swarm):
    """``worker`` (``any`` on ``workers`` nodes, or ``all``) -> ``aggregator``; each
    iteration's value feeds the next, so a lost or doubled result shows in the end."""

    def __init__(
        self,
        iterations: int = 3,
        sleep: float = 0.0,
        slow: int | None = None,
        workers: int | None = 2,
        retries: int = 0,
        condition: Condition = Condition.FINISHED,
        min_results: int | None = None,
        timeout: float | None = None,
    ) -> None:
        self.name = "chain"
        self.max_iterations = iterations
        self.placement_timeout = 30.0
        self.set_global("x", 1)
        self.set_global("sleep", sleep)
        self.set_global("slow", slow)
        self.worker = Task(
            src(WORKER, "Worker"),
            method="all" if workers is None else "any",
            maximum=workers,
            alias="worker",
            retries=retries,
            condition=condition,
            min_results=min_results,
            timeout=timeout,
        )
        self.aggregator = Task(
            src(AGGREGATOR, "Aggregator"), method="any", alias="aggregator", retries=2
        )

    def execute(self) -> Task:
        return self.aggregator(self.worker())


# Counts its own runs on each node in ``self.local`` state. The count is read first and
# written last, after the pause, so an attempt killed in its pause leaves it unchanged.
COUNTER = (
    """
n = self.local.get_state("runs", 0)
print(f"working: iteration {self.world.iteration} on {self.world.node_id} runs {n}")
"""
    + PAUSE
    + """
self.local.set_state("runs", n + 1)
self.world.results.add("runs", n + 1)
"""
)


class Counter(Swarm):
    """``counter`` on every node, ``iterations`` times; its result in iteration k is
    k + 1 on every node as long as no node forgets its local state."""

    def __init__(
        self, iterations: int = 3, sleep: float = 0.0, slow: int | None = None, retries: int = 1
    ) -> None:
        self.name = "counter"
        self.max_iterations = iterations
        self.placement_timeout = 30.0
        self.set_global("sleep", sleep)
        self.set_global("slow", slow)
        self.counter = Task(src(COUNTER, "Count"), method="all", alias="counter", retries=retries)

    def execute(self) -> Task:
        return self.counter()


# Hangs on the node named in the global "hang_on" (after saying so), else answers. It
# hangs busy with the world API, so its node's agent is in a call to the coordinator.
HANGER = """
print(f"working: iteration {self.world.iteration} on {self.world.node_id}")
if self.world.node_id == self.world.globals["hang_on"]:
    while True:
        self.world.globals.keys()
        time.sleep(0.1)
self.world.results.add("answer", 42)
"""


class Hang(Swarm):
    """One instance of ``hanger`` (``any``) that never returns on node ``hang_on``."""

    def __init__(self, hang_on: str, timeout: float, retries: int) -> None:
        self.name = "hang"
        self.max_iterations = 1
        self.placement_timeout = 30.0
        self.set_global("hang_on", hang_on)
        self.hanger = Task(
            src(HANGER, "Hanger"), method="any", alias="hanger", timeout=timeout, retries=retries
        )

    def execute(self) -> Task:
        return self.hanger()


def fault_free(swarm: Swarm, nodes: int, keys: tuple[str, ...] = CHAIN_KEYS) -> dict[str, Any]:
    """The globals ``keys`` after a run of ``swarm`` without faults (the simulator)."""
    run = simulate(swarm, nodes=nodes, executor="inline")
    run.raise_for_status()
    return {k: run.globals[k] for k in keys}
