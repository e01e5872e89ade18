"""The scheduling engine: a pure state machine from events to instructions.

No I/O, no wall clock (time comes from each event's ``now``), no global randomness
(placement draws from :func:`~shoal._engine.placement.seeded_rng`). Replaying one event
log into a fresh engine gives the same instructions, which is how a coordinator
rebuilds its state after a restart. The rules are written down in docs/engine.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice

from shoal._engine import invariants
from shoal._engine.calls import CallsMixin
from shoal._engine.errors import EngineError
from shoal._engine.loops import LoopsMixin
from shoal._engine.messages import (
    Event,
    FailureKind,
    InstanceFailed,
    InstanceStarted,
    InstanceSucceeded,
    Instruction,
    InvokeCalled,
    NextIterScheduled,
    NodeJoined,
    NodeLost,
    NodeRestarted,
    StopRequested,
    StopSwarmCalled,
    SwarmSubmitted,
    TimerFired,
)
from shoal._engine.placement import explain
from shoal._engine.state import (
    TERMINAL,
    Instance,
    Move,
    Node,
    RunPhase,
    SlotOutcome,
    SwarmState,
    SwarmStatus,
)
from shoal._engine.timers import DEFAULT_TASK_TIMEOUT_S, check_task_timeout
from shoal._engine.views import (
    InstanceView,
    NodeView,
    SwarmView,
    TaskCounts,
    format_story,
    instance_view,
    node_view,
    swarm_view,
    task_counts,
)
from shoal._plan import Plan

_RUNNING = SwarmStatus.RUNNING
_EVENT_TYPES = (
    NodeJoined,
    NodeLost,
    NodeRestarted,
    SwarmSubmitted,
    InstanceStarted,
    InstanceSucceeded,
    InstanceFailed,
    StopSwarmCalled,
    NextIterScheduled,
    StopRequested,
    TimerFired,
    InvokeCalled,
)


class Engine(CallsMixin, LoopsMixin):
    """Owns every scheduling decision of every swarm a driver hosts.

    Feed it events with :meth:`handle`; carry out the instructions it returns. Each
    handled event gets the next integer id (1, 2, ...), also when it is rejected, so
    ids match positions in the driver's event log; every instruction's ``cause`` is
    the id of the event that produced it.

    Examples
    --------
    >>> engine = Engine()
    >>> engine.handle(NodeJoined("n1", now=0.0))
    []
    """

    # ------------------------------------------------------------------ public surface

    def handle(self, event: Event) -> list[Instruction]:
        """Apply one event and return the instructions it causes, in order.

        Raises
        ------
        EngineError
            If the event is impossible in the current state (an unknown instance, a
            report that contradicts an earlier one, ...). The message carries the
            instance's story.
        """
        self._event_id += 1
        if not isinstance(event, _EVENT_TYPES):
            raise EngineError(f"unknown event {event!r}", code="engine.unknown_event")
        self._now = event.now
        self._event_name = type(event).__name__
        self._out = []
        self._dispatch(event)
        self._wake()
        out, self._out = self._out, []
        return out

    def handle_many(self, events: Iterable[Event]) -> list[Instruction]:
        """Apply events in order; return all their instructions concatenated."""
        out: list[Instruction] = []
        for event in events:
            out.extend(self.handle(event))
        return out

    def story(self, instance_id: str) -> list[str]:
        """What happened to an instance: one line per transition or decision.

        Each line reads ``t=<now> #<cause id> <event type>: <detail>``.
        """
        return format_story(self._instance(instance_id))

    def swarm(self, swarm_id: str) -> SwarmView:
        """A read-only snapshot of a swarm (status, iteration, plan, failures)."""
        swarm = self._swarms.get(swarm_id)
        if swarm is None:
            raise EngineError(f"unknown swarm {swarm_id!r}", code="engine.unknown_swarm")
        return swarm_view(swarm)

    def waiting(self, swarm_id: str) -> dict[str, str]:
        """Tasks of the swarm's current iteration that wait for an eligible node, each
        with why every node is excluded (what ``shoal status`` shows while it waits)."""
        swarm = self._swarms.get(swarm_id)
        if swarm is None:
            raise EngineError(f"unknown swarm {swarm_id!r}", code="engine.unknown_swarm")
        return {
            alias: explain(self._requirements(run), self._nodes)
            for (_, alias), run in sorted(swarm.waiting.items())
        }

    def swarm_ids(self) -> list[str]:
        """Every swarm submitted to this engine, in submission order."""
        return list(self._swarms)

    def plan(self, swarm_id: str) -> Plan:
        """The plan a swarm was submitted with."""
        swarm = self._swarms.get(swarm_id)
        if swarm is None:
            raise EngineError(f"unknown swarm {swarm_id!r}", code="engine.unknown_swarm")
        return swarm.plan

    def instance(self, instance_id: str) -> InstanceView:
        """A read-only snapshot of an instance."""
        return instance_view(self._instance(instance_id))

    def find_instance(self, instance_id: str) -> InstanceView | None:
        """Like :meth:`instance`, but None for an id this engine never scheduled."""
        inst = self._instances.get(instance_id)
        return None if inst is None else instance_view(inst)

    def active(
        self, node_id: str | None = None, swarm_id: str | None = None, limit: int | None = None
    ) -> list[InstanceView]:
        """The live (scheduled or running) instances, of one node or of all; of one
        swarm, in scheduling order (oldest first), at most ``limit`` of them."""
        if swarm_id is not None:
            swarm = self._swarms.get(swarm_id)
            if swarm is None:
                return []
            return [instance_view(i) for i in islice(swarm.active.values(), limit)]
        if node_id is not None:
            node = self._nodes.get(node_id)
            return [] if node is None else [instance_view(i) for i in node.active.values()]
        return [instance_view(i) for n in self._nodes.values() for i in n.active.values()]

    def counts(self, swarm_id: str, iteration: int | None = None) -> dict[str, TaskCounts]:
        """Instance counts per task alias in one iteration (default: the current one).

        Every task of the plan has an entry; a task not yet placed counts zeros.
        """
        swarm = self._swarms.get(swarm_id)
        if swarm is None:
            raise EngineError(f"unknown swarm {swarm_id!r}", code="engine.unknown_swarm")
        it = swarm.iteration if iteration is None else iteration
        out = {}
        for alias in swarm.tasks:
            run = swarm.runs.get((it, alias))
            out[alias] = TaskCounts() if run is None else task_counts(run)
        return out

    def node(self, node_id: str) -> NodeView | None:
        """A node as the engine knows it; None if it never joined."""
        node = self._nodes.get(node_id)
        return None if node is None else node_view(node)

    def nodes(self) -> list[NodeView]:
        """Every node that ever joined, in joining order."""
        return [node_view(n) for n in self._nodes.values()]

    def validate(self) -> None:
        """Check every invariant of the engine's state.

        Costs a pass over all state; tests call it after every event.

        Raises
        ------
        EngineError
            With code ``engine.invariant``, naming the broken invariant.
        """
        invariants.check(
            self._nodes, self._swarms, self._instances, self._waiting, self._timers.entries()
        )
        earliest = self._timers.earliest(self._live)
        if earliest is not None and earliest != self._last_wake:
            raise EngineError(
                f"earliest deadline {earliest} was not announced (last WakeAt {self._last_wake})",
                code="engine.invariant",
            )

    # ------------------------------------------------------------------------ events

    def _dispatch(self, event: Event) -> None:
        match event:
            case InstanceStarted():
                self._on_started(event)
            case InstanceSucceeded():
                self._on_succeeded(event)
            case InstanceFailed():
                self._on_failed(event)
            case NodeJoined():
                self._on_node_joined(event)
            case NodeLost():
                self._on_node_lost(event)
            case NodeRestarted():
                self._on_node_restarted(event)
            case SwarmSubmitted():
                self._on_submitted(event)
            case StopSwarmCalled():
                self._on_stop_swarm(event)
            case NextIterScheduled():
                self._on_next_iter(event)
            case StopRequested():
                self._on_stop_requested(event)
            case TimerFired():
                self._on_timer(event)
            case InvokeCalled():
                self._on_invoke(event)

    def _on_started(self, e: InstanceStarted) -> None:
        inst = self._report(e.instance_id, Move.STARTED)
        if inst is None:
            return
        self._move(inst, Move.STARTED, "started")
        if self._timeout_at_start:
            inst.deadline = self._now + self._timeout_of(inst.run)
            self._timers.push(inst.deadline, inst)

    def _on_succeeded(self, e: InstanceSucceeded) -> None:
        inst = self._report(e.instance_id, Move.SUCCEEDED)
        if inst is None:
            return
        self._move(inst, Move.SUCCEEDED, "succeeded")
        self._detach(inst)
        run = inst.run
        inst.slot.outcome = SlotOutcome.SUCCEEDED
        run.open -= 1
        run.succeeded_ids.append(inst.instance_id)
        self._loop_value(inst, e.loop_value)
        self._advance(run, inst.slot)
        self._check_run(run)

    def _on_failed(self, e: InstanceFailed) -> None:
        inst = self._report(e.instance_id, Move.FAILED)
        if inst is not None:
            self._fail(inst, Move.FAILED, e.kind, e.error, e.traceback, by_engine=False)

    def _on_stop_swarm(self, e: StopSwarmCalled) -> None:
        inst = self._report(e.instance_id, Move.STOP_SWARM)
        if inst is None:
            return
        self._move(inst, Move.STOP_SWARM, "called world.stop_swarm()")
        swarm = inst.run.swarm
        if swarm.stop_by is None:  # the first call names the swarm's end
            swarm.stop_by = (
                f"stopped by task {inst.run.alias} on node {inst.node_id} "
                f"in iteration {inst.run.iteration}"
            )

    def _on_next_iter(self, e: NextIterScheduled) -> None:
        inst = self._report(e.instance_id, Move.NEXT_ITER)
        if inst is None:
            return
        swarm = inst.run.swarm
        target = inst.run.iteration + 1
        run = swarm.runs.get((target, e.alias))
        call = f"schedule_next_iter({len(e.node_ids)} node(s), alias={e.alias!r})"
        if e.alias not in swarm.tasks:
            detail = f"{call} ignored: the plan has no task {e.alias!r}"
        elif run is not None and run.phase is not RunPhase.PENDING:
            detail = f"{call} ignored: iteration {target} of {e.alias!r} is already placed"
        else:
            # The last call for one (iteration, alias) wins.
            swarm.narrow[(target, e.alias)] = frozenset(e.node_ids)
            detail = f"{call} narrows iteration {target}"
        self._move(inst, Move.NEXT_ITER, detail)

    def _on_node_joined(self, e: NodeJoined) -> None:
        node = self._nodes.get(e.node_id)
        if node is None:
            node = Node(e.node_id, e.datasets, e.gpu, e.images, e.capacity)
            self._nodes[e.node_id] = node
        else:
            node.connected = True
            node.datasets, node.gpu, node.images = e.datasets, e.gpu, e.images
            node.capacity = e.capacity
        # Only this node changed, so a waiting task is worth re-placing only if this
        # node admits it; that keeps a join O(waiting tasks), not O(nodes).
        for run in list(self._waiting.values()):
            live = run.phase is RunPhase.WAITING and run.swarm.status is _RUNNING
            if live and self._requirements(run).admits(node):
                self._place(run, None)
            elif live and self._image_refused(run):
                self._finish(run.swarm, SwarmStatus.FAILED, self._placement_failure(run))

    def _known_node(self, event: NodeLost | NodeRestarted) -> Node:
        node = self._nodes.get(event.node_id)
        if node is None:
            raise EngineError(
                f"{type(event).__name__} names unknown node {event.node_id!r}",
                code="engine.unknown_node",
            )
        return node

    def _on_node_lost(self, e: NodeLost) -> None:
        node = self._known_node(e)
        if not node.connected:
            return  # lost twice (left, then its heartbeat timed out): nothing new
        node.connected = False
        self._lose_instances(node, e.reason)

    def _on_node_restarted(self, e: NodeRestarted) -> None:
        node = self._known_node(e)
        if node.connected:  # a disconnected node has lost its instances already
            self._lose_instances(node, e.reason)

    def _lose_instances(self, node: Node, reason: str) -> None:
        """Fail every live instance on ``node`` (kind LOST), then the retry rules."""
        for inst in list(node.active.values()):
            # A failure above may have ended the swarm and cancelled the rest.
            if inst.state not in TERMINAL:
                error = f"node {node.node_id} lost: {reason}"
                self._fail(inst, Move.LOST, FailureKind.LOST, error, "", by_engine=True)

    def _on_submitted(self, e: SwarmSubmitted) -> None:
        if e.swarm_id in self._swarms:
            raise EngineError(
                f"swarm {e.swarm_id!r} was already submitted", code="engine.duplicate_swarm"
            )
        try:
            task_timeout = check_task_timeout(e.task_timeout_s)
        except ValueError as why:
            raise EngineError(
                f"swarm {e.swarm_id!r}: {why}",
                code="engine.task_timeout",
                hint="give the default task timeout in seconds (> 0), or None for "
                f"the engine's default of {DEFAULT_TASK_TIMEOUT_S:g}s",
            ) from None
        swarm = SwarmState(e.swarm_id, e.plan, e.seed, task_timeout)
        self._swarms[e.swarm_id] = swarm
        cycle = swarm.cycle()
        if cycle:
            self._finish(swarm, SwarmStatus.FAILED, f"plan has a cycle through tasks {cycle}")
            return
        bad = swarm.resource_problem()
        if bad is not None:
            self._finish(swarm, SwarmStatus.FAILED, bad)
            return
        self._start_iteration(swarm)

    def _on_stop_requested(self, e: StopRequested) -> None:
        swarm = self._swarms.get(e.swarm_id)
        if swarm is None:
            raise EngineError(f"unknown swarm {e.swarm_id!r}", code="engine.unknown_swarm")
        if swarm.status is _RUNNING:  # stopping a finished swarm is a no-op
            self._finish(swarm, SwarmStatus.STOPPED, e.reason)

    def _on_timer(self, e: TimerFired) -> None:
        for at, target in self._timers.pop_due(e.now):
            if not self._live(at, target):
                continue
            if isinstance(target, Instance):
                error = self._timeout_error(target)
                self._fail(target, Move.TIMEOUT, FailureKind.TIMEOUT, error, "", by_engine=True)
            elif target.call is not None:
                self._call_timeout(target)
            else:
                reason = self._placement_failure(target)
                self._finish(target.swarm, SwarmStatus.FAILED, reason)
        if self._last_wake is not None and self._last_wake <= e.now:
            self._last_wake = None  # the driver's wake-up is spent
