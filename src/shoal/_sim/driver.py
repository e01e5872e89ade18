"""The simulator: a driver of the engine over virtual nodes and an executor.

It only translates: engine instructions become jobs for the executor, executor
callbacks and world calls become engine events. Every scheduling decision is the
engine's.
"""

from __future__ import annotations

import gc
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from shoal._api.records import MetricRecord, failure_record, metric_record
from shoal._bundle import Bundle
from shoal._driver import DriverBase
from shoal._driver.base import module_labels
from shoal._engine import Engine
from shoal._engine.capacity import Capacity
from shoal._engine.messages import (
    CancelInstance,
    Event,
    FailureKind,
    InstanceFailed,
    InstanceStarted,
    InvokeCalled,
    IterationStarted,
    NextIterScheduled,
    NodeJoined,
    RunInstance,
    StopRequested,
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
from shoal._runtime.loader import Outcome, extract_bundle, user_paths
from shoal._sim.run import RunningInstance, SimulationInterrupted, SimulationRun, TaskTiming
from shoal._store.memory import MemoryStore
from shoal._world.service import InstanceInfo, NodeInfo, WorldService

Progress = Callable[[str, int, int, int], None]  # (what, iteration, done, scheduled)
OnMetrics = Callable[[list[MetricRecord]], None]  # each batch of new metric values

#: The most often new metrics are handed to ``on_metrics`` (seconds; also at each
#: iteration's start and at the end): reading the store costs O(all metrics).
METRICS_EVERY_S = 0.5

Watch = Callable[[Sequence[RunningInstance]], None]  # the instances running now, oldest first

# How often (clock seconds) the running instances are handed to a watcher: listing them
# is a pass over what runs, too much to do after every event of a large run.
WATCH_EVERY_S = 0.25
INTERRUPTED = "stopped by the user (Ctrl-C)"


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


class _Interrupts:
    """Ctrl-C while a simulation runs: the first asks for a clean stop, which the
    driver's loop carries out (the engine stops the swarm, the executor its workers);
    a second one raises ``KeyboardInterrupt`` at once, as usual."""

    def __init__(self) -> None:
        self.asked = False
        self.installed = False

    def _first(self, signum: int, frame: object) -> None:
        self.asked = True
        signal.signal(signal.SIGINT, signal.default_int_handler)


@contextmanager
def _stop_on_interrupt() -> Iterator[_Interrupts]:
    state = _Interrupts()
    if threading.current_thread() is not threading.main_thread():
        yield state  # signal handlers belong to the main thread
        return
    previous = signal.signal(signal.SIGINT, state._first)
    state.installed = True
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)


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


