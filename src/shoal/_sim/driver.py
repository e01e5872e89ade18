"""The simulator: a driver of the engine over virtual nodes and an executor.

It only translates: engine instructions become jobs for the executor, executor
callbacks and world calls become engine events. Every scheduling decision is the
engine's.
"""

from __future__ import annotations

import gc
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from shoal._api.records import failure_record
from shoal._bundle import Bundle
from shoal._driver import DriverBase
from shoal._engine import Engine
from shoal._engine.messages import (
    CancelInstance,
    Event,
    FailureKind,
    InstanceFailed,
    InstanceStarted,
    InstanceSucceeded,
    IterationStarted,
    NextIterScheduled,
    NodeJoined,
    RunInstance,
    StopSwarmCalled,
    SwarmFinished,
    TimerFired,
    WakeAt,
)
from shoal._errors import ShoalError
from shoal._exec.inline import InlineExecutor
from shoal._exec.jobs import Job, Kind, SimExecutor, normalize_executor
from shoal._exec.pool import ProcessPoolExecutor
from shoal._exec.pool_bwrap import BwrapSandbox
from shoal._plan import Plan
from shoal._runtime.loader import Outcome, extract_bundle
from shoal._sim.run import SimulationRun, TaskTiming
from shoal._store.memory import MemoryStore
from shoal._world.service import InstanceInfo, NodeInfo, WorldService

Progress = Callable[[str, int, int, int], None]  # (what, iteration, done, scheduled)


