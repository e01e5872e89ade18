"""Testing helpers: an in-memory federation, a virtual clock and fault injection.

Run a swarm's real task code in this process, deterministically and without sleeps::

    from shoal.testing import Federation

    fed = Federation(nodes=3)
    fed.inject("crash", node="node-00001", task="worker", iteration=0)
    run = fed.run(MySwarm(), max_iterations=2)
    assert run.status == "failed"
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import shoal as _shoal
from shoal._data.nodes import build_nodes, node_id
from shoal._define.compile import compile_swarm
from shoal._define.swarm import Swarm
from shoal._errors import ShoalError
from shoal._exec.inline import InlineExecutor
from shoal._exec.jobs import SimExecutor
from shoal._public import publish as _publish
from shoal._sim.driver import Simulation
from shoal._sim.run import SimulationRun
from shoal._world.service import InstanceInfo, NodeInfo

__all__ = ["Fault", "Federation", "VirtualClock"]

FaultKind = Literal["raise", "crash", "hang"]


class VirtualClock:
    """A clock that only moves when told to: ``sleep`` advances it at once."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def now(self) -> float:
        """The current virtual time in seconds."""
        return self._now

    def sleep(self, seconds: float) -> None:
        """Advance by ``seconds`` without waiting."""
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        if seconds < 0:
            raise ShoalError(f"cannot move a clock back by {seconds}s", code="testing.clock")
        self._now += seconds


@dataclass(frozen=True)
class Fault:
    """An injected failure: matching instances raise, crash or hang instead of running.

    ``None`` in ``node``, ``task`` or ``iteration`` matches any; ``attempt`` defaults
    to the first attempt so that retries can succeed.
    """

    kind: FaultKind
    node: str | None = None
    task: str | None = None
    iteration: int | None = None
    attempt: int | None = 0

    def matches(self, info: InstanceInfo, attempt: int) -> bool:
        """Whether this fault applies to the instance."""
        return (
            (self.node is None or self.node == info.node_id)
            and (self.task is None or self.task == info.alias)
            and (self.iteration is None or self.iteration == info.iteration)
            and (self.attempt is None or self.attempt == attempt)
        )


class Federation:
    """An in-memory federation: the simulator's engine and world service, task code
    run inline in this process, time from a :class:`VirtualClock`.

    Parameters
    ----------
    nodes
        A number of nodes (``node-00000``, ...) or ``{node_id: {dataset: path}}``.
    datasets
        ``{name: path}`` shared by every node (with a number of nodes).
    seed
        Seed for placement.
    """

    def __init__(
        self,
        nodes: int | Mapping[str, Mapping[str, str | os.PathLike[str]]] = 3,
        datasets: Mapping[str, str | os.PathLike[str]] | None = None,
        seed: int = 0,
    ) -> None:
        self.clock = VirtualClock()
        self.seed = seed
        self.faults: list[Fault] = []
        self._nodes = nodes
        self._datasets = dict(datasets or {})

    def node_ids(self) -> list[str]:
        """The ids of the federation's nodes."""
        if isinstance(self._nodes, int):
            return [node_id(i) for i in range(self._nodes)]
        return list(self._nodes)

    def inject(
        self,
        kind: FaultKind,
        node: str | None = None,
        task: str | None = None,
        iteration: int | None = None,
        attempt: int | None = 0,
    ) -> Fault:
        """Make matching instances ``raise``, ``crash`` or ``hang`` (until their timeout)."""
        if kind not in ("raise", "crash", "hang"):
            raise ShoalError(
                f"unknown fault kind {kind!r}",
                code="testing.fault",
                hint="use 'raise', 'crash' or 'hang'",
            )
        fault = Fault(kind, node, task, iteration, attempt)
        self.faults.append(fault)
        return fault

    def _fault(self, info: InstanceInfo, attempt: int) -> str | None:
        return next((f.kind for f in self.faults if f.matches(info, attempt)), None)

    def run(
        self,
        swarm: Swarm,
        max_iterations: int | None = None,
        task_timeout: float | None = None,
    ) -> SimulationRun:
        """Run ``swarm`` to its end and return the run (it never raises for a failed swarm).

        A task without a timeout gets ``task_timeout`` (default: the engine's 600 s);
        on the virtual clock a hung instance reaches it at once.
        """
        plan_bundles = compile_swarm(swarm)
        plan = plan_bundles.plan
        if max_iterations is not None:
            plan = plan.model_copy(
                update={"limits": plan.limits.model_copy(update={"max_iterations": max_iterations})}
            )
        root = Path(tempfile.mkdtemp(prefix="shoal-test-"))
        if isinstance(self._nodes, int):
            nodes = build_nodes(self._nodes, self._datasets, None, self.seed, root / "data")
        else:
            nodes = [
                NodeInfo(n, {k: Path(v) for k, v in {**d, **self._datasets}.items()})
                for n, d in self._nodes.items()
            ]

        def executor(sim: Simulation) -> SimExecutor:
            return InlineExecutor(sim.service, sim.started, sim.done, fault=self._fault)

        sim = Simulation(
            plan,
            plan_bundles.bundles,
            nodes,
            root,
            seed=self.seed,
            cleanup=True,
            clock=self.clock,
            executor_factory=executor,
            validate=True,  # every engine invariant, after every event
            task_timeout_s=task_timeout,
            sources=plan_bundles.sources,
        )
        return sim.run()


_publish(__name__, globals(), __all__)
# Federation.run returns shoal.SimulationRun, a lazy export of shoal loaded by now.
_shoal._publish_loaded()
