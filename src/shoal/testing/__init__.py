"""Testing helpers: an in-memory federation, a virtual clock and fault injection.

Run a swarm's real task code in this process, deterministically and without sleeps::

    from shoal.testing import Federation

    fed = Federation(nodes=3)
    fed.inject("crash", node="node-00001", task="worker", iteration=0)
    run = fed.run(MySwarm(), max_iterations=2)
    assert run.status == "failed"
"""

from __future__ import annotations

# Every import is private (an underscore name): the module's public names are its
# __all__ and nothing else (tests/test_public_api.py).
import os as _os
import tempfile as _tempfile
from collections.abc import Mapping as _Mapping
from dataclasses import dataclass as _dataclass
from pathlib import Path as _Path
from typing import Literal as _Literal

import shoal as _shoal
from shoal._data.nodes import build_nodes as _build_nodes
from shoal._data.nodes import node_id as _node_id
from shoal._define.compile import compile_swarm as _compile_swarm
from shoal._define.swarm import Swarm as _Swarm
from shoal._errors import ShoalError as _ShoalError
from shoal._exec.inline import InlineExecutor as _InlineExecutor
from shoal._exec.jobs import SimExecutor as _SimExecutor
from shoal._public import publish as _publish
from shoal._sim.driver import Simulation as _Simulation
from shoal._sim.run import SimulationRun as _SimulationRun
from shoal._world.service import InstanceInfo as _InstanceInfo
from shoal._world.service import NodeInfo as _NodeInfo

__all__ = ["Fault", "Federation", "VirtualClock"]

_FaultKind = _Literal["raise", "crash", "hang"]


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
            raise _ShoalError(f"cannot move a clock back by {seconds}s", code="testing.clock")
        self._now += seconds


@_dataclass(frozen=True)
class Fault:
    """An injected failure: matching instances raise, crash or hang instead of running.

    ``None`` in ``node``, ``task`` or ``iteration`` matches any; ``attempt`` defaults
    to the first attempt so that retries can succeed.
    """

    kind: _FaultKind
    node: str | None = None
    task: str | None = None
    iteration: int | None = None
    attempt: int | None = 0

    def matches(self, info: _InstanceInfo, attempt: int) -> bool:
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
        nodes: int | _Mapping[str, _Mapping[str, str | _os.PathLike[str]]] = 3,
        datasets: _Mapping[str, str | _os.PathLike[str]] | None = None,
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
            return [_node_id(i) for i in range(self._nodes)]
        return list(self._nodes)

    def inject(
        self,
        kind: _FaultKind,
        node: str | None = None,
        task: str | None = None,
        iteration: int | None = None,
        attempt: int | None = 0,
    ) -> Fault:
        """Make matching instances ``raise``, ``crash`` or ``hang`` (until their timeout)."""
        if kind not in ("raise", "crash", "hang"):
            raise _ShoalError(
                f"unknown fault kind {kind!r}",
                code="testing.fault",
                hint="use 'raise', 'crash' or 'hang'",
            )
        fault = Fault(kind, node, task, iteration, attempt)
        self.faults.append(fault)
        return fault

    def _fault(self, info: _InstanceInfo, attempt: int) -> str | None:
        return next((f.kind for f in self.faults if f.matches(info, attempt)), None)

    def run(
        self,
        swarm: _Swarm,
        max_iterations: int | None = None,
        task_timeout: float | None = None,
    ) -> _SimulationRun:
        """Run ``swarm`` (or a ``shoal.steps`` Artifact) to its end and return the run
        (it never raises for a failed swarm).

        A task without a timeout gets ``task_timeout`` (default: the engine's 600 s);
        on the virtual clock a hung instance reaches it at once.
        """
        if not isinstance(swarm, _Swarm) and hasattr(swarm, "to_swarm"):
            swarm = swarm.to_swarm()  # a steps Artifact compiles to a Swarm
        plan_bundles = _compile_swarm(swarm)
        plan = plan_bundles.plan
        if max_iterations is not None:
            plan = plan.model_copy(
                update={"limits": plan.limits.model_copy(update={"max_iterations": max_iterations})}
            )
        root = _Path(_tempfile.mkdtemp(prefix="shoal-test-"))
        if isinstance(self._nodes, int):
            nodes = _build_nodes(self._nodes, self._datasets, None, self.seed, root / "data")
        else:
            nodes = [
                _NodeInfo(n, {k: _Path(v) for k, v in {**d, **self._datasets}.items()})
                for n, d in self._nodes.items()
            ]

        def executor(sim: _Simulation) -> _SimExecutor:
            return _InlineExecutor(sim.service, sim.started, sim.done, fault=self._fault)

        sim = _Simulation(
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