class Clock(Protocol):
    """Where the driver's time comes from (``shoal.testing.VirtualClock`` in tests)."""

    def now(self) -> float:
        """Seconds on this clock."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""
        ...


class RealClock:
    """Monotonic wall time."""

    def now(self) -> float:
        """Seconds since an arbitrary start."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """Really wait."""
        time.sleep(seconds)


@dataclass
class _Counters:
    iteration: int = 0
    scheduled: int = 0
    done: int = 0
    started_at: dict[str, float] = field(default_factory=dict)
    durations: dict[str, list[float]] = field(default_factory=dict)


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """Collect cyclic garbage less often while a simulation runs.

    The engine keeps every instance it scheduled, so each full collection walks a heap
    that grows with the run, and the driver allocates a few objects per event. With
    Python's defaults, 10 rounds of 10,000 trivial instances spent 1.15 s of 10 s in
    the collector (1838 young, 12 full collections); with these thresholds, 0.2 s.
    The caller's thresholds come back afterwards.
    """
    before = gc.get_threshold()
    gc.set_threshold(50_000, 100, 100)
    try:
        yield
    finally:
        gc.set_threshold(*before)


class Simulation(DriverBase):
    """Runs one compiled swarm on virtual nodes.

    Executors report through :meth:`started` and :meth:`done` (``shoal.testing``
    plugs its own executor in with ``executor_factory``).
    """

    store: MemoryStore

    def __init__(
        self,
        plan: Plan,
        bundles: dict[str, Bundle],
        nodes: list[NodeInfo],
        run_dir: Path,
        executor: str = "processes",
        workers: int = 1,
        seed: int = 0,
        progress: Progress | None = None,
        swarm_id: str = "sim",
        cleanup: bool = False,
        keep_results: int | None = 2,
        clock: Clock | None = None,
        executor_factory: Callable[[Simulation], SimExecutor] | None = None,
        validate: bool = False,
    ) -> None:
        self.plan = plan
        self.nodes = {n.node_id: n for n in nodes}
        self.run_dir = run_dir
        self.seed = seed
        self.swarm_id = swarm_id
        self._progress = progress
        self._cleanup = cleanup
        self._keep_results = keep_results
        for sub in ("blobs", "modules"):
            (run_dir / sub).mkdir(parents=True, exist_ok=True)
        folders = {d: extract_bundle(b.data, d, run_dir / "modules") for d, b in bundles.items()}
        # Per plan module, once: its bundle's digest and folder, and the datasets it
        # declares (a sandboxed pool shows a worker only these).
        self._modules = {
            key: (m.digest, folders[m.digest], frozenset(m.datasets))
            for key, m in self.plan.modules.items()
        }
        # A virtual node's instance exists once a worker runs it, not while it waits
        # for one: with 10,000 nodes on 2 workers that wait can be longer than a timeout.
        # The node set never changes, so placement failures are reported at once.
        engine = Engine(timeout_from="started", fixed_nodes=True)
        super().__init__(engine, MemoryStore(run_dir / "blobs"), validate=validate)
        self.clock = clock or RealClock()
        self._t0 = self.clock.now()
        self.service = WorldService(
            self.store, self.nodes, on_stop=self.world_stop, on_next_iter=self.world_next_iter
        )
        self._events: deque[Event] = deque()
        self._infos: dict[str, InstanceInfo] = {}
        self._wake: float | None = None
        self._finished: SwarmFinished | None = None
        self._c = _Counters()
        self._executor_kind = executor
        self._workers = workers
        self._executor_factory = executor_factory
        self._executor: SimExecutor | None = None

    def now(self) -> float:
        """Seconds since the simulation started."""
        return self.clock.now() - self._t0

    # ------------------------------------------------------- executor callbacks
    def started(self, instance_id: str) -> None:
        """An executor began running an instance (a repeat is ignored)."""
        if instance_id in self._c.started_at:
            return  # sent again after its worker died: the engine hears "started" once
        self._c.started_at[instance_id] = self.clock.now()
        self._events.append(InstanceStarted(instance_id, self.now()))

    def done(self, instance_id: str, outcome: Outcome, kind: Kind) -> None:
        """An instance ended; ``kind`` says how, if it failed."""
        info = self._infos.pop(instance_id)
        started = self._c.started_at.pop(instance_id, None)
        if started is not None:
            self._c.durations.setdefault(info.alias, []).append(self.clock.now() - started)
        self._c.done += 1
        if outcome.ok:
            self._events.append(InstanceSucceeded(instance_id, self.now()))
        else:
            self._events.append(
                InstanceFailed(
                    instance_id, self.now(), outcome.error, outcome.traceback, FailureKind(kind)
                )
            )

    def _world_event(self, event: StopSwarmCalled | NextIterScheduled) -> None:
        # World calls arrive inside executor.poll(): queue, the loop feeds them next.
        self._events.append(event)

    # ------------------------------------------------------------ instructions
    def _on_run(self, ins: RunInstance) -> None:
        info = self.instance_info(ins)
        self._infos[ins.instance_id] = info
        self._c.scheduled += 1
        assert self._executor is not None
        digest, folder, declared = self._modules[ins.module]
        self._executor.submit(Job(info, ins.attempt, digest, folder, declared))

    def _on_cancel(self, ins: CancelInstance) -> None:
        assert self._executor is not None
        self._executor.cancel(ins.instance_id)
        if self._infos.pop(ins.instance_id, None) is not None:
            self._c.done += 1

    def _on_iteration(self, ins: IterationStarted) -> None:
        self._c.iteration = ins.iteration
        if self._keep_results is not None:
            old = ins.iteration - 1 - self._keep_results
            if old >= 0:
                self.store.drop_results(self.swarm_id, old)
        if self._progress:
            self._progress("iteration", ins.iteration, self._c.done, self._c.scheduled)

    def _on_wake(self, ins: WakeAt) -> None:
        self._wake = ins.at

    def _on_finished(self, ins: SwarmFinished) -> None:
        self._finished = ins

    def _drain(self) -> None:
        while self._events and self._finished is None:
            self.feed(self._events.popleft())
        if self._progress:
            self._progress("progress", self._c.iteration, self._c.done, self._c.scheduled)

    def _make_executor(self) -> SimExecutor:
        if self._executor_factory is not None:
            return self._executor_factory(self)
        kind = normalize_executor(self._executor_kind)
        if kind == "inline":
            return InlineExecutor(self.service, self.started, self.done)
        sandbox = None
        if kind == "bwrap":  # the same pool, each worker under bubblewrap
            sandbox = BwrapSandbox.for_run(self.run_dir, self.nodes.values())
        return ProcessPoolExecutor(
            self.service,
            self.started,
            self.done,
            self._workers,
            self.run_dir / "blobs",
            sandbox=sandbox,
        )

    def run(self) -> SimulationRun:
        """Run until the swarm finishes; never waits without a bound."""
        with _fewer_collections():
            return self._run()

    def _run(self) -> SimulationRun:
        self._executor = executor = self._make_executor()
        try:
            for n in self.nodes.values():
                self.feed(NodeJoined(n.node_id, self.now(), frozenset(n.datasets)))
            self.submit_swarm(self.swarm_id, self.plan, self.seed)
            self._drain()
            while self._finished is None:
                timeout = None if self._wake is None else max(0.0, self._wake - self.now())
                if not executor.busy() and not self._events:
                    if self._wake is None:
                        raise ShoalError(
                            "the simulation stalled: nothing runs and nothing is scheduled "
                            "(this is a bug in shoal; please report it with the plan)",
                            code="sim.stalled",
                        )
                    self.clock.sleep(timeout or 0.0)
                else:
                    executor.poll(timeout)
                if self._wake is not None and self.now() >= self._wake:
                    self._wake = None
                    self._events.append(TimerFired(self.now()))
                self._drain()
        finally:
            executor.close()
            self.store.settle()
        return self._result()

    def _result(self) -> SimulationRun:
        fin = self._finished
        assert fin is not None
        timings = [
            TaskTiming(
                alias,
                len(d),
                sum(d),
                sum(d) / len(d),
                max(d),
                self.plan.module_of(alias).name,
                self.plan.module_of(alias).version,
            )
            for alias, d in self._c.durations.items()
        ]
        return SimulationRun(
            swarm_id=self.swarm_id,
            plan=self.plan,
            status=fin.status,
            reason=fin.reason,
            iterations=fin.iterations,
            failures=tuple(failure_record(f) for f in fin.failures),
            timings=timings,
            wall_s=self.now(),
            run_dir=self.run_dir,
            _store=self.store,
            _engine=self.engine,
            _cleanup=self._cleanup,
        )
