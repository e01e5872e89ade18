"""The driver base: event -> (persist) -> engine -> (validate) -> instruction hooks."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from numbers import Real
from typing import Any

from shoal._codec import encode
from shoal._engine import Engine, EngineError, InstanceView, TaskCounts
from shoal._engine.messages import (
    CancelInstance,
    Event,
    InstanceSucceeded,
    Instruction,
    InvokeCalled,
    InvokeFinished,
    IterationStarted,
    NextIterScheduled,
    RunInstance,
    StopSwarmCalled,
    SwarmFinished,
    SwarmSubmitted,
    WakeAt,
)
from shoal._engine.timers import check_task_timeout
from shoal._errors import ShoalError
from shoal._plan import LoopUntil, Plan
from shoal._store.base import Store
from shoal._wire import Wire, from_wire
from shoal._world.service import InstanceInfo


def upstream_of(plan: Plan, alias: str) -> frozenset[str]:
    """Aliases of every task ``alias`` is downstream of, transitively (itself only on a
    cycle, which validation refuses)."""
    seen: set[str] = set()
    todo = list(plan.upstream(alias))
    while todo:
        up = todo.pop()
        if up not in seen:
            seen.add(up)
            todo.extend(plan.upstream(up))
    return frozenset(seen)


def loop_number(value: Any, key: str | None) -> float | None:
    """The number an inner loop's ``until`` reads from a result: ``value`` itself, or
    its entry ``key`` when it is a mapping; None if that is not a real number."""
    if key is not None:
        value = value.get(key) if isinstance(value, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, Real):
        shape = getattr(value, "shape", None)
        if shape == () and hasattr(value, "item"):  # a 0-d array
            return loop_number(value.item(), None)
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def module_labels(plan: Plan) -> dict[str, str]:
    """Each module's ``name@version`` (or ``name``) by bundle digest (the first
    declaration of a bundle declared twice)."""
    labels: dict[str, str] = {}
    for ref in plan.modules.values():
        labels.setdefault(
            ref.digest, ref.name if ref.version is None else f"{ref.name}@{ref.version}"
        )
    return labels


class DriverBase(ABC):
    """Feeds events to one engine and carries out its instructions.

    Parameters
    ----------
    engine
        The engine this driver drives (each driver makes it with the options its world
        needs, e.g. ``Engine(fixed_nodes=True)`` for the simulator).
    store
        Where globals, results, logs and metrics are kept.
    validate
        Check every engine invariant after each event (tests and ``shoal.testing``;
        it costs a pass over the engine's state per event).

    Notes
    -----
    Subclasses implement :meth:`now`, :meth:`_world_event` and the instruction hooks
    ``_on_run``, ``_on_cancel`` and ``_on_wake``; ``_on_iteration``,
    ``_on_finished``, ``_persist``, ``_before`` and ``_after`` are optional. A hook
    never decides anything: every scheduling decision is the engine's.
    """

    def __init__(self, engine: Engine, store: Store, validate: bool = False) -> None:
        self.engine = engine
        self.store = store
        self.validate = validate
        self._upstream: dict[tuple[str, str], frozenset[str]] = {}
        self._aliases: dict[str, tuple[str, ...]] = {}  # every task of a swarm
        self._hooks: dict[type[Any], Callable[[Any], None]] = {
            RunInstance: self._on_run,
            CancelInstance: self._on_cancel,
            IterationStarted: self._on_iteration,
            SwarmFinished: self._on_finished,
            WakeAt: self._on_wake,
            InvokeFinished: self._on_invoke_finished,
        }
        # Answers to world.invoke calls, by call id, until the caller collects them.
        self.invoke_answers: dict[str, InvokeFinished] = {}
        # (swarm, alias) -> the until condition its successes report on (None: none).
        self._until: dict[tuple[str, str], LoopUntil | None] = {}
        # Each swarm's default task timeout (what the engine was given at submission).
        self._task_timeouts: dict[str, float | None] = {}

    #: The longest pause (seconds) between two polls of a caller waiting on its call.
    invoke_retry_s = 0.05

    # ----------------------------------------------------------------- the loop
    @abstractmethod
    def now(self) -> float:
        """The time events carry (each driver has its own clock)."""

    def feed(self, *events: Event) -> list[Instruction]:
        """Persist ``events`` (together: one write), hand each to the engine in order
        and carry out their instructions.

        Raises
        ------
        EngineError
            If the engine rejects an event (it stays persisted: a replay rejects it the
            same way, so event ids keep matching log positions). The events after it
            are still handled, as a replay handles them; the first rejection is raised.
        """
        self._persist(*events)
        out: list[Instruction] = []
        rejected: EngineError | None = None
        for event in events:
            try:
                out += self.replay(event)
            except EngineError as e:
                rejected = rejected or e
        if rejected is not None:
            raise rejected
        return out

    def replay(self, event: Event) -> list[Instruction]:
        """Like :meth:`feed` without persisting (the coordinator's restart)."""
        self._before(event)
        out = self.engine.handle(event)
        if self.validate:
            self.engine.validate()
        hooks = self._hooks
        for ins in out:
            hooks[type(ins)](ins)
        self._after(event, out)
        return out

    def _persist(self, *events: Event) -> None:  # noqa: B027 (an optional hook)
        """Record ``events`` before the engine sees them (default: not at all)."""

    def _before(self, event: Event) -> None:  # noqa: B027 (an optional hook)
        """Look at the engine before it handles ``event`` (default: nothing)."""

    def _after(self, event: Event, instructions: list[Instruction]) -> None:  # noqa: B027 (an optional hook)
        """After ``event``'s instructions were carried out (default: nothing)."""

    # ------------------------------------------------------------- instructions
    @abstractmethod
    def _on_run(self, ins: RunInstance) -> None:
        """Start an instance on its node (or queue it for a worker)."""

    @abstractmethod
    def _on_cancel(self, ins: CancelInstance) -> None:
        """Stop an instance; no outcome is expected from it afterwards."""

    @abstractmethod
    def _on_wake(self, ins: WakeAt) -> None:
        """Feed a ``TimerFired`` once the clock reaches ``ins.at``."""

    def _on_iteration(self, ins: IterationStarted) -> None:  # noqa: B027 (an optional hook)
        """An iteration started (default: nothing)."""

    def _on_finished(self, ins: SwarmFinished) -> None:  # noqa: B027 (an optional hook)
        """A swarm ended (default: nothing)."""

    def _on_invoke_finished(self, ins: InvokeFinished) -> None:
        """A ``world.invoke`` call ended: keep the answer for its caller to collect."""
        self.invoke_answers[ins.call_id] = ins

    def succeeded(self, instance_id: str, now: float) -> InstanceSucceeded:
        """The ``InstanceSucceeded`` event of an instance.

        For an exit task of an inner loop with an ``until`` condition it carries the
        number the condition names, read from the instance's stored result
        (``loop_value``; None when missing or not a number): the engine decides on it.
        """
        view = self.engine.find_instance(instance_id)
        if view is None:
            return InstanceSucceeded(instance_id, now)
        key = (view.swarm_id, view.alias)
        if key not in self._until:
            plan = self.engine.plan(view.swarm_id)
            loop = plan.task(view.alias).loop
            until = None if loop is None else plan.loops[loop].until
            exits = () if loop is None else plan.loop_exits(loop)
            self._until[key] = until if view.alias in exits else None
        until = self._until[key]
        if until is None:
            return InstanceSucceeded(instance_id, now)
        rows = self.store.results_of_instances([instance_id], until.tag)
        value = None
        if rows:
            try:
                value = loop_number(self._result_value(rows[-1].value), until.key)
            except Exception:
                value = None
        return InstanceSucceeded(instance_id, now, value)

    def _result_value(self, wire: Wire) -> Any:
        """Decode a stored result (a driver whose results live elsewhere overrides it)."""
        return from_wire(wire)

    # ----------------------------------------------------------------- swarms
    def submit_swarm(
        self, swarm_id: str, plan: Plan, seed: int, task_timeout_s: float | None = None
    ) -> None:
        """Write the plan's initial globals (iteration -1), then hand the swarm to the
        engine; ``task_timeout_s`` is the timeout of its tasks declared without one
        (None: the engine's default)."""
        for key in plan.globals:
            data, plain = plan.global_parts(key)
            # A plain JSON global (plan version 3) is stored as the codec encodes it, so a
            # task reads the same value whichever way the plan held it.
            blob = data if data is not None else encode(plain)
            self.store.global_set(swarm_id, key, {"inline": blob}, iteration=-1)
        self._task_timeouts[swarm_id] = task_timeout_s
        self.feed(SwarmSubmitted(swarm_id, plan, self.now(), seed, task_timeout_s))

    def module_labels(self, swarm_id: str) -> dict[str, str]:
        """How a failure's traceback names each module of a swarm, by bundle digest:
        ``name@version`` (or ``name``). Task processes write paths in a module's code as
        ``<digest>/<path in the bundle>`` (``shoal._runtime.loader.in_bundle_terms``)."""
        return module_labels(self.engine.plan(swarm_id))

    def instance_info(self, inst: RunInstance | InstanceView) -> InstanceInfo:
        """What the world service needs to know of an instance the engine placed: who
        it is, its inputs and the tasks it is downstream of (whose results it may read).

        The caller holds whatever guards the engine (the coordinator's lock)."""
        key = (inst.swarm_id, inst.alias)
        upstream = self._upstream.get(key)
        if upstream is None:
            upstream = upstream_of(self.engine.plan(inst.swarm_id), inst.alias)
            self._upstream[key] = upstream
        aliases = self._aliases.get(inst.swarm_id)
        if aliases is None:
            aliases = tuple(t.alias for t in self.engine.plan(inst.swarm_id).tasks)
            self._aliases[inst.swarm_id] = aliases
        return InstanceInfo(
            inst.swarm_id,
            inst.instance_id,
            inst.node_id,
            inst.alias,
            inst.iteration,
            inst.inputs,
            upstream,
            aliases,
            inst.invoke,
        )

    def story(self, instance_id: str) -> list[str]:
        """What happened to an instance, one line per transition or decision.

        Raises
        ------
        EngineError
            ``engine.unknown_instance`` for an id this driver's engine never scheduled.
        """
        return self.engine.story(instance_id)

    def counts(self, swarm_id: str, iteration: int | None = None) -> dict[str, TaskCounts]:
        """Instance counts per task of one iteration (default: the current one)."""
        return self.engine.counts(swarm_id, iteration)

    # ------------------------------------------------------- world operations
    @abstractmethod
    def _world_event(self, event: StopSwarmCalled | NextIterScheduled | InvokeCalled) -> None:
        """Deliver an event a task caused through the world API."""

    def world_stop(self, info: InstanceInfo) -> None:
        """``world.stop_swarm()`` was called by an instance."""
        self._world_event(StopSwarmCalled(info.instance_id, self.now()))

    def world_next_iter(self, info: InstanceInfo, alias: str, node_ids: tuple[str, ...]) -> None:
        """``world.schedule_next_iter(node_ids, alias)`` was called by an instance.

        Raises
        ------
        ShoalError
            ``world.alias`` if the swarm has no task ``alias`` (the task sees it at
            once, instead of the engine ignoring the call later).
        """
        aliases = [t.alias for t in self.engine.plan(info.swarm_id).tasks]
        if alias not in aliases:
            raise ShoalError(
                f"schedule_next_iter names task {alias!r}, which is not in the swarm",
                code="world.alias",
                hint=f"use one of {sorted(aliases)}",
            )
        self._world_event(NextIterScheduled(info.instance_id, self.now(), alias, node_ids))

    # ------------------------------------------------------------ world.invoke
    def invoke_call(
        self,
        info: InstanceInfo,
        call_id: str,
        alias: str,
        nodes: tuple[str, ...] | None,
        min_results: int | None,
        timeout: float | None,
    ) -> float:
        """``world.invoke`` was called: hand the engine ``InvokeCalled``; return how long
        the caller may wait (the engine's call timeout, with room for the answer to
        travel: the engine always ends a call by its deadline)."""
        if call_id not in self.invoke_answers:  # a repeated request starts nothing new
            event = InvokeCalled(
                info.instance_id, self.now(), call_id, alias, nodes, min_results, timeout
            )
            self._world_event(event)
        limit = timeout
        if limit is None:
            plan = self.engine.plan(info.swarm_id)
            spec = next((t for t in plan.tasks if t.alias == alias), None)
            own = None if spec is None else spec.timeout_s
            if own is None:
                own = check_task_timeout(self._task_timeouts.get(info.swarm_id))
            retries = 0 if spec is None else spec.retries
            limit = own * (retries + 1) + plan.limits.placement_timeout_s
        return limit * 1.5 + 60.0

    def invoke_wait(self, info: InstanceInfo, call_id: str) -> dict[str, Any] | None:
        """The end of call ``call_id`` as the world service hands it to its caller, or
        None while it is open."""
        ans = self.invoke_answers.get(call_id)
        if ans is None:
            return None
        return {
            "status": ans.status,
            "reason": ans.reason,
            "results": dict(ans.results),
            "failures": [
                {
                    "node_id": f.node_id,
                    "instance_id": f.instance_id,
                    "attempt": f.attempt,
                    "kind": f.kind.value,
                    "error": f.error,
                }
                for f in ans.failures
            ],
        }