def joined(node: NodeInfo, now: float) -> NodeJoined:
    """The event of a virtual node joining: a profiled node advertises its facts (its
    resources are checked), one without a profile offers any image and resources."""
    res = node.resources
    capacity = None
    if node.advertised:
        capacity = Capacity(
            cpu=float(res.get("cpu", 1)),
            memory=int(res.get("memory", 0)),
            gpu=int(res.get("gpu", 0)),
            gpu_memory=int(res.get("gpu_memory", 0)) or None,
        )
    return NodeJoined(
        node.node_id,
        now,
        frozenset(node.datasets),
        gpu=node.advertised and int(res.get("gpu", 0)) > 0,
        images=node.images,
        capacity=capacity,
    )


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
        on_metrics: OnMetrics | None = None,
        task_timeout_s: float | None = None,
        watch: Watch | None = None,
        sources: dict[str, Path] | None = None,
        backend: str = "local",
        ray_address: str | None = None,
    ) -> None:
        self.plan = plan
        self._backend = backend
        self._ray_address = ray_address
        self._on_metrics = on_metrics
        self._metrics_seen = 0  # the store returns metrics in the order they came
        self._metrics_at = (-1.0, -1)  # (monotonic time, iteration) of the last handout
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
            self.store,
            self.nodes,
            on_stop=self.world_stop,
            on_next_iter=self.world_next_iter,
            invoker=self,
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
        self._interrupts = _Interrupts()
        self._stopping = False
        self.task_timeout_s = task_timeout_s
        # Tracebacks name the user's files: a module declared by path by its folder on
        # this machine, one given as source text by name@version (there is no file).
        self._labels = module_labels(plan)
        self._labels.update({d: str(p) for d, p in (sources or {}).items()})
        self._watch = watch
        self._watched_at = -WATCH_EVERY_S

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
        info = self._infos.pop(instance_id, None)
        if info is None:
            # Cancelled while it ran in this thread (an inline caller whose call the
            # engine closed): the engine expects nothing more from it.
            self._c.started_at.pop(instance_id, None)
            return
        started = self._c.started_at.pop(instance_id, None)
        if started is not None:
            self._c.durations.setdefault(info.alias, []).append(self.clock.now() - started)
        self._c.done += 1
        if outcome.ok:
            self._events.append(self.succeeded(instance_id, self.now()))
        else:
            error = user_paths(outcome.error, self._labels)
            tb = user_paths(outcome.traceback, self._labels)
            self._events.append(
                InstanceFailed(instance_id, self.now(), error, tb, FailureKind(kind))
            )

    def _world_event(self, event: StopSwarmCalled | NextIterScheduled | InvokeCalled) -> None:
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
        self._hand_out_metrics(force=False)
        if self._watch is not None and self.now() - self._watched_at >= WATCH_EVERY_S:
            self._watched_at = self.now()
            self._watch(self.running())

    def _hand_out_metrics(self, force: bool) -> None:
        # Outside feed(): a callback that raises cannot leave the engine half-stepped.
        if self._on_metrics is None:
            return
        at, iteration = self._metrics_at
        now = time.monotonic()
        if not force and iteration == self._c.iteration and now - at < METRICS_EVERY_S:
            return
        self._metrics_at = (now, self._c.iteration)
        rows = self.store.metrics(self.swarm_id)
        if len(rows) > self._metrics_seen:
            new = rows[self._metrics_seen :]
            self._metrics_seen = len(rows)
            self._on_metrics([metric_record(r) for r in new])

    def running(self) -> list[RunningInstance]:
        """The instances a worker runs now, with their node and age, oldest first."""
        now = self.clock.now()
        out = []
        for iid, started in self._c.started_at.items():
            info = self._infos.get(iid)
            if info is not None:  # not cancelled
                view = self.engine.find_instance(iid)
                timeout = view.timeout_s if view is not None else None
                out.append(
                    RunningInstance(
                        iid, info.alias, info.node_id, info.iteration, now - started, timeout
                    )
                )
        out.sort(key=lambda r: -r.age_s)
        return out

    def _make_executor(self) -> SimExecutor:
        if self._executor_factory is not None:
            return self._executor_factory(self)
        kind = normalize_executor(self._executor_kind)
        if self._backend == "ray":  # the same pool, its workers Ray actors in a cluster
            from shoal._exec.pool_ray import RayPoolExecutor

            return RayPoolExecutor(
                self.service,
                self.started,
                self.done,
                self._workers,
                self.run_dir / "blobs",
                address=self._ray_address,
                limit=len(self.nodes),
            )
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
        """Run until the swarm finishes; never waits without a bound.

        Raises
        ------
        SimulationInterrupted
            (a ``KeyboardInterrupt``) after a Ctrl-C stopped the swarm cleanly: its
            ``run`` is the stopped run (status ``"stopped"``), with every log, metric
            and result so far.
        """
        with _fewer_collections(), _stop_on_interrupt() as interrupts:
            self._interrupts = interrupts
            run = self._run()
        if interrupts.asked and run.status == "stopped":
            raise SimulationInterrupted(run)
        return run

    def _run(self) -> SimulationRun:
        self._executor = executor = self._make_executor()
        try:
            for n in self.nodes.values():
                self.feed(joined(n, self.now()))
            self.submit_swarm(self.swarm_id, self.plan, self.seed, self.task_timeout_s)
            self._drain()
            self._stopping = False
            while self._finished is None:
                self._step()
        finally:
            executor.close()
            self.store.settle()
        self._hand_out_metrics(force=True)
        return self._result()

    def _step(self) -> None:
        """One turn of the loop: wait for the executor (or the next timer), feed what
        happened to the engine."""
        executor = self._executor
        assert executor is not None
        if self._interrupts.asked and not self._stopping:
            self._stopping = True
            self._events.append(StopRequested(self.swarm_id, self.now(), INTERRUPTED))
            self._drain()
            return
        # Come back often enough to show how long what runs has run, and to see a
        # Ctrl-C (its handler only sets a flag: the engine is never interrupted).
        often = self._watch is not None or (
            self._interrupts.installed and isinstance(self.clock, RealClock)
        )
        timeout = None if self._wake is None else max(0.0, self._wake - self.now())
        if often:
            timeout = WATCH_EVERY_S if timeout is None else min(timeout, WATCH_EVERY_S)
        if not executor.busy() and not self._events:
            if self._wake is None:
                raise self._stalled()
            self.clock.sleep(timeout or 0.0)
        else:
            executor.poll(timeout)
        if self._wake is not None and self.now() >= self._wake:
            self._wake = None
            self._events.append(TimerFired(self.now()))
        self._drain()

    def invoke_wait(self, info: InstanceInfo, call_id: str) -> dict[str, Any] | None:
        """The end of a ``world.invoke`` call (see ``DriverBase.invoke_wait``).

        An executor that runs task code in this thread (``inline``, ``shoal.testing``)
        cannot run the invoked instances while the caller waits for a reply: the loop
        is turned from here instead, until the call ends, the caller is ended or the
        swarm finishes."""
        executor = self._executor
        if executor is None or not getattr(executor, "in_driver_thread", False):
            return super().invoke_wait(info, call_id)
        while call_id not in self.invoke_answers:
            view = self.engine.find_instance(info.instance_id)
            if self._finished is not None or view is None or view.ended:
                raise ShoalError(
                    f"call {call_id} of task {info.alias!r} was closed: its caller or the "
                    "swarm ended while it waited",
                    code="invoke.closed",
                    hint="see the swarm's failures for why",
                )
            self._step()
        return super().invoke_wait(info, call_id)

    def _stalled(self) -> ShoalError:
        """Nothing can end what still runs. Every task has a finite timeout, so the
        engine always has a deadline while an instance runs; name what is stuck."""
        stuck = self.running()
        if stuck:
            what = "; ".join(
                f"task '{r.alias}' on node {r.node_id} (iteration {r.iteration}, "
                f"running for {r.age_s:.1f}s)"
                for r in stuck[:10]
            )
            return ShoalError(
                f"the simulation stalled: {len(stuck)} instance(s) never returned and no "
                f"timeout is pending: {what}",
                code="sim.stalled",
                hint="give the task a timeout (Task(timeout=...)); the inline executor "
                "cannot stop a task that never returns",
            )
        return ShoalError(
            "the simulation stalled: nothing runs, nothing is scheduled and no timeout "
            "is pending (this is a bug in shoal; please report it with the plan)",
            code="sim.stalled",
        )

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
