"""Helpers for engine tests: plan builders and a harness that validates every step."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from shoal._engine import Engine, EngineError, InstanceState
from shoal._engine.capacity import Capacity
from shoal._engine.core import TimeoutFrom
from shoal._engine.messages import (
    CancelInstance,
    Event,
    FailureKind,
    InstanceFailed,
    InstanceStarted,
    InstanceSucceeded,
    Instruction,
    IterationStarted,
    NodeJoined,
    NodeLost,
    RunInstance,
    SwarmFinished,
    SwarmSubmitted,
    TimerFired,
    WakeAt,
)
from shoal._plan import (
    ConditionKind,
    Limits,
    LoopSpec,
    Method,
    ModuleRef,
    Order,
    Placement,
    Plan,
    TaskSpec,
)


def digest(n: int) -> str:
    return "sha256:" + f"{n:064x}"


def module(
    n: int,
    *,
    datasets: Sequence[str] = (),
    image: str = "python",
    resources: dict[str, str | int | float | bool] | None = None,
) -> ModuleRef:
    return ModuleRef(
        digest=digest(n),
        name=f"m{n}",
        kind="source",
        image=image,
        datasets=tuple(datasets),
        resources=resources or {},
    )


def task(
    alias: str,
    mod: int = 1,
    *,
    method: Method = Method.ALL,
    count: int | None = None,
    fraction: float | None = None,
    fixed: bool = False,
    specified: Sequence[str] | None = None,
    excepted: Sequence[str] = (),
    gpu: bool = False,
    condition: ConditionKind = ConditionKind.FINISHED,
    min_results: int | None = None,
    timeout: float | None = None,
    retries: int = 0,
    order: Order = Order.PARALLEL,
    rounds: int | None = None,
    on_demand: bool = False,
    loop: str | None = None,
) -> TaskSpec:
    return TaskSpec(
        alias=alias,
        module=digest(mod),
        placement=Placement(
            method=method,
            count=count,
            fraction=fraction,
            fixed=fixed,
            specified_ids=None if specified is None else tuple(specified),
            excepted_ids=tuple(excepted),
            gpu=gpu,
        ),
        condition=condition,
        min_results=min_results,
        timeout_s=timeout,
        retries=retries,
        order=order,
        rounds=rounds,
        on_demand=on_demand,
        loop=loop,
    )


def plan(
    tasks: Sequence[TaskSpec],
    edges: Sequence[tuple[str, str]] = (),
    sinks: Sequence[str] | None = None,
    *,
    modules: Sequence[ModuleRef] | None = None,
    max_iterations: int | None = 1,
    placement_timeout: float = 60.0,
    loops: dict[str, LoopSpec] | None = None,
) -> Plan:
    if modules is None:
        modules = [module(n) for n in sorted({int(t.module[7:], 16) for t in tasks})]
    if sinks is None:
        ups = {u for u, _ in edges}
        sinks = [t.alias for t in tasks if t.alias not in ups]
    return Plan(
        name="test",
        modules={m.digest: m for m in modules},
        tasks=tuple(tasks),
        edges=tuple(edges),
        sinks=tuple(sinks),
        limits=Limits(placement_timeout_s=placement_timeout, max_iterations=max_iterations),
        loops=loops or {},
    )


def fedavg(
    *, iterations: int | None = 1, worker: TaskSpec | None = None, agg: TaskSpec | None = None
) -> Plan:
    """worker (all) -> aggregator (any)."""
    return plan(
        [worker or task("worker"), agg or task("agg", 2, method=Method.ANY)],
        [("worker", "agg")],
        max_iterations=iterations,
    )


def runs(out: Iterable[Instruction], alias: str | None = None) -> list[RunInstance]:
    return [i for i in out if isinstance(i, RunInstance) and alias in (None, i.alias)]


def cancels(out: Iterable[Instruction]) -> list[CancelInstance]:
    return [i for i in out if isinstance(i, CancelInstance)]


def finished(out: Iterable[Instruction]) -> list[SwarmFinished]:
    return [i for i in out if isinstance(i, SwarmFinished)]


def iterations(out: Iterable[Instruction]) -> list[int]:
    return [i.iteration for i in out if isinstance(i, IterationStarted)]


def wakes(out: Iterable[Instruction]) -> list[float]:
    return [i.at for i in out if isinstance(i, WakeAt)]


class Harness:
    """Feeds events to an engine, validating after every one, and keeps the log."""

    def __init__(self, timeout_from: TimeoutFrom = "scheduled") -> None:
        self.engine = Engine(timeout_from=timeout_from)
        self.now = 0.0
        self.events: list[Event] = []
        self.log: list[Instruction] = []

    def step(self, event: Event) -> list[Instruction]:
        self.events.append(event)
        out = self.engine.handle(event)
        self.engine.validate()
        assert all(i.cause == len(self.events) for i in out)
        self.log.extend(out)
        return out

    def attempt(self, event: Event) -> list[Instruction] | EngineError:
        """Like :meth:`step`, but return the EngineError if the engine rejects it."""
        try:
            return self.step(event)
        except EngineError as err:
            self.engine.validate()  # a rejected event leaves a consistent state
            return err

    def reject(self, event: Event) -> EngineError:
        """Feed an event the engine must reject; return its error."""
        result = self.attempt(event)
        assert isinstance(result, EngineError), f"{event} was accepted"
        return result

    def tick(self, dt: float = 1.0) -> float:
        self.now += dt
        return self.now

    def join(
        self,
        *node_ids: str,
        datasets: Iterable[str] = (),
        gpu: bool = False,
        images: Iterable[str] | None = None,
        capacity: Capacity | None = None,
    ) -> list[Instruction]:
        out: list[Instruction] = []
        for n in node_ids:
            out += self.step(
                NodeJoined(
                    n,
                    self.now,
                    frozenset(datasets),
                    gpu,
                    None if images is None else frozenset(images),
                    capacity,
                )
            )
        return out

    def lose(self, node_id: str) -> list[Instruction]:
        return self.step(NodeLost(node_id, self.now))

    def submit(self, p: Plan, swarm_id: str = "s", seed: int = 0) -> list[Instruction]:
        return self.step(SwarmSubmitted(swarm_id, p, self.now, seed))

    def start(self, iid: str) -> list[Instruction]:
        return self.step(InstanceStarted(iid, self.now))

    def succeed(self, iid: str) -> list[Instruction]:
        return self.step(InstanceSucceeded(iid, self.now))

    def run_ok(self, iid: str) -> list[Instruction]:
        return self.start(iid) + self.succeed(iid)

    def fail(
        self,
        iid: str,
        error: str = "boom",
        traceback: str = "Traceback: boom",
        kind: FailureKind = FailureKind.ERROR,
    ) -> list[Instruction]:
        return self.step(InstanceFailed(iid, self.now, error, traceback, kind))

    def timer(self, now: float) -> list[Instruction]:
        self.now = now
        return self.step(TimerFired(now))

    def live(self, swarm_id: str | None = None) -> list[str]:
        """Ids of instances the engine still considers running, in schedule order."""
        out = []
        for r in runs(self.log):
            if swarm_id not in (None, r.swarm_id):
                continue
            if self.engine.instance(r.instance_id).state.value in ("scheduled", "running"):
                out.append(r.instance_id)
        return out

    def complete_all(self, swarm_id: str = "s", limit: int = 10_000) -> list[Instruction]:
        """Succeed live instances until the swarm finishes."""
        out: list[Instruction] = []
        for _ in range(limit):
            if self.engine.swarm(swarm_id).status != "running":
                return out
            live = self.live(swarm_id)
            assert live, "swarm runs but has no live instance"
            out += self.run_ok(live[0])
        raise AssertionError("swarm did not finish")


def scripted(seed: int, steps: int = 600) -> Harness:
    """A seeded pseudo-driver: mixed outcomes, lost and returning nodes, timeouts.

    Returns the harness, with every event fed and every instruction produced.
    """
    rng = random.Random(seed)
    h = Harness()
    names = [f"n{i:02d}" for i in range(12)]
    for i, n in enumerate(names):
        h.join(n, datasets=["d"] if i % 3 else [], gpu=i % 4 == 0)
    worker = task("worker", method=Method.RANDOM, count=4, retries=1, timeout=5.0)
    agg = task("agg", 2, method=Method.ANY, retries=2)
    side = task("side", 3, fraction=0.5, condition=ConditionKind.RESULT, min_results=2, retries=1)
    p = plan(
        [worker, agg, side],
        [("worker", "agg"), ("side", "agg")],
        modules=[module(1), module(2), module(3, datasets=["d"])],
        max_iterations=4,
        placement_timeout=20.0,
    )
    h.submit(p, "a", seed=seed)
    h.submit(p, "b", seed=seed + 1)
    for _ in range(steps):
        live = h.live()
        roll = rng.random()
        if live and roll < 0.75:
            iid = rng.choice(live)
            if h.engine.instance(iid).state is InstanceState.SCHEDULED and rng.random() < 0.5:
                h.start(iid)
            elif rng.random() < 0.95:
                h.succeed(iid)
            else:
                h.fail(iid, f"error {rng.random():.3f}")
        elif roll < 0.85:
            h.timer(h.tick(rng.choice([1.0, 3.0, 6.0])))
        elif roll < 0.92:
            h.lose(rng.choice(names))
        else:
            n = rng.choice(names)
            h.join(n, datasets=["d"], gpu=rng.random() < 0.5)
    return h
